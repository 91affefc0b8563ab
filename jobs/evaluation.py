"""Evaluation reports: the seed's targets, every head, baselines, calibration and the alert rules,
on any set of examples (`churn-model evaluate`, the held-out report `train` writes).

All measurements use the exported serving signature (what the endpoint runs, calibration
included). Definitions are `churn-worker backtest`'s, through the same functions
(`jobs.backtest.metrics`, `model.metrics`): churn labels with censoring, AUC, Brier, expected
calibration error and its reliability bins, and for the alert rules the alerts a live worker would
have sent (each rule at the configured thresholds, with the ledger's cooldown, on every scoring
instant), read per customer: precision, recall (true positive rate), false positive rate among
customers who stayed, and the share of alerts that were false. Given the same log, model and
config, `evaluate` and a backtest report the same numbers, up to the backtest's event-arrival order
(a late event is applied when it arrives there, at its own time here).

Targets (docs/model.md, The targets), each alert target in both readings its table allows:
    churn AUC-ROC, 14 and 30 days           > 0.80
    IB call spike precision                 > 0.75  and recall (its "true positive rate") > 0.75
    health score MAE                        < 10    against the simulator's latent health where the
                                                    outcomes carry it (<stem>.truth.npz), else the
                                                    observable health label
Each target names what it is judged against (`against`), and the IB_CALL_SPIKE rule is also read at
each threshold (`ib_call_spike_thresholds`): it is a rule on one feature, not a model output, and
that list shows what precision and recall the data allows it.
    inference latency p95                   < 200 ms  one instance per call, in process
    critical-alert false positive rate      < 0.15  customers who stayed; and share of alerts false
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from features.churn_outcomes import NEVER, ChurnTimes, HealthTruth
from features.registry import FEATURE_INDEX
from jobs.backtest.metrics import (
    AGAINST,
    JUDGED_NOTE,
    Population,
    customer_weeks,
    model_stats,
    seed_targets,
    target,
)
from jobs.backtest.recording import RULE_FEATURES
from jobs.tuning import TRIGGERS, Candidate
from jobs.tuning import evaluate as evaluate_candidate
from model.baselines import Baselines, load_baselines
from model.candidates import served_summary
from model.datasources import TrainingData
from model.evaluation import PREDICTION_NAMES, latency_ms, predict
from model.exceptions import DataError
from model.metrics import (
    CLASSIFIER_HEADS,
    auc_roc,
    classifier_metrics,
    head_metrics,
    paired_bootstrap,
    round_metric,
)
from worker.alerts.config import AlertsConfig

if TYPE_CHECKING:
    from model.bundle import Bundle, ServingFn
    from worker.alerts.config import AlertsConfig


def rule_columns(
    x: np.ndarray, customer: np.ndarray, t_us: np.ndarray, pred: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The backtest's scoring-log columns (jobs/backtest/recording.py) for these rows."""

    columns: dict[str, np.ndarray] = {"customer": customer.astype(np.int64), "t_us": t_us.astype(np.int64)}
    for name in RULE_FEATURES:
        columns[name] = x[:, FEATURE_INDEX[name]].astype(np.float64)
    for output, name in PREDICTION_NAMES.items():
        columns[name] = np.asarray(pred[output], dtype=np.float64).ravel()
    return columns


IB_SPIKE_THRESHOLDS = (1, 2, 3, 4, 5)


def ib_spike_thresholds(columns: dict[str, np.ndarray], population: Any, alerts: Any) -> list[dict[str, Any]]:
    """The IB_CALL_SPIKE rule at each `min_calls_14d` in IB_SPIKE_THRESHOLDS, measured as the
    targets measure it: what the data allows the rule (it is a threshold on one feature, not a
    model output, so its precision and recall trade against each other along this list)."""
    out = []
    for calls in IB_SPIKE_THRESHOLDS:
        stats = evaluate_candidate(
            columns,
            population,
            alerts,
            Candidate("ib_call_spike", {"min_calls_14d": float(calls)}, f">= {calls}"),
        )
        out.append(
            {
                "min_calls_14d": calls,
                **{
                    key: stats.get(key)
                    for key in (
                        "customers_alerted",
                        "precision",
                        "recall",
                        "false_positive_rate",
                        "false_alert_share",
                    )
                },
            }
        )
    return out


def rule_stats(columns: dict[str, np.ndarray], population: Any, alerts: Any) -> dict[str, Any]:
    """Per alert type: the alerts the rules at the configured thresholds would send (cooldown
    included), measured as the backtest measures them."""

    out: dict[str, Any] = {}
    for rule in TRIGGERS:
        settings = alerts.rule(rule).model_dump()
        params = {
            k: float(v) for k, v in settings.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        stats = evaluate_candidate(columns, population, alerts, Candidate(rule, params, rule))
        out[rule.upper()] = {**stats, "enabled": bool(settings.get("enabled", True))}
    return out


def population_of(
    customers: np.ndarray,
    t_us: np.ndarray,
    churn: ChurnTimes,
    churned_at: dict[str, int],
    start_us: int,
    end_us: int,
) -> tuple[Population, np.ndarray]:
    """The backtest's `Population` for the customers of these rows, and each row's customer index."""

    names, index = np.unique(customers.astype(str), return_inverse=True)
    ids = names.tolist()
    churn_us = np.asarray([churned_at.get(c, NEVER) for c in ids], dtype=np.int64)
    first = np.full(len(ids), end_us, dtype=np.int64)
    np.minimum.at(first, index, t_us)
    weeks = customer_weeks(first, churn_us, end_us)
    return Population(ids, churn_us, start_us, end_us, weeks, churn), index.astype(np.int64)


def _baseline_report(
    baselines: Baselines | None, x: np.ndarray, y: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    if baselines is None:
        return {}, {}
    probs = baselines.predict(x)
    report: dict[str, Any] = {}
    for head, by_name in probs.items():
        labels = np.asarray(y[head], dtype=np.float64)
        report[head] = {name: _summary(classifier_metrics(labels, p)) for name, p in by_name.items()}
    return report, probs


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    calibration = metrics.get("calibration") or {}
    return {
        "auc_roc": metrics.get("auc_roc"),
        "brier": calibration.get("brier"),
        "ece": calibration.get("ece"),
    }


def evaluate_examples(
    serving_fn: ServingFn,
    x: np.ndarray,
    y: dict[str, np.ndarray],
    customers: np.ndarray,
    t_us: np.ndarray,
    *,
    churn: ChurnTimes,
    churned_at: dict[str, int],
    start_us: int,
    end_us: int,
    alerts: AlertsConfig | None = None,
    baselines: Baselines | None = None,
    seed: int = 0,
    latency: bool = True,
    predictions: dict[str, np.ndarray] | None = None,
    health_truth: HealthTruth | None = None,
) -> dict[str, Any]:
    """The full report (what `churn-model evaluate --json` prints) on rows of (customer, instant).
    `health_truth`: the simulator's latent health (its <stem>.truth.npz beside the outcomes), which
    the health MAE target is then judged against, as the backtest judges it."""

    if not len(x):
        raise DataError("no examples to evaluate")
    pred = predictions if predictions is not None else predict(serving_fn, x)
    heads = head_metrics(pred, y)
    population, index = population_of(customers, t_us, churn, churned_at, start_us, end_us)
    columns = rule_columns(x, index, t_us, pred)
    labelled = {days: ~np.isnan(np.asarray(y[f"churn_risk_{days}d"], dtype=np.float64)) for days in (14, 30)}
    model = model_stats(
        columns, population, health_truth, np.asarray(y["health_score"], dtype=np.float64), labelled
    )
    for days in (14, 30):
        if model[f"churn_{days}d"]["auc_roc"] is None:
            raise DataError(
                f"the {days}-day churn labels of these customers hold one class only: "
                "evaluate on a longer log or more customers"
            )
    by_type = rule_stats(columns, population, alerts or AlertsConfig())
    report: dict[str, Any] = {
        "rows": len(x),
        "customers": len(population.customers),
        "churned_customers": population.churners,
        "heads": heads,
        "churn_14d": _strip_roc(model["churn_14d"]),
        "churn_30d": _strip_roc(model["churn_30d"]),
        "calibration_14d": model["calibration_14d"],
        "calibration_30d": model["calibration_30d"],
        "health_mae": model["health_mae"],
        "health_mae_vs_simulator_truth": model.get("health_mae_vs_simulator_truth"),
        "alerts": by_type,
        "ib_call_spike_thresholds": ib_spike_thresholds(columns, population, alerts or AlertsConfig()),
    }
    targets = seed_targets(by_type, model)
    if latency:
        measured = latency_ms(serving_fn, x)
        report["latency_ms_single_instance"] = {k: round(v, 3) for k, v in measured.items()}
        targets.insert(
            len(targets) - 2,
            target(
                "inference_latency_p95_ms",
                "< 200",
                round(measured["p95"], 3),
                "one instance per call, the exported signature in process",
            ),
        )
    report["targets"] = targets
    baseline_report, baseline_probs = _baseline_report(baselines, x, y)
    if baseline_report:
        report["baselines"] = baseline_report
        labels = np.asarray(y["churn_risk_30d"], dtype=np.float64)
        best = max(
            baseline_probs["churn_risk_30d"],
            key=lambda n: baseline_report["churn_risk_30d"][n]["auc_roc"] or 0,
        )
        report["model_vs_best_baseline_30d"] = {
            "baseline": best,
            **paired_bootstrap(
                labels, pred["churn_risk_30d"], baseline_probs["churn_risk_30d"][best], index, seed
            ),
        }
    return report


def _strip_roc(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "roc"}


def evaluate_rows(
    serving_fn: ServingFn, x: np.ndarray, y: dict[str, np.ndarray], seed: int = 0, latency: bool = True
) -> dict[str, Any]:
    """Rows without customers or time (the seed's generator, synthetic tests): every head, and the
    targets read per row (each row its own customer, an IB alert = the rule holding on the row)."""

    pred = predict(serving_fn, x)
    heads = head_metrics(pred, y)
    churn30 = np.asarray(y["churn_risk_30d"], dtype=np.float64)
    alerted = x[:, FEATURE_INDEX["ib_call_count_14d"]] >= 2
    known = ~np.isnan(churn30)
    hit = alerted & known & (churn30 == 1)
    churners, stayers = known & (churn30 == 1), known & (churn30 == 0)
    precision = round_metric(hit.sum() / max(1, (alerted & known).sum())) if (alerted & known).any() else None
    recall = round_metric(hit.sum() / churners.sum()) if churners.any() else None
    fpr = round_metric((alerted & stayers).sum() / stayers.sum()) if stayers.any() else None
    false_share = round_metric(1 - hit.sum() / (alerted & known).sum()) if (alerted & known).any() else None
    auc14 = auc_roc(
        np.nan_to_num(np.asarray(y["churn_risk_14d"], np.float64)).astype(bool), pred["churn_risk_14d"]
    )
    rows_note = "the seed generator's labels, each row its own customer"
    targets = [
        target("ib_call_spike_precision", "> 0.75", precision, rows_note),
        target("ib_call_spike_recall", "> 0.75", recall, rows_note),
        target("critical_alert_false_positive_rate", "< 0.15", fpr, rows_note),
        target("critical_alert_false_share", "< 0.15", false_share, rows_note),
        target("churn_auc_roc_14d", "> 0.80", auc14, rows_note),
        target("churn_auc_roc_30d", "> 0.80", heads["churn_risk_30d"].get("auc_roc"), rows_note),
        target("health_score_mae", "< 10", heads["health_score"].get("mae"), rows_note),
    ]
    report: dict[str, Any] = {"rows": len(x), "heads": heads, "targets": targets}
    if latency:
        measured = latency_ms(serving_fn, x)
        report["latency_ms_single_instance"] = {k: round(v, 3) for k, v in measured.items()}
        targets.insert(
            len(targets) - 2,
            target(
                "inference_latency_p95_ms",
                "< 200",
                round(measured["p95"], 3),
                "one instance per call, the exported signature in process",
            ),
        )
    return report


def format_report(report: dict[str, Any]) -> str:
    """The targets table, the heads, baselines, calibration and alert rules, for people."""
    lines = []
    for title, part in _sections(report):
        lines += [f"== {title} ==", *_format_one(part), ""]
    return "\n".join(lines).rstrip()


def _sections(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "targets" in report:
        return [("evaluation", report)]
    return [
        (name.replace("_", " "), part)
        for name, part in report.items()
        if isinstance(part, dict) and "targets" in part
    ]


def _format_one(report: dict[str, Any]) -> list[str]:
    lines = [f"{'target':<38} {'goal':>7} {'measured':>9}  result  judged against", "-" * 90]
    for row in report["targets"]:
        value = row["value"]
        shown = "n/a" if value is None else f"{value:.4g}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row["pass"]]
        against = _SHORT_AGAINST.get(row.get("against") or "", row.get("against") or "")
        lines.append(f"{row['metric']:<38} {row['target']:>7} {shown:>9}  {verdict:<6}  {against}".rstrip())
    if "customers" in report:
        lines.append(
            f"rows {report['rows']:,} (scoring instants), customers {report['customers']:,}, "
            f"churned {report['churned_customers']:,}"
        )
    lines.append("")
    heads = report["heads"]
    for head in CLASSIFIER_HEADS:
        h = heads[head]
        if h.get("auc_roc") is None and "calibration" not in h:
            lines.append(f"{head:<24} labelled {h['labelled']:>8,}  (not enough labels)")
            continue
        cal = h.get("calibration") or {}
        auc = "n/a" if h.get("auc_roc") is None else f"{h['auc_roc']:.4f}"
        lines.append(
            f"{head:<24} labelled {h['labelled']:>8,}  rate {h['rate']:.3f}  AUC {auc}  "
            f"Brier {cal.get('brier', 0):.4f}  ECE {cal.get('ece', 0):.4f}"
        )
    for head in ("session_velocity", "health_score", "supply_demand"):
        h = heads[head]
        if not h.get("labelled"):
            lines.append(f"{head:<24} labelled        0")
            continue
        corr = "n/a" if h.get("correlation") is None else f"{h['correlation']:.3f}"
        lines.append(
            f"{head:<24} labelled {h['labelled']:>8,}  MAE {h['mae']:.3f}  RMSE {h['rmse']:.3f}  corr {corr}"
        )
    for name, by in (report.get("baselines") or {}).items():
        parts = ", ".join(f"{n} AUC {s['auc_roc']} ECE {s['ece']}" for n, s in by.items())
        lines.append(f"baselines {name:<14} {parts}")
    versus = report.get("model_vs_best_baseline_30d")
    if versus and versus.get("difference") is not None:
        low, high = versus["ci95"]
        lines.append(
            f"model - {versus['baseline']} (30d AUC) {versus['difference']:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]"
        )
    bins = (report.get("calibration_30d") or {}).get("bins") or []
    if bins:
        lines.append(
            "reliability 30d (bin: predicted / observed, rows): "
            + "; ".join(
                f"{b['bin'][0]:.1f}-{b['bin'][1]:.1f}: {b['predicted']:.3f}/{b['observed']:.3f} ({b['count']})"
                for b in bins
            )
        )
    alerts = report.get("alerts")
    if alerts:
        lines += [
            "",
            f"{'alert rule (configured thresholds)':<36} {'alerts':>7} {'custs':>6} {'judged':>6} {'prec':>6} "
            f"{'recall':>6} {'FPR':>6} {'false':>6}",
        ]
        for name, s in alerts.items():
            lines.append(
                f"{name:<36} {s['alerts']:>7} {s['customers_alerted']:>6} {s.get('customers_settled', 0):>6} "
                f"{_pct(s.get('precision')):>6} {_pct(s.get('recall')):>6} {_pct(s.get('false_positive_rate')):>6} "
                f"{_pct(s.get('false_alert_share')):>6}"
            )
        lines.append(JUDGED_NOTE)
        lines += _ib_thresholds(report)
    return lines


_SHORT_AGAINST = {
    AGAINST["ib_call_spike"]: "IB_CALL_SPIKE rule's alerted customers (no model); churn within 30 days",
    AGAINST["critical_fpr"]: "customers who never churned",
    AGAINST["critical_share"]: "IB_CALL_SPIKE alerts without a churn within 30 days",
    AGAINST["churn_auc"]: "churn labels, censored left out",
    AGAINST["health_truth"]: "the simulator's latent health (truth file)",
    AGAINST["health_observable"]: "the observable health label (no latent truth here)",
}


def _ib_thresholds(report: dict[str, Any]) -> list[str]:
    rows = report.get("ib_call_spike_thresholds") or []
    if not rows:
        return []
    cells = "; ".join(
        f">= {r['min_calls_14d']}: {_pct(r.get('precision'))} / {_pct(r.get('recall'))} / "
        f"{_pct(r.get('false_alert_share'))} ({r.get('customers_alerted', 0)})"
        for r in rows
    )
    return [f"IB_CALL_SPIKE by min_calls_14d (precision / recall / false share, customers): {cells}"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def evaluate_held_out(bundle: Bundle, loaded: TrainingData, seed: int) -> dict[str, Any]:
    """The test customers' evaluation: out of time and customer, and out of customer only; for
    rows without customers (seed, synthetic), the held-out rows."""

    examples, build = loaded.examples, loaded.build
    if examples is None or build is None:  # rows without customers: the seed's, synthetic ones
        test = loaded.summary["test"]
        return {"held_out_rows": evaluate_rows(bundle.serving_fn(), test.x, test.y, seed)}
    baselines = load_baselines(bundle.path)
    out: dict[str, Any] = {}
    test = examples.where("test")
    readings = (
        ("out_of_time_and_customer", test.where(after_cut=True)),
        ("out_of_customer", test),
        ("validation_period", examples.where("validation")),
    )
    for name, part in readings:
        if not len(part):
            out[name] = {"note": "no rows (test fraction 0?)"}
            continue
        try:
            out[name] = evaluate_examples(
                bundle.serving_fn(),
                part.x,
                part.y,
                part.customer,
                part.t_us,
                churn=build.churn,
                churned_at=build.outcomes.churned_at_us,
                start_us=build.start_us,
                end_us=build.end_us,
                baselines=baselines,
                seed=seed,
                latency=name == "out_of_time_and_customer",
                health_truth=build.outcomes.health,
            )
        except DataError as exc:
            out[name] = {"note": str(exc)}
    out["validation_period"]["note"] = "the rows calibration was fitted on: its ECE is optimistic"
    out["serves"] = served_summary(bundle.metadata)  # what the readings above measured, per churn head
    return out
