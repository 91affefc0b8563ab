"""Capacity budgets: how many alerts a retention team can act on per UTC day.

`[budgets.<name>]` in the settings file:

```toml
[budgets.callcenter]
types = ["IB_CALL_SPIKE"]        # the alert types it covers
tiers = ["premium", "standard"]  # optional: only customers of these tiers (default: every tier)
max_per_day = 40                 # alerts it lets out per UTC day
```

A (type, tier) pair belongs to at most one budget (overlaps are refused when the settings load), so
every alert has one budget or none. Alerts without a budget go out as before.

The rules (the invariants the ledger keeps: `worker.alerts.claims`):

- **Never more than `max_per_day`.** A budget's day is counted by one ledger item, moved in the
  claim's own transaction by a conditional increment (`BUDGET_LEFT` in
  `worker.alerts.dynamodb_ledger`): however many workers claim at once, across redeliveries and
  restarts, a new alert opens only while the count is below the cap, and every alert that opened
  took exactly one unit. Re-publishing a claim, escalating or resolving an alert take none.
- **Highest expected value first.** The alerts of one batch that fall under one budget are claimed
  one at a time in descending `expected_value`, so none of them is deferred while a lower-valued
  one of the same batch goes out. Across batches it is first come, first served: a day's budget is
  not held back for alerts that may come later.
- **The rest is deferred**, not dropped: recorded in the ledger as `deferred` (once per customer,
  type and day, whatever the redeliveries; counted per budget, type and day, shown by `alerts stats`
  and `alerts report`), never published, opening no cooldown window. The customer is marked due at
  the next UTC day's start, so the sweeper routes them again then, events or not; if the alert
  still qualifies it competes for that day's budget.

Expected value (a simple, documented choice): `churn_risk_30d x max(payment_amount_30d, 1)`, the
30-day churn probability times the revenue at stake (what the customer paid in the last 30 days,
at least 1 USD so that probability still orders customers who paid nothing). An alert routed without
the model (`rules_only`) counts probability 1: during an outage those alerts rank by revenue alone.
The measured uplift of each alert type (`churn-worker uplift`) would be the next factor, once a
holdout has enough pairs; it is not used yet.

Both experiment arms draw on the budget alike (control alerts are claimed exactly like treatment
ones, so the holdout stays alert for alert): with an experiment on, the retention team receives the
treatment share of `max_per_day`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from worker.alerts.config import TIER_NAMES, Tier

ALERT_TYPES = (
    "IB_CALL_SPIKE",
    "HIGH_CHURN_RISK",
    "HEALTH_SCORE_CRITICAL",
    "FIRST_SESSION_RISK",
    "SESSION_VELOCITY_DROP",
)
VALUE_FEATURE = "payment_amount_30d"  # USD paid in the last 30 days: the revenue at stake
MIN_VALUE = 1.0


class BudgetConfig(BaseModel):
    """One `[budgets.<name>]` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    types: tuple[str, ...] = Field(min_length=1, description="alert types this budget covers")
    tiers: tuple[Tier, ...] | None = Field(default=None, description="only these tiers (default: all)")
    max_per_day: int = Field(ge=0, le=1_000_000, description="alerts let out per UTC day")

    @field_validator("types", "tiers", mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        """From the environment a list is text: JSON (`["IB_CALL_SPIKE"]`) or comma-separated."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in ALERT_TYPES]
        if unknown:
            raise ValueError(f"unknown alert type {unknown[0]!r} (one of {', '.join(ALERT_TYPES)})")
        if len(set(value)) != len(value):
            raise ValueError("a type is listed twice")
        return value

    def covers(self, alert_type: str, tier: str | None) -> bool:
        if alert_type not in self.types:
            return False
        return self.tiers is None or tier in self.tiers


class BudgetsConfig(RootModel[dict[str, BudgetConfig]]):
    """`[budgets.<name>]` tables, by name. A (type, tier) pair may belong to one budget only."""

    model_config = ConfigDict(frozen=True)
    root: dict[str, BudgetConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _no_overlap(self) -> Self:
        owner: dict[tuple[str, str | None], str] = {}
        for name, budget in self.root.items():
            if not name or not all(c.isalnum() or c in "_-" for c in name) or len(name) > 64:
                raise ValueError(f"budget name {name!r}: use 1-64 letters, digits, '_' or '-'")
            tiers: tuple[str | None, ...] = budget.tiers or (*TIER_NAMES, None)
            for alert_type in budget.types:
                for tier in tiers:
                    other = owner.setdefault((alert_type, tier), name)
                    if other != name:
                        raise ValueError(
                            f"budgets {other!r} and {name!r} both cover {alert_type} for "
                            f"{tier or 'customers of unknown tier'}: an alert may have one budget only"
                        )
        return self

    def __bool__(self) -> bool:
        return bool(self.root)

    def items(self) -> list[tuple[str, BudgetConfig]]:
        return list(self.root.items())

    def budget_for(self, alert_type: str, tier: str | None) -> tuple[str, BudgetConfig] | None:
        for name, budget in self.root.items():
            if budget.covers(alert_type, tier):
                return name, budget
        return None


@dataclass(frozen=True)
class BudgetSlot:
    """What a claim under a budget needs: the budget's name, the UTC day of the claim and its cap."""

    name: str
    day: str  # YYYY-MM-DD (UTC)
    max_per_day: int


def slot_for(
    budgets: BudgetsConfig | None, alert_type: str, tier: str | None, now: datetime
) -> BudgetSlot | None:
    if not budgets:
        return None
    found = budgets.budget_for(alert_type, tier)
    if found is None:
        return None
    name, budget = found
    return BudgetSlot(name, utc_day(now).isoformat(), budget.max_per_day)


def utc_day(moment: datetime) -> date:
    if moment.tzinfo is None:
        raise ValueError("budget days need timezone-aware instants")
    return moment.astimezone(UTC).date()


def next_day_start(moment: datetime) -> datetime:
    """When a deferred alert is considered again: the next UTC day's first instant."""
    day = utc_day(moment) + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def expected_value(churn_probability: float | None, features: Mapping[str, float]) -> float:
    """Churn probability (1 when the model did not score) x the revenue at stake (USD, at least 1)."""
    try:
        value = float(features[VALUE_FEATURE])
    except KeyError:
        value = 0.0
    probability = 1.0 if churn_probability is None else float(churn_probability)
    return round(probability * max(value, MIN_VALUE), 6)
