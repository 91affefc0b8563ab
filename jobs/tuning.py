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
the limit and it alerts at least `min_alerted` customers (a precision measured on two customers
means nothing); among those the best recall wins (ties: fewer alerts). A rule with none is disabled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.backtest.metrics import Population, alert_stats
from worker.alerts.config import AlertsConfig


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

    def met(self, stats: dict[str, Any]) -> bool:
        precision, fpr = stats.get("precision"), stats.get("false_positive_rate")
        return (
            precision is not None
            and fpr is not None
            and stats["customers_alerted"] >= self.min_alerted
            and precision >= self.precision
            and fpr <= self.max_fpr
        )


@dataclass
class RuleResult:
    rule: str
    rows: list[tuple[Candidate, dict[str, Any]]] = field(default_factory=list)
    chosen: Candidate | None = None

    @property
    def enabled(self) -> bool:
        return self.chosen is not None


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
    """Alert metrics the rule would have had with `candidate`'s thresholds (base config otherwise)."""
    mask = TRIGGERS[candidate.rule](columns, candidate.params, base)
    cooldown_us = int(base.rule(candidate.rule).cooldown.total_seconds() * 1_000_000)
    customer, t = apply_cooldown(columns["customer"][mask], columns["t_us"][mask], cooldown_us)
    return alert_stats(customer, t, population)


def sweep(
    columns: dict[str, np.ndarray], population: Population, base: AlertsConfig, targets: TuneTargets
) -> list[RuleResult]:
    results = []
    for rule, options in candidates().items():
        result = RuleResult(
            rule, [(candidate, evaluate(columns, population, base, candidate)) for candidate in options]
        )
        qualified = [(c, s) for c, s in result.rows if targets.met(s)]
        if qualified:
            result.chosen = min(qualified, key=lambda cs: (-cs[1]["recall"], cs[1]["alerts"]))[0]
        results.append(result)
    return results


def format_table(results: list[RuleResult], targets: TuneTargets) -> str:
    lines = []
    for result in results:
        head = f"{'[alerts.' + result.rule + ']':<42} {'alerts':>7} {'custs':>6} {'prec':>6} {'recall':>6} {'FPR':>6} {'/1k/wk':>7}"
        lines += ["", head, "-" * len(head)]
        for candidate, s in result.rows:
            mark = "<- chosen" if candidate is result.chosen else ("ok" if targets.met(s) else "")
            lines.append(
                f"  {candidate.label:<40} {s['alerts']:>7} {s['customers_alerted']:>6} {_pct(s['precision']):>6} "
                f"{_pct(s['recall']):>6} {_pct(s['false_positive_rate']):>6} "
                f"{s['alerts_per_1000_customers_per_week']:>7.2f}  {mark}"
            )
        if result.chosen is None:
            lines.append(
                f"  no threshold reaches precision >= {targets.precision:.0%} with FPR <= {targets.max_fpr:.0%} "
                f"on >= {targets.min_alerted} customers: rule disabled"
            )
    return "\n".join(lines[1:])


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
    for key, value in sorted(other.items()):
        rendered = _toml_value(value)
        if key != "alerts" and rendered is not None:
            lines.append(f"{key} = {rendered}")
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
    return "\n".join(lines) + "\n"


def write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)
