"""Alerts per day against each capacity budget (`[budgets.<name>]`, worker/alerts/budgets.py), for
`backtest` and `tune`. Pure numbers, no I/O.

A backtest measures the demand: every alert the rules let through (its alerts.jsonl), counted per
UTC day of its `as_of` under the budget that covers its type and the customer's tier. The live
worker lets out at most `max_per_day` of them a day, highest expected value first, and defers the
rest to the next day; the backtest does not enforce budgets (a sharded backtest has no one place
to count a day in, and its results must not depend on the number of shards), so these figures say
how often, and by how much, a budget would be exceeded: `days_over` and `over_budget` (the alerts
that would have waited at least a day).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from features.events import TIERS
from features.state import DAY_US
from worker.alerts.budgets import BudgetsConfig


def latest_tiers(customers: Sequence[str], columns: Mapping[str, np.ndarray]) -> dict[str, str | None]:
    """Each customer's tier at their latest scoring instant (a scoring log's columns)."""
    tiers: dict[str, str | None] = {}
    order = np.argsort(columns["t_us"], kind="stable")
    for index, tier in zip(columns["customer"][order].tolist(), columns["tier"][order].tolist(), strict=True):
        tiers[customers[index]] = TIERS[tier] if tier >= 0 else None
    return tiers


def daily_counts(
    types: Sequence[str],
    customers: Sequence[str],
    as_of_us: Sequence[int],
    tiers: Mapping[str, str | None],
    budgets: BudgetsConfig,
) -> dict[str, Counter[int]]:
    """Per budget: alerts per UTC day (days since the epoch)."""
    out: dict[str, Counter[int]] = {name: Counter() for name, _ in budgets.items()}
    for kind, cid, t in zip(types, customers, as_of_us, strict=True):
        found = budgets.budget_for(kind, tiers.get(cid))
        if found is not None:
            out[found[0]][int(t) // DAY_US] += 1
    return out


def usage(
    counts: Mapping[str, Counter[int]], budgets: BudgetsConfig, first_day: int, last_day: int
) -> dict[str, dict[str, Any]]:
    """Per budget over the days `first_day` .. `last_day` (days without an alert count as 0)."""
    days = max(last_day - first_day + 1, 1)
    report: dict[str, dict[str, Any]] = {}
    for name, budget in budgets.items():
        per_day = np.asarray([counts[name].get(day, 0) for day in range(first_day, first_day + days)])
        over = np.maximum(per_day - budget.max_per_day, 0)
        report[name] = {
            "types": list(budget.types),
            "tiers": list(budget.tiers) if budget.tiers else None,
            "max_per_day": budget.max_per_day,
            "days": days,
            "alerts": int(per_day.sum()),
            "mean_per_day": round(float(per_day.mean()), 2),
            "p90_per_day": float(np.percentile(per_day, 90)),
            "busiest_day": int(per_day.max()),
            "days_over": int((over > 0).sum()),
            "over_budget": int(over.sum()),
            "per_day": [int(v) for v in per_day],
        }
    return report


def format_usage(report: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        f"{'budget':<18} {'max/day':>7} {'mean/day':>8} {'p90/day':>7} {'busiest':>7} "
        f"{'days over':>9} {'over budget':>11}"
    )
    lines = [head, "-" * len(head)]
    for name, u in report.items():
        lines.append(
            f"{name:<18} {u['max_per_day']:>7} {u['mean_per_day']:>8.2f} {u['p90_per_day']:>7.1f} "
            f"{u['busiest_day']:>7} {u['days_over']:>9} {u['over_budget']:>11}"
        )
    lines.append(
        "over budget: alerts the live worker would defer to a later day (highest expected value first)"
    )
    return "\n".join(lines)
