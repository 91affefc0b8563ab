"""Running the exported serving signature (what the endpoint runs, calibration included) over rows
of features: predictions in batches, and single-instance latency. The metrics on those predictions
are `model.metrics`; the reports that also read the alert rules are `jobs.evaluation`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from model.exceptions import DataError

if TYPE_CHECKING:
    from model.bundle import ServingFn

LATENCY_CALLS = 200
# Serving outputs -> the names the alert rules and the scoring log use.
PREDICTION_NAMES = {
    "churn_risk_14d": "churn_risk_14d",
    "churn_risk_30d": "churn_risk_30d",
    "health_score": "customer_health_score",
    "first_session_success": "first_session_success_prob",
    "session_velocity": "predicted_session_velocity",
}


def predict(serving_fn: ServingFn, x: np.ndarray, batch: int = 4096) -> dict[str, np.ndarray]:
    import tensorflow as tf

    if not len(x):
        raise DataError("nothing to predict: no rows")
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(x), batch):
        out = serving_fn(features=tf.constant(x[start : start + batch], dtype=tf.float32))
        parts.append({key: value.numpy() for key, value in out.items()})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def latency_ms(serving_fn: ServingFn, x: np.ndarray, calls: int = LATENCY_CALLS) -> dict[str, float]:
    """Single-instance call latency of the serving signature, after a warm-up."""
    import tensorflow as tf

    rows = [tf.constant(x[i % len(x)][None, :], dtype=tf.float32) for i in range(calls)]
    for row in rows[:10]:
        serving_fn(features=row)
    times = []
    for row in rows:
        start = time.perf_counter()
        serving_fn(features=row)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "p50": float(np.percentile(times, 50)),
        "p95": float(np.percentile(times, 95)),
        "p99": float(np.percentile(times, 99)),
    }
