"""`churn-worker alerts report`: one self-contained HTML page a retention lead reads at a glance.

From the alert ledger only (worker/alerts/dynamodb_ledger.py), never a Scan:
- the daily counters of the period (one Query per day for the outcomes and lifecycle, one per day for
  the budgets): alerts opened, escalated, resolved and their time to resolution, confirmed and
  expired (live precision), sent and deferred per budget;
- the alerts whose outcome is still open (their records' keys from the sparse index, then their
  latest message by key): the customers most at risk, with what changed;
- the alerts deferred in the period (one Query per day).

`report_data` gathers those into plain JSON (`--json` prints it; the tests check the page against
it and against the ledger); `report_page` draws it with jobs/html.py: tables and inline SVG charts,
no script, no network, so the file opens anywhere (an e-mail attachment, a CI artefact).
"""

from __future__ import annotations

from datetime import date, timedelta
from html import escape
from typing import Any

from jobs.html import line_chart, page, table
from worker.alerts.alert_outcomes import Counts, OutcomeStats, settled_before
from worker.alerts.budgets import BudgetsConfig
from worker.alerts.config import AlertsConfig
from worker.ports import AlertLedger

MOST_AT_RISK = 25
DEFERRED_SHOWN = 25


async def report_data(
    ledger: AlertLedger,
    since: date,
    until: date,
    today: date,
    alerts: AlertsConfig,
    budgets: BudgetsConfig,
) -> dict[str, Any]:
    stats = await ledger.outcome_stats(since, until)
    at_risk = await ledger.open_alerts(since, until, MOST_AT_RISK)
    deferred = await ledger.deferred_alerts(since, until, DEFERRED_SHOWN)
    return build_data(stats, at_risk, deferred, today, alerts, budgets)


def _days(since: date, until: date) -> list[str]:
    return [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]


def build_data(
    stats: OutcomeStats,
    at_risk: list[dict[str, Any]],
    deferred: list[dict[str, Any]],
    today: date,
    alerts: AlertsConfig,
    budgets: BudgetsConfig,
) -> dict[str, Any]:
    days = _days(stats.since, stats.until)
    by_type = stats.by_type()
    lifecycle = {name.upper() for name in type(alerts).model_fields if alerts.rule(name).resolve_after_hours}
    types: dict[str, Any] = {}
    for alert_type, c in by_type.items():
        types[alert_type] = {
            "alerts": c.alerts,
            "open": (c.alerts - c.resolved) if alert_type in lifecycle else None,
            "escalated": c.escalated,
            "resolved": c.resolved,
            "mean_hours_to_resolve": c.hours_to_resolve,
            "confirmed": c.confirmed,
            "expired": c.expired,
            "precision": c.precision,
        }
    per_day: dict[str, dict[str, Any]] = {}
    for day in days:
        total = Counts()
        for (cell_day, _, _), counts in stats.cells.items():
            if cell_day == day:
                total.add(counts)
        deferred_today = sum(cell.deferred_total for (d, _), cell in stats.budgets.items() if d == day)
        per_day[day] = {
            "alerts": total.alerts,
            "resolved": total.resolved,
            "deferred": deferred_today,
            "confirmed": total.confirmed,
            "expired": total.expired,
            "precision": total.precision,
            "mean_hours_to_resolve": total.hours_to_resolve,
        }
    budget_rows: dict[str, Any] = {}
    totals = stats.by_budget()
    for name, budget in budgets.items():
        cell = totals.get(name)
        budget_rows[name] = {
            "types": list(budget.types),
            "tiers": list(budget.tiers) if budget.tiers else None,
            "max_per_day": budget.max_per_day,
            "sent": cell.sent if cell else 0,
            "deferred": cell.deferred_total if cell else 0,
            "deferred_by_type": dict(sorted(cell.deferred.items())) if cell else {},
            "days_at_cap": stats.days_at_cap(name),
            "sent_per_day": {d: c.sent for (d, n), c in sorted(stats.budgets.items()) if n == name},
        }
    for name, cell in totals.items():  # budgets no longer configured still show what they did
        if name not in budget_rows:
            budget_rows[name] = {
                "types": sorted(cell.deferred),
                "tiers": None,
                "max_per_day": cell.max_per_day,
                "sent": cell.sent,
                "deferred": cell.deferred_total,
                "deferred_by_type": dict(sorted(cell.deferred.items())),
                "days_at_cap": stats.days_at_cap(name),
                "sent_per_day": {d: c.sent for (d, n), c in sorted(stats.budgets.items()) if n == name},
            }
    return {
        "since": stats.since.isoformat(),
        "until": stats.until.isoformat(),
        "today": today.isoformat(),
        "settled_before": settled_before(today).isoformat(),
        "by_type": types,
        "per_day": per_day,
        "budgets": budget_rows,
        "most_at_risk": [_row(body) for body in at_risk if body.get("status") != "resolved"],
        "deferred": [_row(body) for body in deferred],
    }


def _row(body: dict[str, Any]) -> dict[str, Any]:
    budget = body.get("budget") or {}
    return {
        "customer_id": body["customer_id"],
        "type": body["type"],
        "severity": body.get("severity"),
        "status": body.get("status") or "open",
        "churn_probability": body.get("churn_probability"),
        "expected_value": budget.get("expected_value"),
        "budget": budget.get("name"),
        "what_changed": body.get("what_changed"),
        "message": body.get("message"),
        "recommendation": body.get("recommendation"),
        "opened_at": body.get("opened_at") or body.get("as_of"),
        "deferred_on": body.get("deferred_on"),
        "alert_id": body.get("alert_id"),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def report_page(data: dict[str, Any]) -> str:
    days = list(data["per_day"])
    head = (
        f"<p>Alerts of {escape(data['since'])} .. {escape(data['until'])} (UTC days), read from the alert ledger on "
        f"{escape(data['today'])}. Outcomes settle 30 days after an alert: precision of days after "
        f"{escape(data['settled_before'])} still leans high.</p>"
    )
    types = data["by_type"]
    totals = {
        "alerts": sum(t["alerts"] for t in types.values()),
        "deferred": sum(b["deferred"] for b in data["budgets"].values()),
        "resolved": sum(t["resolved"] for t in types.values()),
        "at risk": len(data["most_at_risk"]),
    }
    cards = "".join(
        f'<div style="display:inline-block;margin:0 18px 12px 0;padding:10px 16px;border:1px solid #ccc;'
        f'border-radius:6px"><div style="font-size:28px;font-weight:bold">{value:,}</div>'
        f'<div style="color:#555">{escape(label)}</div></div>'
        for label, value in totals.items()
    )
    style = "<style>.text td{text-align:left;max-width:420px}</style>"  # sentences read left to right
    sections: list[tuple[str, str]] = [("", style + head + cards)]

    budget_rows = [
        [
            name,
            ", ".join(b["types"]),
            ", ".join(b["tiers"]) if b["tiers"] else "all",
            b["max_per_day"],
            b["sent"],
            b["deferred"],
            b["days_at_cap"],
            ", ".join(f"{t} {n}" for t, n in b["deferred_by_type"].items()) or "-",
        ]
        for name, b in data["budgets"].items()
    ]
    if budget_rows:
        chart = line_chart(
            {
                **{
                    f"{name} sent": [
                        (float(i), float(b["sent_per_day"].get(d, 0))) for i, d in enumerate(days)
                    ]
                    for name, b in data["budgets"].items()
                },
                **{
                    f"{name} cap": [
                        (0.0, float(b["max_per_day"] or 0)),
                        (float(len(days) - 1), float(b["max_per_day"] or 0)),
                    ]
                    for name, b in data["budgets"].items()
                },
            },
            f"day (0 = {data['since']})",
            "alerts sent",
            markers=True,
        )
        sections.append(
            (
                "Budgets: sent and deferred",
                table(
                    [
                        "budget",
                        "types",
                        "tiers",
                        "max / day",
                        "sent",
                        "deferred",
                        "days at cap",
                        "deferred by type",
                    ],
                    budget_rows,
                )
                + chart,
            )
        )
    type_rows = [
        [
            name,
            t["alerts"],
            "n/a" if t["open"] is None else t["open"],
            t["escalated"],
            t["resolved"],
            "n/a" if t["mean_hours_to_resolve"] is None else t["mean_hours_to_resolve"],
            t["confirmed"],
            t["expired"],
            _pct(t["precision"]),
        ]
        for name, t in types.items()
    ]
    sections.append(
        (
            "Alerts by type: open, resolved, precision",
            table(
                [
                    "type",
                    "alerts",
                    "open",
                    "escalated",
                    "resolved",
                    "hours to resolve",
                    "confirmed",
                    "expired",
                    "precision",
                ],
                type_rows,
            )
            + "<p>open: not resolved yet (n/a: the type has no resolve_after_hours); confirmed: the customer "
            "churned within 30 days after the alert; expired: 30 days without churn.</p>",
        )
    )
    sections.append(
        (
            "Alerts opened, deferred and resolved per day",
            line_chart(
                {
                    label: [(float(i), float(data["per_day"][d][key])) for i, d in enumerate(days)]
                    for label, key in (
                        ("opened", "alerts"),
                        ("deferred", "deferred"),
                        ("resolved", "resolved"),
                    )
                },
                f"day (0 = {data['since']})",
                "alerts",
                markers=True,
            ),
        )
    )
    precision = [
        (float(i), float(data["per_day"][d]["precision"]))
        for i, d in enumerate(days)
        if data["per_day"][d]["precision"] is not None
    ]
    resolve = [
        (float(i), float(data["per_day"][d]["mean_hours_to_resolve"]))
        for i, d in enumerate(days)
        if data["per_day"][d]["mean_hours_to_resolve"] is not None
    ]
    whole_period = (0.0, float(max(len(days) - 1, 1)))  # the same days as the charts above
    sections.append(
        (
            "Live precision over time (alerts of each day)",
            line_chart(
                {"precision": precision},
                f"day (0 = {data['since']})",
                "share",
                x_range=whole_period,
                y_range=(0, 1),
                markers=True,
            ),
        )
    )
    sections.append(
        (
            "Time to resolution over time (alerts of each day)",
            line_chart(
                {"mean hours to resolve": resolve},
                f"day (0 = {data['since']})",
                "hours",
                x_range=whole_period,
                markers=True,
            ),
        )
    )
    at_risk = [
        [
            r["customer_id"],
            r["type"],
            r["status"],
            _pct(r["churn_probability"]),
            r["what_changed"] or "-",
            r["recommendation"] or "-",
            r["budget"] or "-",
            r["opened_at"],
        ]
        for r in data["most_at_risk"]
    ]
    sections.append(
        (
            "Customers most at risk (open alerts) and what changed",
            '<div class="text">'
            + table(
                [
                    "customer",
                    "type",
                    "status",
                    "churn risk",
                    "what changed",
                    "recommendation",
                    "budget",
                    "opened",
                ],
                at_risk,
            )
            + "</div>"
            if at_risk
            else "<p>No open alert in the period.</p>",
        )
    )
    deferred = [
        [
            r["deferred_on"],
            r["customer_id"],
            r["type"],
            r["budget"] or "-",
            "n/a" if r["expected_value"] is None else f"{r['expected_value']:.2f}",
            r["what_changed"] or "-",
        ]
        for r in data["deferred"]
    ]
    if deferred:
        sections.append(
            (
                "Deferred alerts (most valuable first): considered again the next day",
                '<div class="text">'
                + table(
                    ["deferred on", "customer", "type", "budget", "expected value", "what changed"], deferred
                )
                + "</div>",
            )
        )
    return page("Alerts report", sections)
