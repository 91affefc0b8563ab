"""report.json: what a backtest found, per alert type and for the model, against the seed's targets.

Nothing here reads a clock or the machine: the same events, config and model give the same report,
byte for byte (run times are printed by the command, never written into the report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from features.churn_outcomes import NEVER, ChurnTimes, Outcomes
from features.exceptions import EventParseError
from features.labels import (
    EngagementReference,
    LabelContext,
    LabelScan,
    customer_labels,
    health_scores,
    scan_label_facts,
)
from features.state import DAY_US, from_us
from jobs.backtest.metrics import (
    JUDGED_NOTE,
    Population,
    alert_stats,
    customer_weeks,
    model_stats,
    seed_targets,
    weekly_counts,
)
from jobs.backtest.recording import TRIGGERS
from jobs.backtest.runner import BacktestResult
from jobs.budget_usage import daily_counts, format_usage, latest_tiers, usage
from worker.alerts.budgets import BudgetsConfig
from worker.alerts.config import AlertsConfig
from worker.alerts.rules import AlertType, iso

ALERT_TYPES = [t.value for t in AlertType]
DEFINITIONS = {
    "confirmed": "the customer churned within 30 days after the alert's as_of",
    "settled": "an alert whose 30 days lie inside the events (as_of + 30 days <= their end), confirmed or not; "
    "alerts of the last 30 days are left out of precision and the false alert share (alerts_settled counts the rest)",
    "precision": "customers with a confirmed settled alert / customers with a settled alert",
    "recall": "customers with a confirmed alert / customers who churned during the backtest",
    "false_positive_rate": "alerted customers who did not churn / customers who did not churn",
    "median_lead_time_days": "days from a customer's first confirmed alert to the churn, median over customers",
    "alerts_per_1000_customers_per_week": "alerts per 1,000 customer-weeks; a customer counts from their first "
    "scoring instant to their churn or the end of the events",
    "false_alert_share": "settled alerts not followed by a churn within 30 days / settled alerts",
    "churn": "an outcomes churned_at or a customer_churned event of the log (a customer who came back churned too)",
    "scoring_coverage": "active customer-days (active at the day's end: features/activity.py) that were scored "
    "that day, by an event or by day-end re-scoring of quiet customers",
    "model": "each scoring instant of a customer not yet churned is an example, labelled by churn within "
    "14 / 30 days; instants whose horizon passes the end of the events are left out, churned or not",
    "health_mae": "against the observable health label (features/labels.py): 50 x did not churn within 30 days "
    "+ 50 x percentile of engaged days in the next 30 days among the customers scored at the same instant",
}


def population(
    result: BacktestResult, outcomes: Outcomes | None, scan: LabelScan | None = None
) -> Population:
    """The backtest's customers with their churn times. With `scan` (the log's label facts), every
    churn instant counts (outcomes and `customer_churned` events) and the data ends at the latest
    event, as `churn-model evaluate` has it."""
    customers = result.customers
    churn = outcomes.churn_us(customers) if outcomes else np.full(len(customers), NEVER, dtype=np.int64)
    end = result.last_us or 0
    if scan is not None and scan.end_us is not None:
        end = scan.end_us
    columns = result.log.columns()
    first = np.full(len(customers), end, dtype=np.int64)  # never scored: no exposure
    np.minimum.at(first, columns["customer"], columns["t_us"])
    times = ChurnTimes.join(outcomes, scan.churn_events()) if scan is not None else None
    return Population(customers, churn, result.first_us or 0, end, customer_weeks(first, churn, end), times)


def health_labels(columns: dict[str, np.ndarray], pop: Population, scan: LabelScan) -> np.ndarray:
    """The observable health label (features/labels.py) of every scoring-log row, NaN where
    censored; the engagement percentile ranks among the rows scored at the same instant."""
    t, customer = columns["t_us"], columns["customer"]
    context = LabelContext(end_us=pop.end_us, log_uses_flag=scan.log_uses_flag)
    churn30 = np.full(len(t), np.nan)
    engaged = np.full(len(t), np.nan)
    order = np.argsort(customer, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(customer[order])) + 1) if len(t) else []:
        cid = pop.customers[int(customer[rows[0]])]
        facts = scan.facts.get(cid)
        if facts is None:
            continue
        times = pop.churn_times.of(cid) if pop.churn_times is not None else np.zeros(0, np.int64)
        labels = customer_labels(facts, times, t[rows], context)
        churn30[rows], engaged[rows] = labels["churn_risk_30d"], labels["engaged_days_30d"]
    alive = pop.churn_us[customer] > t
    out = np.full(len(t), np.nan)
    for instant in np.unique(t).tolist():
        rows = np.flatnonzero((t == instant) & alive)
        reference = EngagementReference()
        reference.add(engaged[rows])
        out[rows] = health_scores(churn30[rows], engaged[rows], reference)
    return out


def alert_arrays(result: BacktestResult, alert_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(customer index, as_of µs) of the published alerts of one type."""
    index = result.log.index
    pairs = [
        (index[c], t)
        for k, c, t in zip(result.alerts.types, result.alerts.customers, result.alerts.as_of_us, strict=True)
        if k == alert_type
    ]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    customers, times = zip(*pairs, strict=True)
    return np.asarray(customers, dtype=np.int64), np.asarray(times, dtype=np.int64)


def build_report(
    result: BacktestResult,
    outcomes: Outcomes | None,
    alerts: AlertsConfig,
    *,
    events: str,
    scoring: str,
    model_version: str | None,
    batch_hours: float,
    budgets: BudgetsConfig | None = None,
) -> dict[str, Any]:
    scan = _scan(events) if outcomes is not None else None
    pop = population(result, outcomes, scan)
    by_type = {
        name: alert_stats(*alert_arrays(result, name), pop, with_outcomes=outcomes is not None)
        for name in ALERT_TYPES
    }
    report: dict[str, Any] = {
        "events_file": events,
        "outcomes_file": str(outcomes.path) if outcomes else None,
        "scoring": scoring,
        "model_version": model_version,
        "batch_window_hours": batch_hours,
        "period": {
            "start": iso(from_us(pop.start_us)) if result.first_us else None,
            "end": iso(from_us(pop.end_us)) if result.last_us else None,
            "weeks": round(pop.weeks, 3),
            "customer_weeks": round(pop.exposure_weeks, 1),
        },
        "events": {
            "read": result.events_read,
            "applied": result.applied,
            "duplicates": result.duplicates,
            "bad_lines_skipped": result.bad_lines,
            "bad_line_examples": result.bad_line_examples,
            "left_out": dict(sorted(result.left_out.items())),
            "batches": result.batches,
        },
        "customers": len(pop.customers),
        "scoring_coverage": coverage(result),
        "alerts": {"total": len(result.alerts.types), "by_type": by_type},
        "weekly_alerts": weekly_counts(
            result.alerts.types, result.alerts.as_of_us, pop.start_us, ALERT_TYPES
        ),
        "config": alerts.model_dump(mode="json"),
    }
    if budgets:  # alerts per day against each budget (jobs/budget_usage.py)
        tiers = latest_tiers(result.log.customers, result.log.columns())
        counts = daily_counts(
            result.alerts.types, result.alerts.customers, result.alerts.as_of_us, tiers, budgets
        )
        report["budgets"] = usage(
            counts, budgets, pop.start_us // DAY_US, max(pop.end_us - 1, pop.start_us) // DAY_US
        )
    if outcomes is None:
        report["outcomes"] = (
            "n/a: run with --outcomes FILE for precision, recall, lead times and model metrics"
        )
        return report
    columns = result.log.columns()
    labels = health_labels(columns, pop, scan) if scan is not None else None
    model = model_stats(columns, pop, outcomes.health, labels)
    report["outcomes"] = {"customers_churned": pop.churners, "customers_not_churned": pop.non_churners}
    report["model"] = model
    report["targets"] = seed_targets(by_type, model)
    report["definitions"] = DEFINITIONS
    return report


def _scan(events: str) -> LabelScan | None:
    """The log's label facts, or None if the path cannot be read again (then the report falls back
    to the outcomes file's single churn time per customer and says health MAE is n/a)."""
    try:
        return scan_label_facts(events)
    except (EventParseError, OSError):
        return None


def coverage(result: BacktestResult) -> dict[str, Any]:
    """How many active customer-days were scored (by an event or by day-end re-scoring)."""
    triggers = result.log.columns()["trigger"]
    active, scored = result.active_customer_days, result.scored_customer_days
    return {
        "active_customer_days": active,
        "scored_customer_days": scored,
        "share": round(scored / active, 4) if active else None,
        "scores_by_trigger": {name: int((triggers == i).sum()) for i, name in enumerate(TRIGGERS)},
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def format_summary(report: dict[str, Any]) -> str:
    """The per-type table and the targets, for people."""
    with_outcomes = "targets" in report
    head = f"{'alert type':<22} {'alerts':>7} {'customers':>9} {'per 1k/wk':>9}"
    if with_outcomes:
        head += f" {'judged':>7} {'precision':>9} {'recall':>7} {'FPR':>7} {'false':>7} {'lead d':>7}"
    lines = []
    cover = report.get("scoring_coverage") or {}
    if cover.get("share") is not None:
        lines += [
            f"scored {cover['scored_customer_days']:,} of {cover['active_customer_days']:,} active customer-days "
            f"({cover['share']:.1%}); re-scoring of quiet customers made {cover['scores_by_trigger']['rescore']:,} "
            "of the scores",
            "",
        ]
    lines += [head, "-" * len(head)]
    for name, s in report["alerts"]["by_type"].items():
        line = f"{name:<22} {s['alerts']:>7} {s['customers_alerted']:>9} {s['alerts_per_1000_customers_per_week']:>9.2f}"
        if with_outcomes:
            lead = "n/a" if s["median_lead_time_days"] is None else f"{s['median_lead_time_days']:.1f}"
            line += (
                f" {s.get('customers_settled', 0):>7} {_pct(s['precision']):>9} {_pct(s['recall']):>7}"
                f" {_pct(s['false_positive_rate']):>7}"
                f" {_pct(s.get('false_alert_share')):>7} {lead:>7}"
            )
        lines.append(line)
    if with_outcomes:
        lines.append(JUDGED_NOTE)
    if report.get("budgets"):
        lines += [
            "",
            "alerts per day against each budget (the backtest does not defer; the live worker does)",
        ]
        lines.append(format_usage(report["budgets"]))
    if with_outcomes:
        lines += ["", f"{'target':<38} {'goal':>7} {'measured':>9}  result"]
        for t in report["targets"]:
            value = "n/a" if t["value"] is None else f"{t['value']:.4g}"
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
            lines.append(f"{t['metric']:<38} {t['target']:>7} {value:>9}  {verdict}")
    return "\n".join(lines)
