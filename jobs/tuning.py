"""Threshold sweeps: every rule's thresholds evaluated against outcomes, from one backtest.

Why sweep on the scoring log rather than backtest once per threshold: a rule's thresholds change
which scoring instants trigger it, never the features or the predictions behind them (those depend
only on the events and the model). So the backtest runs once, recording for every scoring instant
of a not-yet-churned customer the rule inputs (three features, five predictions), and each candidate
threshold is a vectorised comparison over those arrays followed by the ledger's cooldown: per
customer, an alert at the first triggering instant, the next at the first triggering instant at
least one cooldown later (`window_start + cooldown <= now`), exactly as `MemoryAlertLedger`
decides. With the thresholds of the config that was backtested this reproduces the backtest's
alerts (tests/unit/test_backtest_tuning.py checks that), and a sweep of ~90 candidates costs
seconds instead of ~90 backtests.

A threshold qualifies when its precision reaches the target, its false positive rate stays within
the limit and it alerts at least `min_alerted` customers whose alert has settled (30 days of events
after it: jobs/backtest/metrics.py; a precision measured on two customers means nothing), and,
with `max_per_day`, it sends at most that many alerts per day on average (a capacity budget:
worker/alerts/budgets.py); among those the best recall wins (ties: fewer alerts). A rule with none
is disabled.

Per segment (`[alerts.<type>.by_tier.<tier>]`): the same sweep on each tier's customers alone (a
customer belongs to the tier of their latest scoring instant), where the tier has at least
`min_segment_outcomes` customers who churned and as many who stayed; its own volume limit is its
share of `max_per_day` (its share of the customers). A tier with fewer outcomes keeps the global
thresholds, and the table and the written file say so; a tier whose choice equals the global one
needs no table of its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.events import TIERS
from features.state import DAY_US
from jobs.backtest.metrics import Population, alert_stats
from worker.alerts.config import AlertsConfig
from worker.config_file import to_toml


@dataclass(frozen=True)
class Candidate:
    rule: str  # the config table: ib_call_spike, ...
    params: dict[str, float]
    label: str


@dataclass(frozen=True)
class TuneTargets:
    precision: float = 0.75
    max_fpr: float = 0.15
    min_alerted: int = 5
    max_per_day: float | None = None  # a capacity budget: at most this many alerts a day on average
    min_segment_outcomes: int = 20  # a tier gets thresholds of its own with this many churners and stayers

    def met(self, stats: dict[str, Any], share: float = 1.0) -> bool:
        """`share`: of the volume limit (a tier's share of the customers)."""
        precision, fpr = stats.get("precision"), stats.get("false_positive_rate")
        within = (
            self.max_per_day is None or stats.get("alerts_per_day", 0.0) <= self.max_per_day * share + 1e-9
        )
        return (
            precision is not None
            and fpr is not None
            and stats.get("customers_settled", stats["customers_alerted"]) >= self.min_alerted
            and precision >= self.precision
            and fpr <= self.max_fpr
            and within
        )


@dataclass
class SegmentResult:
    """One tier's sweep of a rule, or why it keeps the global thresholds."""

    tier: str
    churners: int
    stayers: int
    share: float  # of the customers: its share of --max-per-day
    rows: list[tuple[Candidate, dict[str, Any]]] = field(default_factory=list)
    chosen: Candidate | None = None
    swept: bool = False  # enough outcomes: thresholds of its own

    def note(self, rule_chosen: Candidate | None, min_outcomes: int) -> str:
        if not self.swept:
            return (
                f"by_tier.{self.tier}: too few outcomes ({self.churners} churned, {self.stayers} stayed; "
                f"{min_outcomes} of each needed): the global thresholds apply"
            )
        if self.chosen is None:
            return f"by_tier.{self.tier}: no threshold met the targets on its customers: disabled for it"
        if rule_chosen is not None and self.chosen.params == rule_chosen.params:
            return f"by_tier.{self.tier}: chose the global threshold ({self.chosen.label})"
        return f"by_tier.{self.tier}: chosen {self.chosen.label} on its own customers"


@dataclass
class RuleResult:
    rule: str
    rows: list[tuple[Candidate, dict[str, Any]]] = field(default_factory=list)
    chosen: Candidate | None = None
    segments: list[SegmentResult] = field(default_factory=list)
    min_segment_outcomes: int = 20

    @property
    def enabled(self) -> bool:
        return self.chosen is not None

    def tier_overrides(self) -> dict[str, dict[str, Any]]:
        """The `[alerts.<rule>.by_tier.<tier>]` tables: tiers swept whose choice differs from the rule's."""
        out: dict[str, dict[str, Any]] = {}
        for segment in self.segments:
            if not segment.swept:
                continue
            if segment.chosen is None:
                if self.chosen is not None:
                    out[segment.tier] = {"enabled": False}
                continue
            if self.chosen is None or segment.chosen.params != self.chosen.params:
                params = dict(segment.chosen.params)
                if self.rule == "ib_call_spike":
                    params["min_calls_14d"] = int(params["min_calls_14d"])
                out[segment.tier] = {**params, "enabled": True}
        return out


def _grid(start: float, stop: float, step: float) -> list[float]:
    count = round((stop - start) / step) + 1
    return [round(start + i * step, 4) for i in range(count)]


def candidates() -> dict[str, list[Candidate]]:
    """The sweep per rule, each threshold within what AlertsConfig accepts."""
    velocity = [
        Candidate(
            "session_velocity_drop",
            {"max_predicted_velocity": v, "min_session_frequency_30d": f},
            f"velocity < {v:g} and freq30 > {f:g}",
        )
        for f in (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
        for v in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
        if v < f
    ]
    return {
        "ib_call_spike": [
            Candidate("ib_call_spike", {"min_calls_14d": n}, f"calls14 >= {n}") for n in range(1, 9)
        ],
        "high_churn_risk": [
            Candidate("high_churn_risk", {"min_churn_risk_30d": v}, f"churn30 > {v:g}")
            for v in _grid(0.1, 0.95, 0.05)
        ],
        "health_score_critical": [
            Candidate("health_score_critical", {"max_health_score": v}, f"health < {v:g}")
            for v in _grid(10, 90, 5)
        ],
        "first_session_risk": [
            Candidate("first_session_risk", {"max_first_session_success_prob": v}, f"first-session p < {v:g}")
            for v in _grid(0.1, 0.95, 0.05)
        ],
        "session_velocity_drop": velocity,
    }


Trigger = Callable[[dict[str, np.ndarray], dict[str, float], AlertsConfig], np.ndarray]

# The rules of worker/alerts/rules.py, vectorised, with the same comparisons.
TRIGGERS: dict[str, Trigger] = {
    "ib_call_spike": lambda c, p, _: c["ib_call_count_14d"] >= p["min_calls_14d"],
    "high_churn_risk": lambda c, p, _: c["churn_risk_30d"] > p["min_churn_risk_30d"],
    "health_score_critical": lambda c, p, _: c["customer_health_score"] < p["max_health_score"],
    "first_session_risk": lambda c, p, base: (
        (c["first_session_success_prob"] < p["max_first_session_success_prob"])
        & ~(base.first_session_risk.only_before_first_session & (c["has_first_session"] > 0))
    ),
    "session_velocity_drop": lambda c, p, _: (
        (c["predicted_session_velocity"] < p["max_predicted_velocity"])
        & (c["session_frequency_30d"] > p["min_session_frequency_30d"])
    ),
}


def apply_cooldown(customer: np.ndarray, t_us: np.ndarray, cooldown_us: int) -> tuple[np.ndarray, np.ndarray]:
    """The alerts the ledger lets through among triggering instants: (customer, time) of each."""
    if not len(t_us):
        return customer[:0], t_us[:0]
    order = np.lexsort((t_us, customer))
    c, t = customer[order], t_us[order]
    relative = t - t.min()
    span = int(relative.max()) + cooldown_us + 1
    ids, first, counts = np.unique(c, return_index=True, return_counts=True)
    if len(ids) * span >= 2**62:  # the combined key would overflow: one customer at a time
        picked: list[int] = []
        for start, count in zip(first.tolist(), counts.tolist(), strict=True):
            last: int | None = None
            for i in range(start, start + count):
                if last is None or t[last] + cooldown_us <= t[i]:
                    picked.append(i)
                    last = i
        index = np.asarray(picked, dtype=np.int64)
        return c[index], t[index]
    key = np.repeat(np.arange(len(ids), dtype=np.int64), counts) * span + relative
    cursor, end = first.astype(np.int64), (first + counts).astype(np.int64)
    active = np.arange(len(ids))
    chosen: list[np.ndarray] = []
    while active.size:
        at = cursor[active]
        chosen.append(at)
        following = np.searchsorted(key, key[at] + cooldown_us, side="left")
        more = following < end[active]
        cursor[active[more]] = following[more]
        active = active[more]
    index = np.sort(np.concatenate(chosen))
    return c[index], t[index]


def evaluate(
    columns: dict[str, np.ndarray], population: Population, base: AlertsConfig, candidate: Candidate
) -> dict[str, Any]:
    """Alert metrics the rule would have had with `candidate`'s thresholds (base config otherwise),
    and its volume per day (`alerts_per_day`: the mean over the period, `busiest_day`)."""
    mask = TRIGGERS[candidate.rule](columns, candidate.params, base)
    cooldown_us = int(base.rule(candidate.rule).cooldown.total_seconds() * 1_000_000)
    customer, t = apply_cooldown(columns["customer"][mask], columns["t_us"][mask], cooldown_us)
    stats = alert_stats(customer, t, population)
    days = max(population.end_us - population.start_us, DAY_US) / DAY_US
    stats["alerts_per_day"] = round(len(t) / days, 3)
    stats["busiest_day"] = int(np.unique(t // DAY_US, return_counts=True)[1].max()) if len(t) else 0
    return stats


def _choose(
    rows: list[tuple[Candidate, dict[str, Any]]], targets: TuneTargets, share: float = 1.0
) -> Candidate | None:
    qualified = [(c, s) for c, s in rows if targets.met(s, share)]
    if not qualified:
        return None
    return min(qualified, key=lambda cs: (-cs[1]["recall"], cs[1]["alerts"]))[0]


def segments(
    columns: dict[str, np.ndarray], population: Population
) -> dict[str, tuple[dict[str, np.ndarray], Population]]:
    """Per tier: the scoring rows and the population of its customers (the tier of each customer's
    latest scoring instant; customers of unknown tier are in none)."""
    if "tier" not in columns or not len(columns["customer"]):
        return {}
    order = np.argsort(columns["t_us"], kind="stable")
    latest = np.full(len(population.customers), -1, dtype=np.int64)
    latest[columns["customer"][order]] = columns["tier"][order]
    out: dict[str, tuple[dict[str, np.ndarray], Population]] = {}
    for index, tier in enumerate(TIERS):
        members = np.flatnonzero(latest == index)
        if not len(members):
            continue
        remap = np.full(len(population.customers), -1, dtype=np.int64)
        remap[members] = np.arange(len(members))
        rows = remap[columns["customer"]] >= 0
        part = {name: values[rows] for name, values in columns.items()}
        part["customer"] = remap[columns["customer"][rows]]
        sub = Population(
            customers=[population.customers[i] for i in members.tolist()],
            churn_us=population.churn_us[members],
            start_us=population.start_us,
            end_us=population.end_us,
            customer_weeks=None
            if population.customer_weeks is None
            else population.customer_weeks * len(members) / max(len(population.customers), 1),
            churn_times=population.churn_times,
        )
        out[tier] = (part, sub)
    return out


def sweep(
    columns: dict[str, np.ndarray], population: Population, base: AlertsConfig, targets: TuneTargets
) -> list[RuleResult]:
    results = []
    tiers = segments(columns, population)
    for rule, options in candidates().items():
        result = RuleResult(
            rule,
            [(candidate, evaluate(columns, population, base, candidate)) for candidate in options],
            min_segment_outcomes=targets.min_segment_outcomes,
        )
        result.chosen = _choose(result.rows, targets)
        for tier, (part, sub) in tiers.items():
            segment = SegmentResult(
                tier, sub.churners, sub.non_churners, len(sub.customers) / max(len(population.customers), 1)
            )
            if min(segment.churners, segment.stayers) >= targets.min_segment_outcomes:
                segment.swept = True
                segment.rows = [(candidate, evaluate(part, sub, base, candidate)) for candidate in options]
                segment.chosen = _choose(segment.rows, targets, segment.share)
            result.segments.append(segment)
        results.append(result)
    return results


def chosen_alerts(
    columns: dict[str, np.ndarray], population: Population, base: AlertsConfig, results: list[RuleResult]
) -> tuple[list[str], list[str], list[int]]:
    """(types, customers, as_of µs) of the alerts the chosen thresholds send, each tier with its own
    where it has them: what a budget would see."""
    latest = np.full(len(population.customers), -1, dtype=np.int64)
    if len(columns["customer"]):
        order = np.argsort(columns["t_us"], kind="stable")
        latest[columns["customer"][order]] = columns["tier"][order]
    row_tier = latest[columns["customer"]] if len(columns["customer"]) else np.zeros(0, dtype=np.int64)
    types: list[str] = []
    customers: list[str] = []
    times: list[int] = []
    for result in results:
        own = {TIERS.index(s.tier): s.chosen for s in result.segments if s.swept}
        cooldown_us = int(base.rule(result.rule).cooldown.total_seconds() * 1_000_000)
        for tier in (-1, *range(len(TIERS))):
            candidate = own.get(tier, result.chosen)
            if candidate is None:
                continue
            mask = TRIGGERS[result.rule](columns, candidate.params, base) & (row_tier == tier)
            customer, t = apply_cooldown(columns["customer"][mask], columns["t_us"][mask], cooldown_us)
            types += [result.rule.upper()] * len(t)
            customers += [population.customers[i] for i in customer.tolist()]
            times += t.tolist()
    return types, customers, times


def format_table(results: list[RuleResult], targets: TuneTargets) -> str:
    lines = []
    for result in results:
        head = (
            f"{'[alerts.' + result.rule + ']':<42} {'alerts':>7} {'custs':>6} {'prec':>6} {'recall':>6} {'FPR':>6} "
            f"{'/1k/wk':>7} {'/day':>6}"
        )
        lines += ["", head, "-" * len(head)]
        lines += _rows(result.rows, result.chosen, targets)
        if result.chosen is None:
            budget = (
                f" and <= {targets.max_per_day:g} alerts a day" if targets.max_per_day is not None else ""
            )
            lines.append(
                f"  no threshold reaches precision >= {targets.precision:.0%} with FPR <= {targets.max_fpr:.0%} "
                f"on >= {targets.min_alerted} customers{budget}: rule disabled"
            )
        for segment in result.segments:
            lines.append(f"  {segment.note(result.chosen, targets.min_segment_outcomes)}")
            if segment.swept:
                lines += ["  " + line for line in _rows(segment.rows, segment.chosen, targets, segment.share)]
    return "\n".join(lines[1:])


def _rows(
    rows: list[tuple[Candidate, dict[str, Any]]],
    chosen: Candidate | None,
    targets: TuneTargets,
    share: float = 1.0,
) -> list[str]:
    out = []
    for candidate, s in rows:
        mark = "<- chosen" if candidate is chosen else ("ok" if targets.met(s, share) else "")
        out.append(
            f"  {candidate.label:<40} {s['alerts']:>7} {s['customers_alerted']:>6} {_pct(s['precision']):>6} "
            f"{_pct(s['recall']):>6} {_pct(s['false_positive_rate']):>6} "
            f"{s['alerts_per_1000_customers_per_week']:>7.2f} {s.get('alerts_per_day', 0.0):>6.2f}  {mark}"
        )
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _toml_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string takes JSON's escapes
    return None


def config_text(
    results: list[RuleResult], base: AlertsConfig, other: dict[str, Any], header: list[str]
) -> str:
    """The TOML file: `other` top-level settings carried over, then one `[alerts.<rule>]` table per
    rule with every key of the rule (cooldowns and switches kept from `base`)."""
    lines = [f"# {text}" for text in header] + [""]
    tables: dict[str, Any] = {}
    for key, value in sorted(other.items()):
        rendered = _toml_value(value)
        if key != "alerts" and rendered is not None:
            lines.append(f"{key} = {rendered}")
        elif key != "alerts" and isinstance(value, dict):
            tables[key] = value  # [budgets.<name>], [experiment]: carried over as they were
    for result in results:
        settings = base.rule(result.rule).model_dump()
        if result.chosen is not None:
            settings.update(result.chosen.params)
            if result.rule == "ib_call_spike":
                settings["min_calls_14d"] = int(settings["min_calls_14d"])
        settings["enabled"] = result.enabled
        lines += ["", f"[alerts.{result.rule}]"]
        note = (
            f"# chosen: {result.chosen.label}"
            if result.chosen
            else "# disabled: no threshold met the targets"
        )
        lines.append(note)
        lines += [
            f"{key} = {_toml_value(value)}"
            for key, value in settings.items()
            if _toml_value(value) is not None
        ]
        overrides = result.tier_overrides()
        lines += [
            f"# {segment.note(result.chosen, result.min_segment_outcomes)}"
            for segment in result.segments
            if segment.tier not in overrides
        ]
        for segment in result.segments:
            if segment.tier not in overrides:
                continue
            lines += ["", f"[alerts.{result.rule}.by_tier.{segment.tier}]"]
            lines.append(f"# {segment.note(result.chosen, result.min_segment_outcomes)}")
            lines += [
                f"{key} = {_toml_value(value)}"
                for key, value in overrides[segment.tier].items()
                if _toml_value(value) is not None
            ]
    if tables:
        lines += ["", to_toml(tables).rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)
