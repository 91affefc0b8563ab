"""The feature-store port and its in-memory adapter.

A store keeps `CustomerState`s and applies batches of already validated, already time-checked
events to them. `apply` is idempotent by event_id: re-applying a batch, or any part of it, changes
nothing and reports the events as duplicates. The DynamoDB adapter lives in `features.dynamodb`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from features.due import MemoryDueIndex, next_due_us
from features.events import Event
from features.state import DAY_US, CustomerState, apply_event, before_events, to_us, utc_day

DEFAULT_RETENTION = timedelta(days=35)


@dataclass
class ApplyResult:
    """What one `apply` did: new state of every touched customer and which events were new."""

    states: dict[str, CustomerState] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)  # event_ids counted now
    duplicates: list[str] = field(default_factory=list)  # event_ids already counted before
    # Each touched customer as read, before this batch's events (`features.state.before_events`):
    # what the worker's previous scoring saw, for "what changed" (worker/alerts/changes.py).
    previous: dict[str, CustomerState] = field(default_factory=dict)

    def merge(self, other: ApplyResult) -> None:
        self.states.update(other.states)
        self.applied += other.applied
        self.duplicates += other.duplicates
        for cid, state in other.previous.items():
            self.previous.setdefault(cid, state)  # the first read: before any part of the batch


class FeatureStore(Protocol):
    async def apply(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        """Fold events into their customers' states, durably, at most once per event_id."""
        ...

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        """Current states (customers never seen get an empty state)."""
        ...


def event_days(events: Iterable[Event]) -> set[int]:
    return {to_us(event.occurred_at) // DAY_US for event in events}


def group_by_customer(events: Iterable[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.customer_id].append(event)
    return grouped


def apply_to_state(
    state: CustomerState, events: Iterable[Event], result: ApplyResult
) -> set[tuple[int, int]]:
    """Apply events to `state` in place; returns the keys of pages that changed."""
    touched: set[tuple[int, int]] = set()
    for event in events:
        page = apply_event(state, event)
        if page is None:
            result.duplicates.append(event.event_id)
        else:
            result.applied.append(event.event_id)
            touched.add((page.day, page.page))
    return touched


def oldest_kept_day(now: datetime, retention: timedelta) -> int:
    """Pages before this day can hold no event the worker would still accept (one day of slack)."""
    return utc_day(now - retention) - 1


class MemoryFeatureStore:
    """In-process twin of the DynamoDB store: same state, same maths. For tests, backtests, `features`.
    With `due` (and `rescore_interval`), a write puts the customer in that twin of the due index the
    way the DynamoDB store's profile Put does."""

    def __init__(
        self,
        retention: timedelta = DEFAULT_RETENTION,
        due: MemoryDueIndex | None = None,
        rescore_interval: timedelta = timedelta(hours=24),
    ) -> None:
        self._retention = retention
        self._due = due
        self._rescore_interval = rescore_interval
        self._states: dict[str, CustomerState] = {}
        self._pruned_at: dict[str, int] = {}  # customer -> the oldest kept day of its last prune

    async def apply(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        return self.apply_sync(events, now)

    def apply_sync(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        result = ApplyResult()
        oldest = oldest_kept_day(now, self._retention)
        for customer_id, customer_events in group_by_customer(events).items():
            state = self._states.setdefault(customer_id, CustomerState(customer_id))
            result.previous[customer_id] = before_events(state, event_days(customer_events))
            touched = apply_to_state(state, customer_events, result)
            if touched:
                state.profile.version += 1
                state.profile.scored_us = to_us(
                    now
                )  # the scoring that follows (DynamoDB's Put does the same)
                if self._due is not None:
                    entry = self._due.entries.get(customer_id)
                    state.profile.due_us = entry[0] if entry else None
                    state.profile.due_us = next_due_us(
                        state, to_us(now), self._rescore_interval, self._retention
                    )
                    self._due.put(customer_id, state.profile.due_us)
            # Pruning looks at every page: only needed when the retention horizon moved since this
            # customer's last prune, or this batch added a page beyond it.
            if self._pruned_at.get(customer_id) != oldest or any(day < oldest for day, _ in touched):
                state.prune(oldest)
                self._pruned_at[customer_id] = oldest
            result.states[customer_id] = state
        return result

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        return {cid: copy.deepcopy(self._states.get(cid) or CustomerState(cid)) for cid in customer_ids}

    def customers(self) -> list[str]:
        return sorted(self._states)
