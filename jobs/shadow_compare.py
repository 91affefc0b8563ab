"""Live model against shadow model, against outcomes: `churn-worker shadow report`.

Both sides are alert logs (`jobs.alert_log`): the shadow log (`worker.shadow`'s
records) and the live alerts (a log of alert bodies, or the ledger's records, both arms). The
comparison covers the period where both exist: from the first to the last shadow alert, both sides
cut to it. Per alert type, for each side, over customers (a customer alerted several times counts
once, so the shadow's in-memory cooldowns do not skew it):

- precision: customers with a settled alert followed by churn within 30 days / customers with a
  settled alert (one whose 30 days lie inside the data; later alerts are censored, churned or not,
  as in the backtest's metrics: jobs/backtest/metrics.py);
- recall: customers who churned in the period with an alert in the 30 days before / customers who
  churned in the period;
- agreement: customers both sides alerted / customers either side alerted.

Interventions follow live alerts, not shadow ones, and prevent some churn: live precision is
biased down against the shadow's. With an experiment on, `--arm control` compares the two models
on the held-out pairs only, where nobody intervened.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from jobs.uplift import DAY_US, AlertRow


def _side(
    rows: list[AlertRow], churned_at_us: Mapping[str, int], end_us: int, horizon_us: int
) -> dict[str, Any]:
    alerted: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        alerted[row.customer_id].append(row.as_of_us)
    confirmed, caught, known = set(), set(), 0
    for customer, times in alerted.items():
        churn = churned_at_us.get(customer)
        if churn is not None and churn <= end_us and any(t < churn <= t + horizon_us for t in times):
            caught.add(customer)  # recall's side: a churner, known whenever the churn came
        settled = [t for t in times if t + horizon_us <= end_us]  # precision's: the backtest's rule
        if settled:
            known += 1
            if churn is not None and any(t < churn <= t + horizon_us for t in settled):
                confirmed.add(customer)
    return {"customers": set(alerted), "confirmed": confirmed, "caught": caught, "known": known}


def compare(
    live: Iterable[AlertRow],
    shadow: Iterable[AlertRow],
    churned_at_us: Mapping[str, int],
    end_us: int,
    *,
    horizon_days: int = 30,
    arm: str | None = None,
) -> dict[str, Any]:
    horizon_us = horizon_days * DAY_US
    shadow_rows = [r for r in shadow if arm is None or r.arm == arm]
    if not shadow_rows:
        return {"start": None, "stop": None, "by_type": {}, "arm": arm, "horizon_days": horizon_days}
    start = min(r.as_of_us for r in shadow_rows)
    stop = max(r.as_of_us for r in shadow_rows)
    live_rows = [r for r in live if start <= r.as_of_us <= stop and (arm is None or r.arm == arm)]
    churners = {c for c, t in churned_at_us.items() if start < t <= end_us}
    report: dict[str, Any] = {
        "start": start,
        "stop": stop,
        "end": end_us,
        "arm": arm,
        "horizon_days": horizon_days,
        "churners": len(churners),
        "by_type": {},
    }
    types = sorted({r.alert_type for r in live_rows} | {r.alert_type for r in shadow_rows})
    for alert_type in [*types, "ALL"]:
        sides: dict[str, dict[str, Any]] = {}
        alerted: dict[str, set[str]] = {}
        for name, rows in (("live", live_rows), ("shadow", shadow_rows)):
            side = _side(
                [r for r in rows if alert_type in ("ALL", r.alert_type)], churned_at_us, end_us, horizon_us
            )
            alerted[name] = side["customers"]
            sides[name] = {
                "customers_alerted": len(side["customers"]),
                "customers_confirmed": len(side["confirmed"]),
                "precision": _ratio(len(side["confirmed"]), side["known"]),
                "recall": _ratio(len(side["caught"] & churners), len(churners)),
            }
        both, either = alerted["live"] & alerted["shadow"], alerted["live"] | alerted["shadow"]
        report["by_type"][alert_type] = {**sides, "agreement": _ratio(len(both), len(either))}
    return report


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def format_comparison(report: dict[str, Any], versions: Mapping[str, list[str]]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1%}"

    head = (
        f"{'alert type':<22} {'live: alerted':>13} {'precision':>9} {'recall':>7}  "
        f"{'shadow: alerted':>15} {'precision':>9} {'recall':>7}  {'agreement':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, row in report["by_type"].items():
        live, shadow = row["live"], row["shadow"]
        lines.append(
            f"{name:<22} {live['customers_alerted']:>13} {pct(live['precision']):>9} {pct(live['recall']):>7}  "
            f"{shadow['customers_alerted']:>15} {pct(shadow['precision']):>9} {pct(shadow['recall']):>7}  "
            f"{pct(row['agreement']):>9}"
        )
    lines.append("")
    lines.append(
        f"live model: {', '.join(versions.get('live') or ['?'])}; shadow model: "
        f"{', '.join(versions.get('shadow') or ['?'])}; {report['churners']} customers churned in the period"
        + (f"; {report['arm']} arm only" if report["arm"] else "")
    )
    lines.append(
        f"customers alerted once or more; precision: churned within {report['horizon_days']} days after an "
        "alert (outcome unknown left out); recall: churners alerted in the 30 days before; agreement: both / "
        "either. Live alerts got interventions: with an experiment, --arm control compares fairly."
    )
    return "\n".join(lines)
