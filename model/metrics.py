"""Model metrics: pure numpy, no I/O. One definition of each, for training, evaluation, the gate
and the backtest report alike.

- AUC-ROC: Mann-Whitney, ties counted half; None with one class only.
- calibration: Brier score, expected calibration error over equal-width bins, and the reliability
  table behind it.
- per head: AUC, Brier, ECE and log loss on the labelled rows of a classifier head (NaN = censored);
  MAE, RMSE and correlation of a regression head.
- paired bootstrap: a difference of two models' statistic on the same rows, with its 95 % interval,
  resampling whole customers (rows of one customer are correlated).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CALIBRATION_BINS = 10


def auc_roc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half); None with one class only."""
    y = np.asarray(y, dtype=bool)
    positives = int(y.sum())
    negatives = len(y) - positives
    if not positives or not negatives:
        return None
    order = np.argsort(score, kind="mergesort")
    _, inverse, counts = np.unique(np.asarray(score)[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    rank_sum = float(ranks[y[order]].sum())
    return round((rank_sum - positives * (positives + 1) / 2) / (positives * negatives), 4)


def roc_points(y: np.ndarray, score: np.ndarray, points: int = 50) -> list[list[float]]:
    """(false positive rate, true positive rate) at `points` score quantiles, for a plot."""
    y = np.asarray(y, dtype=bool)
    if not y.any() or y.all():
        return []
    thresholds = np.unique(np.quantile(score, np.linspace(0, 1, points)))[::-1]
    out = [[0.0, 0.0]]
    for threshold in thresholds:
        flagged = score >= threshold
        out.append([round(float(flagged[~y].mean()), 4), round(float(flagged[y].mean()), 4)])
    out.append([1.0, 1.0])
    return out


def calibration(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Brier score, expected calibration error (equal-width bins, as model.evaluation computes it),
    and the reliability table behind it."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if not len(y):
        return {"brier": None, "ece": None, "bins": []}
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            predicted, observed = float(p[mask].mean()), float(y[mask].mean())
            ece += float(mask.mean()) * abs(predicted - observed)
            table.append(
                {
                    "bin": [round(edges[b], 2), round(edges[b + 1], 2)],
                    "count": int(mask.sum()),
                    "predicted": round(predicted, 4),
                    "observed": round(observed, 4),
                }
            )
    return {"brier": round(float(np.mean((p - y) ** 2)), 4), "ece": round(ece, 4), "bins": table}


BOOTSTRAP_ROUNDS = 200


CLASSIFIER_HEADS = ("churn_risk_14d", "churn_risk_30d", "first_session_success")


def round_metric(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return round_metric(float(np.corrcoef(a, b)[0, 1]))


def classifier_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """AUC, Brier, ECE with its reliability bins, log loss, on the labelled rows (NaN = censored)."""
    known = ~np.isnan(y)
    labels, probs = y[known].astype(np.float64), p[known].astype(np.float64)
    out: dict[str, Any] = {
        "labelled": int(known.sum()),
        "rate": round_metric(float(labels.mean())) if len(labels) else None,
    }
    if not len(labels):
        return out
    clipped = np.clip(probs, 1e-7, 1 - 1e-7)
    out.update(
        {
            "auc_roc": auc_roc(labels.astype(bool), probs),
            "mean_predicted": round_metric(float(probs.mean())),
            "log_loss": round_metric(
                float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
            ),
            "calibration": calibration(labels, probs),
        }
    )
    return out


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    known = ~np.isnan(y)
    labels, values = y[known].astype(np.float64), p[known].astype(np.float64)
    if not len(labels):
        return {"labelled": 0}
    error = values - labels
    return {
        "labelled": int(known.sum()),
        "mean_label": round_metric(float(labels.mean())),
        "mae": round_metric(float(np.abs(error).mean())),
        "rmse": round_metric(float(np.sqrt(np.mean(error**2)))),
        "correlation": _correlation(labels, values),
    }


def head_metrics(pred: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every one of the six heads against its label (masked where unknown)."""
    out: dict[str, Any] = {}
    for head in CLASSIFIER_HEADS:
        out[head] = classifier_metrics(
            np.asarray(y[head], dtype=np.float64).ravel(), np.asarray(pred[head]).ravel()
        )
    for head in ("session_velocity", "health_score"):
        out[head] = regression_metrics(
            np.asarray(y[head], dtype=np.float64).ravel(), np.asarray(pred[head]).ravel()
        )
    out["supply_demand"] = regression_metrics(
        np.asarray(y["supply_demand"], dtype=np.float64).ravel(), np.asarray(pred["supply_demand"]).ravel()
    )
    out["supply_demand"]["note"] = "cells: rows x subjects with data"
    return out


def paired_bootstrap(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray,
    seed: int,
    rounds: int = BOOTSTRAP_ROUNDS,
    statistic: str = "auc",
) -> dict[str, Any]:
    """statistic(a) - statistic(b) and its 95% interval, resampling whole customers (rows of one
    customer are correlated). statistic: auc, or ece (lower is better)."""
    known = ~np.isnan(y)
    y, a, b, groups = y[known], a[known], b[known], groups[known]

    def stat(labels: np.ndarray, p: np.ndarray) -> float | None:
        if statistic == "auc":
            return auc_roc(labels.astype(bool), p)
        ece: float | None = calibration(labels, p)["ece"]
        return ece

    point_a, point_b = stat(y, a), stat(y, b)
    if point_a is None or point_b is None:
        return {"difference": None, "ci95": [None, None]}
    _, members = np.unique(groups, return_inverse=True)
    order = np.argsort(members, kind="stable")
    bounds = np.flatnonzero(np.diff(members[order])) + 1
    by_group = np.split(order, bounds)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(rounds):
        rows = np.concatenate([by_group[g] for g in rng.integers(0, len(by_group), len(by_group))])
        first, second = stat(y[rows], a[rows]), stat(y[rows], b[rows])
        if first is not None and second is not None:
            differences.append(first - second)
    low, high = (
        np.percentile(differences, [2.5, 97.5]) if differences else (point_a - point_b, point_a - point_b)
    )
    return {
        "a": point_a,
        "b": point_b,
        "difference": round_metric(point_a - point_b),
        "ci95": [round_metric(float(low)), round_metric(float(high))],
    }
