"""The A/B holdout for interventions: which alerts the retention team acts on, and which it does not.

`[experiment]` in the config: `control_fraction` (default 0: no experiment, every alert is
`treatment`) and `salt`. Each (customer, alert type) is assigned `treatment` or `control` by a
stable hash of the salt, the customer and the type, so:
- the assignment needs no state and no coordination: every worker, every redelivery, the backtest
  and `churn-worker uplift` compute the same arm;
- a customer stays in one arm for a type for the whole experiment (repeat alerts after a cooldown
  do not switch them), which is what a per-customer churn comparison needs;
- a new salt starts a new experiment with a fresh, independent split.
Control alerts are claimed and recorded exactly like treatment alerts (same ledger, same cooldowns:
the comparison is alert for alert) but are not published to the retention topic.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Arm = Literal["treatment", "control"]
TREATMENT: Arm = "treatment"
CONTROL: Arm = "control"
_BUCKETS = 10_000  # assignment resolution: control_fraction is honoured to 0.01 %


class ExperimentConfig(BaseModel):
    """`[experiment]`: the holdout. `control_fraction = 0.5` withholds half the alerting customers'
    alerts (per alert type) from the retention team, to measure what the interventions achieve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    control_fraction: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="share of (customer, alert type) pairs held out as control"
    )
    salt: str = Field(
        default="churn-alerts",
        min_length=1,
        max_length=200,
        description="changing it starts a new, independent assignment",
    )

    @property
    def active(self) -> bool:
        return self.control_fraction > 0


def assign_arm(customer_id: str, alert_type: str, experiment: ExperimentConfig) -> Arm:
    """The arm of a (customer, alert type) pair: stable for a salt, uniform over customers."""
    if not experiment.active:
        return TREATMENT
    key = f"{experiment.salt}|{customer_id}|{alert_type}".encode()
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % _BUCKETS
    return CONTROL if bucket < round(experiment.control_fraction * _BUCKETS) else TREATMENT
