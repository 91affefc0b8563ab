"""What the interventions achieved: churn after an alert, treatment arm against control.

The unit is a (customer, alert type) pair, the unit the experiment assigns
(`worker.alerts.experiment`): its first alert in the period decides the pair's arm and start, and
its outcome is whether the customer churned within `horizon_days` after that alert's `as_of`. A pair
whose horizon runs past the end of the data is censored (left out), churned or not: never counted
as "stayed" for want of data, and never as "churned" either, since keeping the pairs near the end
whose customer left while their stayers cannot be known would inflate both arms' churn rates. The
same rule as the backtest's metrics and the labels.

Per alert type and over all types: churn rate per arm, the difference (treatment - control, so a
negative number is churn prevented) with a 95 % confidence interval and a two-sided p-value
(normal approximation for two independent proportions, unpooled standard error: sound from a few
dozen pairs per arm with a few churners in each; the table says when an arm is smaller), and how
many pairs per arm an effect of a given size needs for 80 % power at the 5 % level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from worker.alerts.experiment import CONTROL, TREATMENT

DAY_US = 86_400_000_000
CONFIDENCE = 0.95
POWER = 0.80
ALPHA = 0.05
MIN_PAIRS_PER_ARM = 30  # below this the normal approximation is rough: said in the output
EFFECTS = (0.02, 0.05, 0.10)  # absolute churn reductions the power table is printed for
_Z = NormalDist()


@dataclass(frozen=True)
class AlertRow:
    customer_id: str
    alert_type: str
    as_of_us: int
    arm: str


@dataclass(frozen=True)
class ArmStats:
    pairs: int
    churned: int

    @property
    def rate(self) -> float | None:
        return self.churned / self.pairs if self.pairs else None


def first_alerts(alerts: Iterable[AlertRow]) -> dict[tuple[str, str], AlertRow]:
    """The first alert of each (customer, type) pair."""
    first: dict[tuple[str, str], AlertRow] = {}
    for row in alerts:
        key = (row.customer_id, row.alert_type)
        if key not in first or row.as_of_us < first[key].as_of_us:
            first[key] = row
    return first


def outcome(row: AlertRow, churned_at_us: int | None, end_us: int, horizon_days: int) -> bool | None:
    """Churned within the horizon after the alert (True), stayed through it (False), or censored
    (None: the horizon runs past the end of the data, whatever happened before the end)."""
    horizon_end = row.as_of_us + horizon_days * DAY_US
    if horizon_end > end_us:
        return None
    return churned_at_us is not None and row.as_of_us < churned_at_us <= horizon_end


def difference(treatment: ArmStats, control: ArmStats) -> dict[str, float | None]:
    """Treatment minus control churn rate, its 95 % CI and two-sided p-value."""
    if not treatment.pairs or not control.pairs:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None}
    pt, pc = treatment.churned / treatment.pairs, control.churned / control.pairs
    diff = pt - pc
    se = math.sqrt(pt * (1 - pt) / treatment.pairs + pc * (1 - pc) / control.pairs)
    z = _Z.inv_cdf(0.5 + CONFIDENCE / 2)
    if se == 0:
        return {"difference": diff, "ci_low": diff, "ci_high": diff, "p_value": 1.0 if diff == 0 else 0.0}
    p_value = 2 * (1 - _Z.cdf(abs(diff) / se))
    return {"difference": diff, "ci_low": diff - z * se, "ci_high": diff + z * se, "p_value": p_value}


def pairs_for_power(
    control_rate: float, effect: float, power: float = POWER, alpha: float = ALPHA
) -> int | None:
    """Pairs per arm to detect an absolute churn reduction of `effect` from `control_rate` (two-sided
    test of two proportions). None when the effect cannot exist at this rate."""
    p1, p2 = control_rate, control_rate - effect
    if not 0 < p1 < 1 or not 0 <= p2 < 1 or effect <= 0:
        return None
    z_a, z_b = _Z.inv_cdf(1 - alpha / 2), _Z.inv_cdf(power)
    p_bar = (p1 + p2) / 2
    n = (
        z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    ) ** 2 / effect**2
    return math.ceil(n)


def uplift(
    alerts: Iterable[AlertRow],
    churned_at_us: Mapping[str, int],
    end_us: int,
    *,
    horizon_days: int = 30,
    effects: tuple[float, ...] = EFFECTS,
) -> dict[str, Any]:
    """The report: per type (and `ALL`), arms, difference with CI, power table, censored pairs."""
    pairs = first_alerts(alerts)
    groups: dict[str, dict[str, list[bool]]] = {}
    censored: dict[str, int] = {}
    for (customer, alert_type), row in sorted(pairs.items()):
        result = outcome(row, churned_at_us.get(customer), end_us, horizon_days)
        for group in (alert_type, "ALL"):
            if result is None:
                censored[group] = censored.get(group, 0) + 1
                continue
            groups.setdefault(group, {TREATMENT: [], CONTROL: []}).setdefault(row.arm, []).append(result)
    report: dict[str, Any] = {"horizon_days": horizon_days, "confidence": CONFIDENCE, "by_type": {}}
    for group in sorted(groups, key=lambda g: (g == "ALL", g)):
        arms = {arm: ArmStats(len(values), sum(values)) for arm, values in groups[group].items()}
        treatment, control = arms.get(TREATMENT, ArmStats(0, 0)), arms.get(CONTROL, ArmStats(0, 0))
        base = control.rate
        report["by_type"][group] = {
            "treatment": {
                "pairs": treatment.pairs,
                "churned": treatment.churned,
                "churn_rate": treatment.rate,
            },
            "control": {"pairs": control.pairs, "churned": control.churned, "churn_rate": control.rate},
            **difference(treatment, control),
            "censored": censored.get(group, 0),
            "small_sample": min(treatment.pairs, control.pairs) < MIN_PAIRS_PER_ARM,
            "pairs_per_arm_for_80pct_power": {
                f"{effect:g}": (pairs_for_power(base, effect) if base is not None else None)
                for effect in effects
            },
        }
    return report


def format_uplift(report: dict[str, Any]) -> str:
    """The table for people."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.1%}" if value < 0 else f"{value:.1%}"

    head = (
        f"{'alert type':<22} {'treated':>8} {'churn':>7} {'control':>8} {'churn':>7} "
        f"{'difference (95% CI)':>28} {'p':>6}"
    )
    lines = [head, "-" * len(head)]
    for name, s in report["by_type"].items():
        t, c = s["treatment"], s["control"]
        if s["difference"] is None:
            diff = "n/a (an arm is empty)"
        else:
            diff = f"{s['difference'] * 100:+.1f} pts [{s['ci_low'] * 100:+.1f}, {s['ci_high'] * 100:+.1f}]"
        p = "n/a" if s["p_value"] is None else f"{s['p_value']:.3f}"
        flag = "  (few pairs)" if s["small_sample"] else ""
        lines.append(
            f"{name:<22} {t['pairs']:>8} {pct(t['churn_rate']):>7} {c['pairs']:>8} {pct(c['churn_rate']):>7} "
            f"{diff:>28} {p:>6}{flag}"
        )
    lines += [
        "",
        f"pairs per arm for {POWER:.0%} power (two-sided, {ALPHA:.0%} level), by absolute churn reduction:",
    ]
    for name, s in report["by_type"].items():
        needs = ", ".join(
            f"-{float(e) * 100:g} pts: {n if n is not None else 'n/a'}"
            for e, n in s["pairs_per_arm_for_80pct_power"].items()
        )
        lines.append(f"  {name:<22} {needs}")
    lines.append(
        f"\na (customer, alert type) pair counts from its first alert; {report['horizon_days']}-day "
        "outcomes; pairs whose horizon passes the end of the data are left out (censored)."
    )
    return "\n".join(lines)
