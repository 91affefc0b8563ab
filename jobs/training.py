"""The training job: fit a bundle (`model.training`), evaluate it on its held-out customers with
the alert rules included (`jobs.evaluation`), and keep the cached default bundle current.

`ensure_default_bundle()` is what `make run` / `churn-worker local`, a backtest without `--bundle`
and `churn-model serve` without `--bundle` call: the cached default bundle, trained on first use
(a few minutes) and again whenever the feature registry, the training defaults, the simulator or
the example builder change.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from jobs.evaluation import evaluate_held_out
from model.bundle import cache_dir, default_bundle_dir, is_bundle, load_bundle
from model.datasources import DataParams
from model.exceptions import UsageError
from model.training import (
    TrainConfig,
    _jsonable,
    data_version,
    default_training,
    quiet_tensorflow,
    train_bundle,
)
from worker.settings import ModelSettings


def model_cache() -> Path:
    """The model cache: `CHURN_MODEL_CACHE`, else ~/.cache/churn-alerts."""
    return cache_dir(ModelSettings().model_cache)


def train(
    out_dir: Path,
    config: TrainConfig | None = None,
    data: DataParams | None = None,
    progress: bool = True,
    evaluate: bool = True,
    baselines: bool = True,
) -> Path:
    """`model.training.train_bundle`, then the held-out report (targets, heads, baselines, alert
    rules) in metrics.json and the model card, unless `evaluate` is False."""
    return train_bundle(
        out_dir,
        config,
        data,
        progress=progress,
        evaluate=evaluate_held_out if evaluate else None,
        baselines=baselines,
        cache=model_cache(),
    )


def _stale_reason(out_dir: Path) -> str | None:
    """Why the cached default bundle cannot be used as it is, or None if it can."""
    if not is_bundle(out_dir):
        return "no default model bundle yet"
    try:
        bundle = load_bundle(out_dir)
    except UsageError as exc:  # a feature registry change: retrain rather than serve a wrong model
        return str(exc)
    config, data = default_training()
    recorded = bundle.metadata.get("training", {}), bundle.metadata.get("data", {})
    wanted = _jsonable(asdict(config)), _jsonable(asdict(data))
    where = ("workers", "scheduler")  # where the examples were built changes nothing in them
    if any(recorded[0].get(k) != v for k, v in wanted[0].items()) or any(
        recorded[1].get(k) != v for k, v in wanted[1].items() if k not in where
    ):
        return "the default model bundle was trained with older defaults"
    if recorded[1].get("data_version") != data_version():
        return "the simulator or the example builder changed since the default model bundle was trained"
    return None


def ensure_default_bundle(progress: bool = True) -> Path:
    """The cached default bundle's directory, training it first if it is missing or stale (a
    different feature registry or training defaults). Concurrent callers wait for one training."""
    import fcntl

    quiet_tensorflow()
    out_dir = default_bundle_dir(model_cache())
    if _stale_reason(out_dir) is None:
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        reason = _stale_reason(out_dir)  # another process may have trained it meanwhile
        if reason is None:
            return out_dir
        if progress:
            print(f"{reason}: training one in {out_dir} (a few minutes, once)", file=sys.stderr)
        config, data = default_training()
        return train(out_dir, config, data, progress=progress)
