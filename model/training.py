"""Training: data in, a versioned, calibrated model bundle with its model card out.

`train_bundle` loads data (`model.datasources`: a team's event log and outcomes, the simulator's
log through the same path, or the seed's generator), fits the network on the training rows with
early stopping on held-back training customers' later instants (`early_stopping_rows`: never on
the validation customers, who choose between candidates and must read them all alike), fits each
probability head's calibration on the validation period (it is exported inside the serving
signature), fits
the baselines on the same rows, chooses per churn head what serves it among the candidates (the
network, the baselines' gradient boosting, a blend: `model.candidates`, on the validation
customers), writes the bundle (trees compiled into the SavedModel) and, given an `Evaluator`,
evaluates it on the test customers (`jobs.evaluation.evaluate_held_out` reads out of time and out
of customer, and out of customer only). With the same seed it produces the same weights:
`keras.utils.set_random_seed` and `tf.config.experimental.enable_op_determinism`.

The cached default bundle (`jobs.training.ensure_default_bundle`) is trained here on a simulated
event log (no download), in a few minutes on two cores.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.registry import FEATURE_HASH, FEATURE_NAMES
from model.bundle import (
    CARD_FILE,
    TRAINING_CUSTOMERS_FILE,
    load_bundle,
    update_metrics,
    write_bundle,
)
from model.candidates import CANDIDATES
from model.datasources import (
    DEFAULT_CUSTOMERS,
    DEFAULT_DAYS,
    Arrays,
    DataParams,
    TrainingData,
    arrays_of,
    load_training_data,
    simulator_version,
    split_rows,
    synthetic_arrays,
)
from model.drift import record_training_distribution
from model.exceptions import DataError
from model.metrics import auc_roc

N_FEATURES = len(FEATURE_NAMES)
__all__ = ["DEFAULT_CUSTOMERS", "DEFAULT_DAYS", "Arrays", "DataParams", "TrainConfig", "synthetic_arrays"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    validation_split: float = 0.2  # rows without customers and time only (seed, synthetic)
    patience: int = 5  # early stopping on the churn heads' validation AUC (`ValidationAuc`); 0 = off
    # Regularisation, chosen on held-out simulated customers (see `fit_model`).
    weight_decay: float = 1.0
    ema: bool = True
    seed: int = 42
    # A second member trained on the training customers' every instant, averaged with the
    # earlier-instants member (see `fit_ensemble`); only for logs with time (not seed / synthetic rows).
    every_instant_member: bool = True
    # What may serve each churn head, chosen on the validation customers (model/candidates.py);
    # ("network",) is the network alone. Logs with customers only (seed / synthetic rows: the network).
    candidates: tuple[str, ...] = CANDIDATES


# The held-out evaluation `train_bundle` runs when given one: (bundle, data, seed) -> metrics.json's
# "evaluation" (jobs.evaluation.evaluate_held_out reads the alert rules too, so it lives above).
Evaluator = Callable[[Any, TrainingData, int], dict[str, Any]]


class _Stopwatch:
    """Seconds per training phase, for the progress messages and metrics.json."""

    def __init__(self) -> None:
        import time

        self._time = time.perf_counter
        self._last = self._time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> str:
        now = self._time()
        self.laps[name] = round(now - self._last, 1)
        self._last = now
        return f"{self.laps[name]:.0f} s"


def data_version() -> str:
    """A digest of the code that turns a log into examples and of the simulator: a bundle's
    recorded data goes stale when either changes."""
    digest = hashlib.sha256(simulator_version().encode())
    root = Path(__file__).resolve().parents[1]
    for module in (
        "model/examples.py",
        "model/owndata.py",
        "features/labels.py",
        "model/splits.py",
        "model/survivorship.py",
    ):
        file = root / module
        digest.update(file.read_bytes() if file.exists() else b"")
    return digest.hexdigest()[:8]


def _progress_callback(epochs: int) -> Any:
    import keras
    from tqdm import tqdm

    class Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            shown = {k: logs[k] for k in ("loss", "val_loss", "val_churn_auc") if k in logs}
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in shown.items()})
            self.bar.update(1)

        def on_train_end(self, logs: Any = None) -> None:
            self.bar.close()

    return Progress()


CHURN_HEADS = ("churn_risk_14d", "churn_risk_30d")


def churn_aucs(
    predictions: dict[str, Any], labels: dict[str, np.ndarray], rows: np.ndarray | None = None
) -> dict[str, float | None]:
    """AUC of each churn head's `predictions` over the `rows` (all by default) whose label is known
    (not censored); None where one class only."""
    out: dict[str, float | None] = {}
    for head in CHURN_HEADS:
        y = np.asarray(labels[head], dtype=np.float64).ravel()
        score = np.asarray(predictions[head]).ravel()
        known = ~np.isnan(y) if rows is None else rows & ~np.isnan(y)
        out[head] = auc_roc(y[known].astype(bool), score[known])
    return out


def _validation_auc_callback() -> Any:
    import keras

    class ValidationAuc(keras.callbacks.Callback):
        """`val_churn_auc` after each epoch: the mean of the 14- and 30-day churn heads' AUC on the
        validation rows with a known label. Early stopping watches it rather than the loss: the
        validation period's churn rate differs from training's, and calibration corrects the level
        afterwards, so the ranking is what training should be stopped on."""

        def __init__(self, validation: Arrays) -> None:
            super().__init__()
            self.x = validation.x.astype(np.float32)
            self.y = validation.y

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            out = self.model.predict(self.x, batch_size=8192, verbose=0)
            scores = [0.5 if value is None else value for value in churn_aucs(out, self.y).values()]
            if logs is not None:
                logs["val_churn_auc"] = float(np.mean(scores))

    return ValidationAuc


def ValidationAuc(validation: Arrays) -> Any:
    return _validation_auc_callback()(validation)


def fit_model(
    train: Arrays,
    config: TrainConfig,
    progress: bool = False,
    validation: Arrays | None = None,
    name: str = "marketplace_health",
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """(Keras model, the raw input means (the attribution baseline), training summary),
    deterministic for a given seed. Without `validation`, `config.validation_split` of the training
    rows (whole customers where known) is held out instead.

    Regularisation, measured on held-out simulated customers: with the seed's recipe alone (Adam
    1e-3, dropout) the churn heads overfit from the second epoch; decoupled weight decay 1.0 (each
    step shrinks weights by 0.1%) and an exponential moving average of the weights fix that, and
    early stopping watches the churn heads' validation AUC (`ValidationAuc`), restoring the best
    epoch. Class weights are not used: they would break the calibration the alert thresholds rely on.
    """
    import keras
    import tensorflow as tf

    from model.network import (
        build_model,
        compile_model,
        normalization_stats,
        start_at_label_means,
        targets_for_fit,
    )

    if len(train.x) < 10:
        raise DataError(f"only {len(train.x)} training rows: the log needs more customers or days")
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    fit_part, val_part = train, validation
    if val_part is None and config.validation_split > 0:
        fit_part, val_part = split_rows(train, config.validation_split, config.seed + 1)
    transformed_mean, variance = normalization_stats(fit_part.x)
    steps_per_epoch = -(-len(fit_part.x) // config.batch_size)
    network = build_model(N_FEATURES, transformed_mean, variance, name=name)
    start_at_label_means(network, fit_part.y)
    model = compile_model(
        network,
        config.learning_rate,
        weight_decay=config.weight_decay,
        ema_every_steps=steps_per_epoch if config.ema else None,
    )
    callbacks: list[Any] = []
    if val_part is not None and config.patience > 0:
        callbacks.append(ValidationAuc(val_part))
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_churn_auc",
                mode="max",
                patience=config.patience,
                restore_best_weights=True,
            )
        )
    if progress:
        callbacks.append(_progress_callback(config.epochs))
    history = model.fit(
        fit_part.x.astype(np.float32),
        targets_for_fit(fit_part.y),
        validation_data=None
        if val_part is None
        else (val_part.x.astype(np.float32), targets_for_fit(val_part.y)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    logs = {k: [round(float(v), 6) for v in values] for k, values in history.history.items()}
    monitored = logs.get("val_churn_auc")
    best_epoch = int(np.argmax(monitored)) + 1 if monitored else len(logs["loss"])
    summary = {
        "epochs_run": len(logs["loss"]),
        "best_epoch": best_epoch,
        "fit_rows": len(fit_part.x),
        "validation_rows": 0 if val_part is None else len(val_part.x),
        "history": logs,
    }
    baseline = fit_part.x.astype(np.float64).mean(axis=0).astype(np.float32)
    return model, baseline, summary


MEMBERS = ("earlier_instants", "every_instant")


def fit_ensemble(
    loaded: TrainingData,
    config: TrainConfig,
    progress: bool = False,
    say: Callable[[str], None] = lambda m: None,
) -> tuple[Any, np.ndarray, dict[str, Any], dict[str, Any]]:
    """(model, attribution baseline, training summary, members by name). On an event log, two
    members of the same network averaged (`model.network.average_members`):

    - `earlier_instants`: the training customers' instants before the time cut, the honest recipe
      whose out-of-time reading the evaluation reports;
    - `every_instant`: all of their instants. It has seen the whole calendar of the log (seasons,
      holidays, the newest behaviour), which the first cannot: a deployed model should learn from
      the latest labelled history, and a backtest of later customers covers the same calendar.

    Both early-stop on the later instants of a fifth of the training customers, held back from both
    fits (`early_stopping_rows`), never on the validation customers: those choose between the
    candidates and fit the calibration, and a network whose epoch was picked on them reads
    optimistically there (on a third-party log, validation AUC 0.94 for the network against 0.91
    for gradient boosting; on the later customers 0.85 against 0.90). Measured on later customers
    of two generators (`bench/bench_transfer.py` style, 4,000 customers x 120 days, three seeds,
    when both members stopped on the validation customers): every instant alone gains 3-4 AUC
    points on the second generator and loses 1.5-3 on the simulator; the average keeps the better
    of the two on each (numbers in `average_members`). Rows without time (seed, synthetic) train
    one member."""
    held = early_stopping_rows(loaded)
    if held is None:  # rows without time or customers, or too few: the validation rows, as before
        train, every, stop = loaded.train, loaded.train_every_instant, loaded.validation
    else:
        train, every, stop = held
    early, baseline, summary = fit_model(train, config, progress, stop, name=MEMBERS[0])
    summary["early_stopping"] = _stopping_summary(stop, held_back=held is not None)
    if not config.every_instant_member or every is None or loaded.validation is None:
        return early, baseline, summary, {MEMBERS[0]: early}
    say(
        f"earlier-instants member: {summary['epochs_run']} epochs, best {summary['best_epoch']}; "
        f"every-instant member on {len(every.x):,} rows ..."
    )
    full, baseline, full_summary = fit_model(every, config, progress, stop, name=MEMBERS[1])
    from model.network import average_members

    model = average_members([early, full])
    members = {
        name: {k: v for k, v in part.items() if k != "history"}
        for name, part in zip(MEMBERS, (summary, full_summary), strict=True)
    }
    combined = {
        "epochs_run": summary["epochs_run"] + full_summary["epochs_run"],
        "best_epoch": f"{summary['best_epoch']} / {full_summary['best_epoch']}",
        "fit_rows": full_summary["fit_rows"],
        "validation_rows": summary["validation_rows"],
        "early_stopping": summary["early_stopping"],
        "members": members,
        "history": {
            name: part["history"] for name, part in zip(MEMBERS, (summary, full_summary), strict=True)
        },
    }
    return model, baseline, combined, {MEMBERS[0]: early, MEMBERS[1]: full}


STOP_FRACTION = 0.2  # of the training customers, held back from the network's fit to stop it
STOP_SALT = "churn-stop-v1"


def early_stopping_rows(loaded: TrainingData) -> tuple[Arrays, Arrays | None, Arrays] | None:
    """(the earlier-instants rows, the every-instant rows, the early-stopping rows): the training
    customers hashed into STOP_FRACTION are left out of both fits, and their instants after the time
    cut stop them (out of customer and, for the earlier member, out of time). None where the rows
    know no customer or time, or the held-back rows lack a churner or a stayer at 30 days."""
    if loaded.examples is None or loaded.validation is None or loaded.train.groups is None:
        return None
    from model.splits import unit_hash

    def kept(arrays: Arrays) -> np.ndarray:
        assert arrays.groups is not None
        held = np.fromiter(
            (unit_hash(c, STOP_SALT) < STOP_FRACTION for c in arrays.groups.tolist()),
            dtype=bool,
            count=len(arrays.groups),
        )
        return ~held

    later = arrays_of(loaded.examples.where("train", after_cut=True))
    if not len(later.x):
        return None
    stop = later.take(np.flatnonzero(~kept(later)))
    labels = stop.y["churn_risk_30d"]
    known = labels[~np.isnan(labels)]
    if len(np.unique(known)) < 2:
        return None
    train = loaded.train.take(np.flatnonzero(kept(loaded.train)))
    every = loaded.train_every_instant
    return train, None if every is None else every.take(np.flatnonzero(kept(every))), stop


def _stopping_summary(stop: Arrays | None, held_back: bool) -> dict[str, Any]:
    if stop is None:
        return {"on": "a row split of the training rows"}
    customers = 0 if stop.groups is None else len(np.unique(stop.groups))
    if not held_back:
        return {"on": "the validation customers", "customers": customers, "rows": len(stop.x)}
    return {
        "on": f"the instants after the cut of {STOP_FRACTION:.0%} of the training customers, "
        "held back from the network's fit",
        "customers": customers,
        "rows": len(stop.x),
    }


def fit_calibration(
    model: Any, validation: Arrays | None, train: Arrays | None = None
) -> dict[str, dict[str, Any] | None]:
    """Platt scaling of each probability head on the validation rows (model/calibration.py). The
    first-session head, when the validation rows hold too few of its labels to fit one (no new
    customer among those held out), has shown no skill on customers it did not train on, so it is not
    trusted: a = 0, the training rows' base rate for everyone (`source` says so). A churn head whose
    fit fails keeps its own output (they train on most rows, with the BCE's calibration)."""
    from model.calibration import Platt, enough_labels, fit_platt, logit

    if validation is None or not len(validation.x):
        return {}
    raw = model.predict(validation.x.astype(np.float32), batch_size=4096, verbose=0)
    out: dict[str, dict[str, Any] | None] = {}
    for head in ("churn_risk_14d", "churn_risk_30d", "first_session_success"):
        held = np.asarray(validation.y[head], dtype=np.float64).ravel()
        platt = fit_platt(np.asarray(raw[head]).ravel(), held)
        if not platt.is_identity:
            out[head] = {**platt.as_dict(), "source": "validation"}
            continue
        if head != "first_session_success" or enough_labels(held):
            out[head] = None  # the churn heads' own BCE level, or a fit the data did not support
            continue
        labels = np.asarray(train.y[head], dtype=np.float64) if train is not None else np.zeros(0)
        known = labels[~np.isnan(labels)]
        if not len(known):
            out[head] = None
            continue
        base = Platt(0.0, float(logit(np.array([known.mean()]))[0]), 0)
        out[head] = {
            **base.as_dict(),
            "source": f"base rate {known.mean():.3f}: too few validation labels to trust the head",
        }
    return out


def model_version(model: Any, when: datetime, trees: dict[str, Any] | None = None) -> str:
    """ "2026-11-27-ab12cd": the training date and a digest of the weights (and of the trees and
    blend weight of churn heads they serve: another served model is another version)."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    for head, spec in sorted((trees or {}).items()):
        digest.update(f"{head}:{spec.network_weight}".encode())
        for value in spec.ensemble.as_arrays().values():
            digest.update(np.ascontiguousarray(value).tobytes())
    return f"{when:%Y-%m-%d}-{digest.hexdigest()[:6]}"


def _fit_baselines(
    loaded: TrainingData,
    config: TrainConfig,
    baselines: bool,
    two_members: bool,
    extra: dict[str, bytes],
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    """The baselines on the network's own rows (every instant when it has two members), kept in
    `extra` as baselines.pkl when wanted; the GBM alone when only the candidates need it. Returns
    the GBM per churn head (None: neither wanted)."""
    from model.baselines import NAMES, fit_baselines

    wants_gbm = bool({"gbm", "blend"} & set(config.candidates))
    if not baselines and not wants_gbm:
        return None
    assert loaded.validation is not None
    say(
        "fitting the baselines on the same rows ..."
        if baselines
        else "fitting gradient boosting per churn head ..."
    )
    every = loaded.train_every_instant
    rows = every if two_members and every is not None else loaded.train
    names = NAMES if baselines else ("gbm",)
    fitted = fit_baselines(rows.x, rows.y, loaded.validation.x, loaded.validation.y, config.seed, names)
    if baselines:
        extra["baselines.pkl"] = pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL)
    return {head: models["gbm"] for head, models in fitted.models.items() if "gbm" in models}


def _choose_candidates(
    model: Any,
    gbms: dict[str, Any] | None,
    loaded: TrainingData,
    config: TrainConfig,
    calibration: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata's `candidates` record, the trees the SavedModel serves). A head served by another
    candidate than the network takes that candidate's calibration (fitted on its served logit)."""
    from model.candidates import choose_heads
    from model.datasources import arrays_of

    assert loaded.validation is not None and loaded.examples is not None
    test = loaded.examples.where("test", after_cut=True)
    choices, trees = choose_heads(
        model,
        gbms or {},
        loaded.validation,
        arrays_of(test) if len(test) else None,
        config.candidates,
        config.seed,
    )
    for head, choice in choices.items():
        if choice.served != "network":
            platt = choice.platt
            calibration[head] = (
                None if platt.is_identity else {**platt.as_dict(), "source": f"validation, {choice.served}"}
            )
    record = {
        "names": list(config.candidates),
        "chosen_on": (
            "validation customers' instants after the time cut (AUC): the even blend unless the leader beats it "
            "beyond doubt (customer bootstrap); a tie within 0.0001 keeps the leader"
        ),
        "test_reading": "test customers' instants after the cut: recorded, never used to choose",
        "heads": {head: choice.record() for head, choice in choices.items()},
    }
    return _jsonable(record), trees


def library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def train_bundle(
    out_dir: Path,
    config: TrainConfig | None = None,
    data: DataParams | None = None,
    progress: bool = True,
    evaluate: Evaluator | None = None,
    log: Callable[[str], None] | None = None,
    baselines: bool = True,
    cache: Path | None = None,
) -> Path:
    """Train on `data` (default: the simulated log), write the bundle to `out_dir`, evaluate it on
    held-out customers. `baselines=False` skips the logistic and GBM baselines (a bundle without
    them evaluates without the comparison: `load_baselines` returns None). `cache`: the model cache
    a simulated log is kept in (`load_training_data`)."""
    config = config or TrainConfig()
    data = data or DataParams()
    say = log or (lambda message: print(message, file=sys.stderr) if progress else None)
    if data.source == "simulated":  # record the actual sizes, so evaluate finds the same log
        data = replace(data, customers=data.customers or DEFAULT_CUSTOMERS, days=data.days or DEFAULT_DAYS)
    clock = _Stopwatch()
    say(f"loading {data.source} data ...")
    loaded = load_training_data(data, progress, say, cache)
    validation = loaded.validation
    say(
        f"{len(loaded.train.x):,} training rows, {0 if validation is None else len(validation.x):,} validation rows "
        f"({clock.lap('examples')})"
    )
    model, baseline, summary, members = fit_ensemble(loaded, config, progress, say)
    calibration = fit_calibration(model, validation, loaded.train) if loaded.examples is not None else {}
    say(f"fitted in {summary['epochs_run']} epochs, best {summary['best_epoch']} ({clock.lap('fit')})")
    extra: dict[str, bytes] = {}
    trees: dict[str, Any] = {}
    candidates: dict[str, Any] | None = None
    if loaded.examples is not None and validation is not None:
        gbms = _fit_baselines(loaded, config, baselines, len(members) > 1, extra, say)
        if gbms is not None:
            say(f"baselines fitted ({clock.lap('baselines')})")
        candidates, trees = _choose_candidates(model, gbms, loaded, config, calibration)
        served = ", ".join(f"{head} {choice['served']}" for head, choice in candidates["heads"].items())
        say(f"candidates chosen on the validation customers: {served} ({clock.lap('candidates')})")
        trained = loaded.train if loaded.train_every_instant is None else loaded.train_every_instant
        seen = sorted(_customers(trained) | _customers(validation))
        extra[TRAINING_CUSTOMERS_FILE] = gzip.compress(("\n".join(seen) + "\n").encode(), mtime=0)
    now = datetime.now(UTC)
    metadata = {
        "model_version": model_version(model, now, trees),
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "feature_hash": FEATURE_HASH,
        "n_features": N_FEATURES,
        "serving_version": 1,
        "seed": config.seed,
        "training": {**asdict(config), **{k: v for k, v in summary.items() if k != "history"}},
        "data": {
            **_jsonable(asdict(data)),
            "train_rows": len(loaded.train.x),
            "validation_rows": 0 if validation is None else len(validation.x),
            "data_version": data_version() if loaded.examples is not None else None,
            "log": _jsonable(loaded.summary) if loaded.examples is not None else None,
        },
        "calibration": calibration,
        "candidates": candidates,
        "libraries": library_versions(),
    }
    metadata["card"] = card_facts(metadata, loaded)
    metrics: dict[str, Any] = {"history": summary["history"]}
    write_bundle(out_dir, model, baseline, metadata, metrics, extra, trees)
    bundle = load_bundle(out_dir)
    # What drift is measured against (model/drift.py): the rows it trained on, and its own scores on them.
    record_training_distribution(bundle, loaded.train.x)
    if evaluate:
        say("evaluating on held-out customers ...")
        metrics["evaluation"] = evaluate(bundle, loaded, config.seed)
        if len(members) > 1:
            metrics["evaluation"]["members"] = member_readings(members, loaded)
            reading = metrics["evaluation"].get("out_of_time_and_customer") or {}
            if "targets" in reading:
                reading["note"] = (
                    "out of customer; the every-instant member trained on other customers' instants of this period, "
                    "so members.earlier_instants is the strictly out-of-time reading"
                )
        say(f"evaluated ({clock.lap('evaluation')})")
    metrics["seconds"] = clock.laps
    update_metrics(bundle, metrics)
    write_card(bundle, metrics)
    say(f"model {metadata['model_version']} written to {out_dir}")
    return out_dir


def _customers(rows: Arrays) -> set[str]:
    """The customers of rows built from events (rows of the seed's or synthetic data have none)."""
    return set() if rows.groups is None else {str(customer) for customer in rows.groups.tolist()}


def member_readings(members: dict[str, Any], loaded: TrainingData) -> dict[str, Any]:
    """Each member's churn AUC (uncalibrated; AUC does not depend on calibration) on the test
    customers after the cut and over the whole log. The `earlier_instants` member's first reading is
    the one strictly out of time and out of customer: the every-instant member (and so the
    shipped average) trained on other customers' instants of the same period."""
    if loaded.examples is None:  # rows without customers or time: nothing to read apart
        return {name: {} for name in members}
    test = loaded.examples.where("test")
    out: dict[str, Any] = {}
    if not len(test):
        return {name: {} for name in members}
    for name, member in members.items():
        raw = member.predict(
            test.x.astype(np.float32), batch_size=8192, verbose=0
        )  # once; each reading is a subset
        readings: dict[str, Any] = {}
        for reading, rows in (("out_of_time_and_customer", test.after_cut), ("out_of_customer", None)):
            if rows is not None and not rows.any():
                continue
            for head, value in churn_aucs(raw, test.y, rows).items():
                readings[f"{reading}_auc_{head[-3:]}"] = value
        out[name] = readings
    return out


def card_facts(metadata: dict[str, Any], loaded: TrainingData) -> dict[str, Any]:
    """What the model card states about the data (model/card.py renders it with the metrics)."""
    from features import labels

    def rates(part: Arrays | None) -> dict[str, Any]:
        if part is None:
            return {}
        out: dict[str, Any] = {"rows": len(part.x)}
        for head in ("churn_risk_14d", "churn_risk_30d", "first_session_success"):
            known = ~np.isnan(np.asarray(part.y[head], dtype=np.float64))
            out[head] = {
                "labelled": int(known.sum()),
                "rate": round(float(np.asarray(part.y[head])[known].mean()), 4) if known.any() else None,
            }
        if part.groups is not None:
            out["customers"] = len(np.unique(part.groups))
        return out

    log = loaded.summary if loaded.examples is not None else {}
    return {
        "data_source": metadata["data"]["source"],
        "events": list(loaded.events),
        "outcomes": loaded.outcomes,
        "period": {"start": log.get("start"), "end": log.get("end")},
        "customers": log.get("customers"),
        "events_read": log.get("events"),
        "split": log.get("split"),
        "sampling_every_days": log.get("sampling_every_days"),
        "survivor_history": log.get("survivor_history"),
        "train": rates(loaded.train),
        "train_every_instant": rates(loaded.train_every_instant),
        "validation": rates(loaded.validation),
        "labels": (labels.__doc__ or "").strip(),
        "feature_hash": FEATURE_HASH,
    }


def write_card(bundle: Any, metrics: dict[str, Any]) -> None:
    from model.card import model_card

    (bundle.path / CARD_FILE).write_text(model_card(bundle.metadata, metrics), encoding="utf-8")


def default_training() -> tuple[TrainConfig, DataParams]:
    """What the cached default bundle is trained with: the defaults, on a simulated event log."""
    return TrainConfig(), DataParams(customers=DEFAULT_CUSTOMERS, days=DEFAULT_DAYS)


def quiet_tensorflow() -> None:
    """Before TensorFlow is imported: no C++ start-up chatter. oneDNN's fused kernels are off too;
    they print a notice on import and reorder float sums, and the model is too small to gain."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def train_tiny_bundle(out_dir: Path, rows: int = 300, seed: int = 7) -> Path:
    """A bundle in seconds, for tests: synthetic rows, one epoch, no evaluation."""
    config = replace(TrainConfig(), epochs=1, seed=seed, patience=0)
    data = DataParams(source="synthetic", customers=rows, seed=seed)
    return train_bundle(out_dir, config, data, progress=False, evaluate=None)
