"""Held-out evaluation: the seed's performance targets, baselines, the oracle and calibration.

All measurements use the exported serving signature (what the endpoint runs), on customers that
training never saw (`split_by_customer` in model/dataset.py). Targets (model-spec.md):

    churn AUC-ROC, 14 and 30 days           > 0.80
    IB call spike precision                 > 75%   rule ib_call_count_14d >= 2; share of alerted
                                                    examples whose customer churns within 30 days
    health score MAE                        < 10 points
    inference latency p95                   < 200 ms  one instance per call, in process
    critical-alert false positive rate      < 15%   share of non-churning examples that get
                                                    IB_CALL_SPIKE

Beside them, on the same split: the oracle's AUC (the simulator's true churn probabilities: the best
any model could do), a logistic regression and a gradient-boosting baseline trained on the same
training rows, and calibration of the 30-day head (Brier score, expected calibration error).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from features.registry import FEATURE_INDEX
from model.exceptions import DataError

IB_SPIKE_FEATURE = "ib_call_count_14d"
IB_SPIKE_THRESHOLD = 2
LATENCY_CALLS = 200
ECE_BINS = 10
BOOTSTRAP_ROUNDS = 200


def predict(serving_fn: Any, x: np.ndarray, batch: int = 4096) -> dict[str, np.ndarray]:
    import tensorflow as tf

    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(x), batch):
        out = serving_fn(features=tf.constant(x[start : start + batch], dtype=tf.float32))
        parts.append({key: value.numpy() for key, value in out.items()})
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def latency_ms(serving_fn: Any, x: np.ndarray, calls: int = LATENCY_CALLS) -> dict[str, float]:
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
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
            "p99": float(np.percentile(times, 99))}  # fmt: skip


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Equal-width bins: sum over bins of (bin share) x |mean predicted - observed rate|."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(float(p[mask].mean()) - float(y[mask].mean()))
    return float(total)


def paired_bootstrap_auc_difference(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray | None,
    seed: int,
    rounds: int = BOOTSTRAP_ROUNDS,
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) and its 95% interval, resampling whole customers (rows of one customer are
    correlated) when `groups` is given, else rows."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(y))
    codes, members = np.unique(groups, return_inverse=True)
    by_group = [np.flatnonzero(members == g) for g in range(len(codes))]
    differences = []
    for _ in range(rounds):
        rows = np.concatenate([by_group[g] for g in rng.integers(0, len(by_group), len(by_group))])
        if len(np.unique(y[rows])) < 2:
            continue
        differences.append(roc_auc_score(y[rows], a[rows]) - roc_auc_score(y[rows], b[rows]))
    point = float(roc_auc_score(y, a) - roc_auc_score(y, b))
    low, high = np.percentile(differences, [2.5, 97.5]) if differences else (point, point)
    return point, float(low), float(high)


def calibration(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {
        "brier": round(float(np.mean((p - y) ** 2)), 4),
        "ece": round(expected_calibration_error(y, p), 4),
    }


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def baselines(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """Churn-30d probabilities on the test rows from a logistic regression and a gradient-boosted model."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    logistic.fit(x_train, y_train)
    gbm = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, early_stopping=True, random_state=seed
    )
    gbm.fit(x_train, y_train)
    return {"logistic": logistic.predict_proba(x_test)[:, 1], "gbm": gbm.predict_proba(x_test)[:, 1]}


def evaluate(
    serving_fn: Any,
    x_test: np.ndarray,
    y_test: dict[str, np.ndarray],
    x_train: np.ndarray,
    y_train: dict[str, np.ndarray],
    oracle: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    with_baselines: bool = True,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """The full report (the shape `churn-model evaluate --json` prints)."""
    churn30 = np.asarray(y_test["churn_risk_30d"]).astype(int).ravel()
    churn14 = np.asarray(y_test["churn_risk_14d"]).astype(int).ravel()
    if len(np.unique(churn30)) < 2 or len(np.unique(churn14)) < 2:
        raise DataError("the test split has only one churn class: simulate more customers or days")
    pred = predict(serving_fn, x_test)
    p30, p14 = pred["churn_risk_30d"], pred["churn_risk_14d"]

    alerted = x_test[:, FEATURE_INDEX[IB_SPIKE_FEATURE]] >= IB_SPIKE_THRESHOLD
    precision = float(churn30[alerted].mean()) if alerted.any() else float("nan")
    false_positive_rate = float(alerted[churn30 == 0].mean())
    health_mae = float(np.mean(np.abs(pred["health_score"] - np.asarray(y_test["health_score"]).ravel())))
    latency = latency_ms(serving_fn, x_test)
    auc30, auc14 = _auc(churn30, p30), _auc(churn14, p14)

    def target(metric: str, goal: str, value: float, ok: bool) -> dict[str, Any]:
        finite = bool(np.isfinite(value))  # NaN: the IB rule alerted nobody
        return {
            "metric": metric,
            "target": goal,
            "value": round(value, 4) if finite else None,
            "pass": finite and ok,
        }

    report: dict[str, Any] = {
        "targets": [
            target("churn_auc_roc_14d", "> 0.80", auc14, auc14 > 0.80),
            target("churn_auc_roc_30d", "> 0.80", auc30, auc30 > 0.80),
            target("ib_call_spike_precision", "> 0.75", precision, precision > 0.75),
            target("health_score_mae", "< 10", health_mae, health_mae < 10),
            target("inference_latency_p95_ms", "< 200", latency["p95"], latency["p95"] < 200),
            target(
                "critical_alert_false_positive_rate",
                "< 0.15",
                false_positive_rate,
                false_positive_rate < 0.15,
            ),
        ],
        "churn_30d_auc": {"model": round(auc30, 4)},
        "churn_14d_auc": {"model": round(auc14, 4)},
        "calibration_30d": {"model": calibration(churn30, p30)},
        "ib_call_spike": {"alerted": int(alerted.sum()), "alerted_share": round(float(alerted.mean()), 4)},
        "latency_ms_single_instance": {k: round(v, 3) for k, v in latency.items()},
        "test_rows": len(x_test),
        "test_churn_rate_30d": round(float(churn30.mean()), 4),
        "test_churn_rate_14d": round(float(churn14.mean()), 4),
    }
    if oracle is not None:
        for days, labels, key in ((30, churn30, "churn_30d_auc"), (14, churn14, "churn_14d_auc")):
            probs = oracle.get(f"churn_risk_{days}d")
            if probs is not None:
                report[key]["oracle"] = round(_auc(labels, np.asarray(probs).ravel()), 4)
        probs = oracle.get("churn_risk_30d")
        if probs is not None:
            probs = np.asarray(probs).ravel()
            report["calibration_30d"]["oracle"] = calibration(churn30, probs)
    if with_baselines:
        train30 = np.asarray(y_train["churn_risk_30d"]).astype(int).ravel()
        baseline_probs = baselines(x_train, train30, x_test, seed)
        for name, probs in baseline_probs.items():
            report["churn_30d_auc"][name] = round(_auc(churn30, probs), 4)
            report["calibration_30d"][name] = calibration(churn30, probs)
        best = max(("logistic", "gbm"), key=lambda name: report["churn_30d_auc"][name])
        difference, low, high = paired_bootstrap_auc_difference(
            churn30, p30, baseline_probs[best], groups, seed
        )
        report["model_vs_best_baseline_30d"] = {
            "baseline": best, "difference": round(difference, 4), "ci95": [round(low, 4), round(high, 4)],
        }  # fmt: skip
    return report


def format_report(report: dict[str, Any]) -> str:
    """The targets table and the comparisons, for people."""
    lines = [f"{'metric':<38} {'target':>8} {'measured':>10}  result", "-" * 68]
    for row in report["targets"]:
        value = row["value"]
        shown = "n/a" if value is None else f"{value:.4g}"
        lines.append(
            f"{row['metric']:<38} {row['target']:>8} {shown:>10}  {'PASS' if row['pass'] else 'FAIL'}"
        )
    lines.append("")
    for key, title in (("churn_30d_auc", "churn 30d AUC"), ("churn_14d_auc", "churn 14d AUC")):
        parts = ", ".join(f"{name} {value:.4f}" for name, value in report[key].items())
        lines.append(f"{title:<16} {parts}")
    for name, cal in report["calibration_30d"].items():
        lines.append(f"calibration 30d  {name:<9} Brier {cal['brier']:.4f}  ECE {cal['ece']:.4f}")
    versus = report.get("model_vs_best_baseline_30d")
    if versus:
        low, high = versus["ci95"]
        lines.append(
            f"model - {versus['baseline']} (30d AUC) {versus['difference']:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]"
        )
    lines.append(
        f"test rows {report['test_rows']}, churn rate 30d {report['test_churn_rate_30d']:.3f}, "
        f"IB spike alerts {report['ib_call_spike']['alerted']}"
    )
    return "\n".join(lines)
