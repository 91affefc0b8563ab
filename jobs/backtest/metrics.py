"""Alert and model metrics against outcomes: pure numpy, no I/O (the report and `tune` share them).

Definitions (the report states them too; `churn-model evaluate` uses these same functions, so the
two commands measure alike):
- An alert is *confirmed* when its customer churned within 30 days after it (`as_of`). A churn is an
  outcomes `churned_at` or a `customer_churned` event (so a customer who churned and came back counts
  at the first churn too), when the caller passes every churn instant (`Population.churn_times`).
- An alert is *settled* when its 30 days lie inside the data (`as_of` + 30 days <= the end of the
  events), confirmed or not. Alerts of the data's last 30 days are censored in the readings of
  precision, like the labels below: counting those whose customer churned before the end as hits
  and the others as false would read every one of them wrong (the stayers cannot be known yet), and
  keeping only the churned ones would make them all hits. So the readings need 30 days of data
  after an alert (`alerts_settled` says how many there were).
- precision: alerted customers with a confirmed settled alert / customers with a settled alert.
- recall (true positive rate): customers with a confirmed alert / customers who churned during the
  backtest (both sides are churners, known whenever they churned: nothing to censor).
- false positive rate: alerted customers who never churned / customers who never churned.
- false alert share: settled alerts not confirmed / settled alerts (the per-alert reading of "false
  positives").
- lead time: days from a confirmed customer's first confirmed alert to the churn (median).
- volume: alerts per 1,000 customer-weeks, a customer counting from their first scoring instant to
  their churn or the end of the events (simulated files start with sparse history, and customers
  come and go, so customers x span would understate it).
- model: every scoring instant of a customer not yet churned is an example; its label is churn
  within 14 / 30 days after it; instants whose horizon runs past the end of the events are left
  out, churned or not (keeping those that churned, when their stayers cannot be known, would make
  the data's last 30 days all churners). Health MAE compares
  the predicted score with the true health of that day, where outcomes carry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from features.churn_outcomes import NEVER, ChurnTimes, HealthTruth
from features.state import DAY_US
from model.metrics import auc_roc, calibration, roc_points
from model.survivorship import find_survivor_history

CONFIRM_DAYS = 30
# Under the backtest's and evaluate's alert tables: what their `judged` column counts.
JUDGED_NOTE = (
    "judged: customers with a settled alert (30 days of events after it); precision and false "
    "read settled alerts only"
)


@dataclass(frozen=True)
class Population:
    """Customers of the backtest (those with events), their churn times and the span of event time."""

    customers: list[str]
    churn_us: np.ndarray  # per customer, the outcomes' churn time, NEVER if they did not churn
    start_us: int
    end_us: int
    customer_weeks: float | None = None  # exposure: None = every customer over the whole span
    churn_times: ChurnTimes | None = None  # every churn instant; None: `churn_us` only

    def next_churn(self, customer: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        """Per (customer index, time): the first churn strictly after it, NEVER if none."""
        if self.churn_times is None:
            churn = self.churn_us[customer]
            return np.asarray(np.where(churn > t_us, churn, NEVER), dtype=np.int64)
        return self.churn_times.next_after(self.customers, customer, t_us)

    # Cached: the fields never change, and each read walks every customer (the report reads these
    # once per alert type).
    @cached_property
    def _ever(self) -> np.ndarray:
        ever = np.asarray(self.churn_us != NEVER, dtype=bool)
        if self.churn_times is None:
            return ever
        return np.asarray(self.churn_times.churned_ever(self.customers) | ever, dtype=bool)

    @cached_property
    def churners(self) -> int:
        """Customers who churned during the data (after its start)."""
        index = np.arange(len(self.customers))
        after = self.next_churn(index, np.full(len(index), self.start_us, dtype=np.int64))
        return int((after != NEVER).sum())

    @cached_property
    def non_churners(self) -> int:
        return int((~self._ever).sum())

    def never_churned(self, customer: np.ndarray) -> np.ndarray:
        return np.asarray(~self._ever[customer], dtype=bool)

    @property
    def settled_until_us(self) -> int:
        """Alerts up to this instant are settled: their 30 days lie inside the data."""
        return self.end_us - CONFIRM_DAYS * DAY_US

    @property
    def weeks(self) -> float:
        return max(self.end_us - self.start_us, DAY_US) / (7 * DAY_US)

    @property
    def exposure_weeks(self) -> float:
        return self.customer_weeks if self.customer_weeks is not None else len(self.customers) * self.weeks


def customer_weeks(first_us: np.ndarray, churn_us: np.ndarray, end_us: int) -> float:
    """Weeks each customer was there to alert, summed: from their first scoring instant to their
    churn or the end of the events (a customer who signs up late or leaves early counts less)."""
    until = np.minimum(churn_us, end_us)
    return float(np.clip(until - first_us, 0, None).sum() / (7 * DAY_US))


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def confirmation(
    customer: np.ndarray, t_us: np.ndarray, population: Population
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per alert: the customer's next churn after it, whether that churn confirms it (within 30
    days), and whether the alert is settled (its 30 days lie inside the data; see the module's
    definitions). The one rule of the backtest's, `tune`'s, `evaluate`'s and the gate's readings."""
    churn = population.next_churn(customer, t_us)
    confirmed = (churn != NEVER) & (churn - t_us <= CONFIRM_DAYS * DAY_US)
    settled = t_us <= population.settled_until_us
    return churn, confirmed, settled


def alert_stats(
    customer: np.ndarray, t_us: np.ndarray, population: Population, with_outcomes: bool = True
) -> dict[str, Any]:
    """Metrics of one alert type from its alerts' customer indices and `as_of` times."""
    customer = np.asarray(customer, dtype=np.int64)
    t_us = np.asarray(t_us, dtype=np.int64)
    alerted = np.unique(customer)
    exposure = population.exposure_weeks
    per_week = len(t_us) / (exposure / 1000) if exposure > 0 else 0.0
    stats: dict[str, Any] = {
        "alerts": len(t_us),
        "customers_alerted": len(alerted),
        "alerts_per_1000_customers_per_week": round(per_week, 3),
    }
    if not with_outcomes:
        return stats
    churn, confirmed, settled = confirmation(customer, t_us, population)
    hit = np.unique(customer[confirmed])
    lead: float | None = None
    if len(hit):
        order = np.lexsort((t_us[confirmed], customer[confirmed]))
        ordered_customers = customer[confirmed][order]
        _, first = np.unique(ordered_customers, return_index=True)
        first_t = t_us[confirmed][order][first]
        lead = round(float(np.median((churn[confirmed][order][first] - first_t) / DAY_US)), 2)
    false_alarms = int(population.never_churned(alerted).sum())
    settled_customers = np.unique(customer[settled])
    settled_hits = np.unique(customer[settled & confirmed])
    alerts_settled = int(settled.sum())
    stats.update(
        {
            "customers_confirmed": len(hit),
            "alerts_settled": alerts_settled,
            "customers_settled": len(settled_customers),
            "precision": _ratio(len(settled_hits), len(settled_customers)),
            "recall": _ratio(len(hit), population.churners),
            "false_positive_rate": _ratio(false_alarms, population.non_churners),
            "false_alert_share": _ratio(
                float(alerts_settled - int((settled & confirmed).sum())), float(alerts_settled)
            ),
            "median_lead_time_days": lead,
        }
    )
    return stats


def churn_labels(
    population: Population,
    customer: np.ndarray,
    t_us: np.ndarray,
    days: int,
    following: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(churned within `days` after each instant, label known) per row: `features.labels`'
    definition. Rows after the outcomes' churn are not known (the customer was gone).
    `following`: `population.next_churn(customer, t_us)` when the caller has it already (it does
    not depend on `days`)."""
    horizon = days * DAY_US
    alive = population.churn_us[customer] > t_us
    if following is None:
        following = population.next_churn(customer, t_us)
    y = alive & (following != NEVER) & (following - t_us <= horizon)
    known = alive & (t_us + horizon <= population.end_us)
    return y, known


def model_stats(
    columns: dict[str, np.ndarray],
    population: Population,
    health: HealthTruth | None,
    health_labels: np.ndarray | None = None,
    labelled: dict[int, np.ndarray] | None = None,
) -> dict[str, Any]:
    """AUC-ROC and calibration (14d, 30d) and health MAE from the backtest's scoring instants.
    `health_labels`: the observable health label per row (`features.labels`, NaN where censored),
    what the model is trained on; `health`: the simulator's latent health, where outcomes carry it.

    Survivor history (model/survivorship.py) is left out of the churn and health readings: the
    rows `labelled` marks per horizon (the examples' own labels, which the example builder censored
    already), or, without it, the stretch found here from the churn labels of these rows."""
    t = columns["t_us"]
    customer = columns["customer"]
    alive = population.churn_us[customer] > t
    out: dict[str, Any] = {"scoring_instants": int(alive.sum())}
    following = population.next_churn(customer, t)  # the same for both horizons
    by_horizon = {days: churn_labels(population, customer, t, days, following) for days in (14, 30)}
    recorded = np.ones(len(t), dtype=bool)
    if labelled is None:
        y30, known30 = by_horizon[30]
        survivors = find_survivor_history(t[known30], y30[known30].astype(np.float64), population.end_us)
        out["survivor_history"] = survivors.describe() if survivors is not None else None
        if survivors is not None:
            recorded = t >= survivors.until_us
    for days, (y, known) in by_horizon.items():
        known = known & (recorded if labelled is None else labelled[days])
        p = columns[f"churn_risk_{days}d"][known]
        labels = y[known]
        out[f"churn_{days}d"] = {
            "examples": int(known.sum()),
            "churn_rate": _ratio(float(labels.sum()), float(len(labels))),
            "auc_roc": auc_roc(labels, p),
            "roc": roc_points(labels, p),
        }
        out[f"calibration_{days}d"] = calibration(labels, p)
    out["health_mae"] = None
    if health_labels is not None:
        ok = alive & np.isfinite(health_labels) & recorded
        error = np.abs(columns["customer_health_score"][ok] - health_labels[ok])
        out["health_mae"] = round(float(error.mean()), 3) if len(error) else None
        out["health_mae_examples"] = int(ok.sum())
        out["health_mae_label"] = (
            "observable health (features/labels.py): 50 x stayed 30 days + 50 x engagement percentile"
        )
    if health is not None:
        truth = health.at(population.customers, customer, t)
        ok = alive & np.isfinite(truth)
        error = np.abs(columns["customer_health_score"][ok] - truth[ok])
        value = round(float(error.mean()), 3) if len(error) else None
        out["health_mae_vs_simulator_truth"] = value
        if out["health_mae"] is None:
            out["health_mae"] = value
            out["health_mae_examples"] = int(ok.sum())
            out["health_mae_label"] = "the simulator's latent health (<stem>.truth.npz)"
    if out["health_mae"] is None:
        out["health_mae_note"] = "n/a: no health label (events not scanned) and no simulator truth"
    return out


def target(metric: str, goal: str, value: float | None, against: str | None = None) -> dict[str, Any]:
    """One of the seed's targets: "> 0.75" / "< 10"; pass is None when it cannot be measured.
    `against`: what the figure is judged against."""
    threshold = float(goal[1:])
    ok = None if value is None else (value > threshold if goal.startswith(">") else value < threshold)
    out: dict[str, Any] = {"metric": metric, "target": goal, "value": value, "pass": ok}
    if against:
        out["against"] = against
    return out


# What each target is judged against (the targets table says so beside every figure).
AGAINST = {
    "ib_call_spike": "customers the IB_CALL_SPIKE rule alerted (ib_call_count_14d >= its threshold, no model), "
    "confirmed by a churn within 30 days (precision: alerts with 30 days of data after them)",
    "critical_fpr": "customers who never churned (IB_CALL_SPIKE is the only CRITICAL type)",
    "critical_share": "IB_CALL_SPIKE alerts with 30 days of data after them not followed by a churn within 30 days",
    "churn_auc": "churn labels (outcomes and customer_churned events), censored instants left out",
    "health_truth": "the simulator's latent health (<stem>.truth.npz)",
    "health_observable": "the observable health label (features/labels.py): 50 x stayed 30 days + 50 x engagement percentile",
}


def seed_targets(by_type: dict[str, dict[str, Any]], model: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's targets, each alert target in both readings its table allows: IB call spike
    "precision > 75%" measured as precision and as the true positive rate (recall) its
    measurement column names; critical-alert (IB_CALL_SPIKE is the only CRITICAL type) "false
    positive rate < 15%" as the share of customers who stayed that got one and as the share of
    critical alerts that were false. Churn AUC > 0.80 (14 and 30 days), health MAE < 10: against
    the simulator's latent health where the outcomes carry it (the seed's "health score" is that
    latent quantity), else against the observable label. Each target names what it is judged
    against (`against`)."""
    spike = by_type.get("IB_CALL_SPIKE", {})
    truth = model.get("health_mae_vs_simulator_truth")
    health, health_against = (
        (truth, AGAINST["health_truth"])
        if truth is not None
        else (model.get("health_mae"), AGAINST["health_observable"])
    )
    return [
        target("ib_call_spike_precision", "> 0.75", spike.get("precision"), AGAINST["ib_call_spike"]),
        target("ib_call_spike_recall", "> 0.75", spike.get("recall"), AGAINST["ib_call_spike"]),
        target(
            "critical_alert_false_positive_rate",
            "< 0.15",
            spike.get("false_positive_rate"),
            AGAINST["critical_fpr"],
        ),
        target(
            "critical_alert_false_share", "< 0.15", spike.get("false_alert_share"), AGAINST["critical_share"]
        ),
        target("churn_auc_roc_14d", "> 0.80", model["churn_14d"]["auc_roc"], AGAINST["churn_auc"]),
        target("churn_auc_roc_30d", "> 0.80", model["churn_30d"]["auc_roc"], AGAINST["churn_auc"]),
        target("health_score_mae", "< 10", health, health_against),
    ]


def weekly_counts(
    types: Sequence[str], t_us: Sequence[int], start_us: int, names: Sequence[str]
) -> dict[str, list[int]]:
    """Alerts per type per week of event time (week 0 starts at `start_us`), for the report's plot."""
    t = np.asarray(t_us, dtype=np.int64)
    kinds = np.asarray(types, dtype=object)
    weeks = int((t.max() - start_us) // (7 * DAY_US)) + 1 if len(t) else 0
    week = (t - start_us) // (7 * DAY_US) if len(t) else t
    return {name: np.bincount(week[kinds == name], minlength=weeks).tolist() for name in names}
