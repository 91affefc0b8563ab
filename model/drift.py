"""The training distribution a bundle keeps, and the population stability index (PSI) against it.

`training_distribution.json` (written by `model.training.train_bundle`) holds, per feature and per
scalar head, the bin edges of the training rows' deciles and the training share in each bin. Edges
are the distinct decile values, so a feature that is 0 for most rows gets fewer, wider bins
instead of empty ones (PSI on empty bins measures the epsilon, not the data). A value `v` falls in
bin `searchsorted(edges, v, side="left")`: bin i is (edges[i-1], edges[i]].

PSI = sum over bins of (served - training) * ln(served / training), shares floored at 1e-4. The
usual reading: < 0.1 stable, 0.1-0.25 a shift worth a look, > 0.25 a population the model was not
trained on. Bundles trained before this file existed have none: `load_distribution` returns None
and the callers say so and skip drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.registry import FEATURE_HASH, FEATURE_NAMES

DISTRIBUTION_FILE = "training_distribution.json"
BINS = 10
EPSILON = 1e-4
MAX_ROWS = 20_000  # a sample of the training rows is plenty for deciles
# The heads whose score distribution is kept (the served log's `outputs`).
HEADS = (
    "churn_risk_14d",
    "churn_risk_30d",
    "first_session_success_prob",
    "predicted_session_velocity",
    "customer_health_score",
)


def bin_edges(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))


def shares(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """The share of `values` in each of the len(edges) + 1 bins."""
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _column(values: np.ndarray) -> dict[str, Any]:
    edges = bin_edges(values)
    return {"edges": edges.tolist(), "shares": shares(values, edges).tolist()}


def training_distribution(
    x: np.ndarray, outputs: Mapping[str, np.ndarray], model_version: str | None = None
) -> dict[str, Any]:
    """Deciles of every feature column of `x` (registry order) and of every head in `outputs`."""
    return {
        "feature_hash": FEATURE_HASH,
        "model_version": model_version,
        "rows": len(x),
        "features": {name: _column(np.asarray(x[:, i], np.float64)) for i, name in enumerate(FEATURE_NAMES)},
        "heads": {
            name: _column(np.asarray(outputs[name], np.float64).reshape(-1))
            for name in HEADS
            if name in outputs
        },
    }


def write_distribution(bundle_dir: Path, distribution: Mapping[str, Any]) -> Path:
    path = Path(bundle_dir) / DISTRIBUTION_FILE
    path.write_text(json.dumps(distribution, separators=(",", ":")) + "\n")
    return path


def load_distribution(bundle_dir: Path) -> dict[str, Any] | None:
    """The bundle's training distribution, or None (a bundle trained before it was recorded)."""
    path = Path(bundle_dir) / DISTRIBUTION_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def column_psi(reference: Mapping[str, Any], values: np.ndarray) -> float:
    """PSI of `values` against one column of a training distribution."""
    return psi(reference["shares"], shares(np.asarray(values, np.float64), reference["edges"]))


def sample_rows(x: np.ndarray, seed: int = 0, limit: int = MAX_ROWS) -> np.ndarray:
    if len(x) <= limit:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))]


def head_outputs(bundle: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """The served heads of `bundle` on rows `x`, as the endpoint answers them (its output handler)."""
    from model.server import LocalPredictor

    predictor = LocalPredictor(bundle)
    raw = predictor.predict_array(np.asarray(x, np.float32))
    keys = list(raw)
    rows = [
        predictor.handlers.prediction(dict(zip(keys, values, strict=True)))
        for values in zip(*(raw[k].tolist() for k in keys), strict=True)
    ]
    return {
        head: np.asarray([row[head] for row in rows], np.float64)
        for head in HEADS
        if rows and head in rows[0]
    }


def record_training_distribution(bundle: Any, x: np.ndarray) -> Path:
    """Write the bundle's `training_distribution.json` from (a sample of) its training rows."""
    rows = sample_rows(np.asarray(x))
    return write_distribution(
        bundle.path, training_distribution(rows, head_outputs(bundle, rows), bundle.model_version)
    )
