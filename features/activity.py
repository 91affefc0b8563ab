"""Who is active, and when a customer is scored without an event: one definition for everyone.

The backtest, `tune`, training examples (`churn-model train --events`) and the live worker's
re-scoring of quiet customers all use these, so a model is trained on the population and at the
instants it is later judged and run on.

Active at `as_of`:
- known: the customer has at least one event at or before `as_of`. A log that starts after a
  customer signed up has no `customer_signed_up` for them; such a customer counts as signed up
  before the log began, not as a stranger.
- not churned: no `customer_churned`, or a `customer_signed_up` at or after the latest churn (a
  customer who churns and signs up at the same instant is back: the sign-up is the later intent);
- inside retention: their latest event is at most `retention` before `as_of`. Past that the store
  holds no window data for them (pages expire), so there is nothing left to score.

Scoring instants: the last microsecond of each UTC day (`day_end_us`). Every active customer is
scored at least once per UTC day at that instant; windows count whole UTC days up to the day of
`as_of` (features/windows.py), so a day-end score sees every event of that day.
"""

from __future__ import annotations

from datetime import timedelta

from features.state import DAY_US, CustomerState, Profile

RESCORE_TRIGGER = "rescore"
EVENT_TRIGGER = "event"


def day_end_us(day: int) -> int:
    """The scoring instant of UTC day `day` (days since 1970-01-01): its last microsecond."""
    return (day + 1) * DAY_US - 1


def has_churned(profile: Profile) -> bool:
    """A `customer_churned` after the latest sign-up (ties go to the sign-up: the customer is back)."""
    last = profile.last_us
    return last.get("customer_churned", -1) > last.get("customer_signed_up", -1)


def latest_event_us(profile: Profile) -> int | None:
    return max(profile.last_us.values()) if profile.last_us else None


def is_active(state: CustomerState, as_of_us: int, retention: timedelta) -> bool:
    """Known, not churned and inside retention at `as_of_us` (see the module docstring)."""
    profile = state.profile
    if profile.first_seen_us is None or profile.first_seen_us > as_of_us:
        return False
    if has_churned(profile):
        return False
    latest = latest_event_us(profile)
    retention_us = (retention.days * 86_400 + retention.seconds) * 1_000_000 + retention.microseconds
    return latest is not None and latest >= as_of_us - retention_us
