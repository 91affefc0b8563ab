"""The alert ledger: the port and its rules (`worker.alerts.claims`, read its docstring first), the
in-memory twin here, and the DynamoDB adapter (`worker.alerts.dynamodb_ledger`), all importable
from this module."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from features.state import to_us
from worker.alerts.alert_outcomes import (
    Outcome,
    OutcomeStats,
    Resolution,
    day_of,
    deadline_us,
    is_confirmed,
    rank_open,
)
from worker.alerts.budgets import BudgetSlot
from worker.alerts.claims import (
    CHURN_MARKER,
    DEFAULT_LEASE,
    AlertLedger,
    Batching,
    Claim,
    ClaimStatus,
    return_times,
    under_budget,
    utc,
)
from worker.alerts.dynamodb_ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.lifecycle import escalation_of, heartbeat_due, resolution_of, resolve_deadline
from worker.alerts.rules import Alert

__all__ = [
    "CHURN_MARKER",
    "DEFAULT_LEASE",
    "AlertLedger",
    "Claim",
    "ClaimStatus",
    "DynamoDBAlertLedger",
    "MemoryAlertLedger",
    "alert_table_name",
    "create_alert_table",
]


@dataclass
class _Record:
    alert: Alert  # the latest message of the alert (opening, escalation or resolution)
    sent: bool
    lease_until: datetime
    dropped: bool = False  # pending when its customer churned: never sent, out of the sweep
    token: str = field(
        default_factory=lambda: uuid.uuid4().hex
    )  # who holds the claim (new at each take-over)
    # The lifecycle (worker.alerts.lifecycle): the claim's mode, escalation, last firing, deadline.
    resolve_after: timedelta | None = None
    escalated: bool = False
    last_firing: datetime | None = None
    deadline: datetime | None = None  # sent and waiting for its resolution (the sparse index)

    def held(self, status: ClaimStatus) -> Claim:
        return Claim(status, self.stored(), self.token, self.lease_until)

    def stored(self) -> Alert:
        after = None if self.resolve_after is None else self.resolve_after.total_seconds()
        return self.alert.model_copy(
            update={
                "escalating": self.escalated,
                "last_firing_at": self.last_firing,
                "resolve_after_s": after,
            }
        )

    def window_open(self, now: datetime, cooldown: timedelta) -> bool:
        """NO_OPEN_WINDOW, negated: a lifecycle alert until its resolution went out, else its cooldown."""
        if self.resolve_after is not None:
            return not (self.alert.status == "resolved" and self.sent)
        start = self.alert.window_start
        return start is not None and start + cooldown > now


@dataclass
class _AlertRecord:
    """The twin of an alert record (`worker.alerts.alert_outcomes`)."""

    alert: Alert  # stamped with its window
    as_of_us: int
    outcome: Outcome | None = None


@dataclass
class MemoryAlertLedger(Batching):
    """The in-memory twin, same semantics (one process: backtests and tests)."""

    lease: timedelta = DEFAULT_LEASE
    records: dict[tuple[str, str], _Record] = field(default_factory=dict)
    # customer -> (churned_at_us, returned_at_us or None): the `#churned` item
    churned: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    history: dict[str, list[_AlertRecord]] = field(default_factory=dict)  # customer -> alert records
    # (alert day, type, arm) -> [confirmed, expired]: the daily counters
    counters: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    # (alert day, type, arm) -> [escalated, resolved, seconds to resolution]: the lifecycle's counters
    lifecycle_counters: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    # (UTC day, budget) -> units taken; (UTC day, budget) -> max_per_day
    budget_used: dict[tuple[str, str], int] = field(default_factory=dict)
    budget_caps: dict[tuple[str, str], int] = field(default_factory=dict)
    # (customer, type, UTC day) -> the deferred alert (its body), once each
    deferred: dict[tuple[str, str, str], Alert] = field(default_factory=dict)

    def _is_churned(self, customer_id: str) -> bool:
        marker = self.churned.get(customer_id)  # CUSTOMER_NOT_CHURNED, negated
        return marker is not None and not (marker[1] is not None and marker[1] >= marker[0])

    async def claim(
        self,
        alert: Alert,
        now: datetime,
        cooldown: timedelta,
        *,
        resolve_after: timedelta | None = None,
        budget: BudgetSlot | None = None,
    ) -> Claim:
        now = utc(now)
        alert = under_budget(alert, budget)
        if self._is_churned(alert.customer_id):
            return Claim(ClaimStatus.CHURNED, alert)
        key = (alert.customer_id, alert.alert_type.value)
        record = self.records.get(key)
        if record is None or not record.window_open(now, cooldown):
            if budget is not None and not self._take_unit(budget):  # BUDGET_LEFT, negated
                self._defer(alert, budget)
                return Claim(ClaimStatus.DEFERRED, alert)
            record = self.records[key] = _Record(
                alert.with_window(now).model_copy(update={"escalating": False, "escalation_note": None}),
                sent=False,
                lease_until=now + self.lease,
                resolve_after=resolve_after,
                escalated=alert.escalating,  # opened beyond the escalation threshold: never escalated
                last_firing=now,
            )
            self.history.setdefault(alert.customer_id, []).append(
                _AlertRecord(record.alert, to_us(utc(alert.as_of)))
            )
            return record.held(ClaimStatus.NEW)
        if record.sent:
            return self._settled(record, alert, now)
        if record.lease_until > now:
            return Claim(ClaimStatus.IN_FLIGHT, record.stored())
        self._take_over(record, now)
        return record.held(ClaimStatus.PENDING)

    def _settled(self, record: _Record, alert: Alert, now: datetime) -> Claim:
        """A claim inside a window whose latest message went out: escalate it (ESCALATABLE), or
        refresh its last firing (the heartbeat), or nothing."""
        if alert.escalating and not record.escalated and record.alert.status == "open":
            stored = record.stored()
            record.alert = escalation_of(stored, alert, now)
            record.sent, record.escalated, record.last_firing, record.deadline = False, True, now, None
            self._take_over(record, now)
            self._count(record.alert, escalated=1)
            return record.held(ClaimStatus.NEW)
        after = record.resolve_after
        if (
            after is not None
            and record.alert.status != "resolved"
            and heartbeat_due(record.last_firing, now, after)
        ):
            record.last_firing = now
            record.deadline = resolve_deadline(now, after)
        return Claim(ClaimStatus.SUPPRESSED, record.stored())

    def _take_unit(self, budget: BudgetSlot) -> bool:
        key = (budget.day, budget.name)
        self.budget_caps[key] = budget.max_per_day
        if self.budget_used.get(key, 0) >= budget.max_per_day:
            return False
        self.budget_used[key] = self.budget_used.get(key, 0) + 1
        return True

    def _defer(self, alert: Alert, budget: BudgetSlot) -> None:
        self.budget_caps[(budget.day, budget.name)] = budget.max_per_day
        self.deferred.setdefault(
            (alert.customer_id, alert.alert_type.value, budget.day), alert
        )  # NOT_YET_DEFERRED

    def _count(self, alert: Alert, escalated: int = 0, resolved: int = 0, seconds: float = 0.0) -> None:
        """The lifecycle's counters, on the UTC day the alert opened (its window start)."""
        opened = alert.window_start or alert.as_of
        cell = self.lifecycle_counters.setdefault(
            (day_of(to_us(utc(opened))), alert.alert_type.value, alert.arm), [0, 0, 0.0]
        )
        cell[0] += escalated
        cell[1] += resolved
        cell[2] += seconds

    def _take_over(self, record: _Record, now: datetime) -> None:
        record.lease_until = now + self.lease
        record.dropped = False
        record.token = uuid.uuid4().hex

    @property
    def lease_length(self) -> timedelta:
        return self.lease

    async def renew(self, claim: Claim, now: datetime) -> Claim | None:
        record = self.records.get((claim.alert.customer_id, claim.alert.alert_type.value))
        if record is None or record.sent or record.token != claim.token:  # STILL_OUR_CLAIM, negated
            return None
        record.lease_until = utc(now) + self.lease
        return record.held(claim.status)

    async def mark_sent(self, alert: Alert) -> bool:
        record = self.records.get((alert.customer_id, alert.alert_type.value))
        if record is None or record.alert.alert_id != alert.alert_id or record.alert.status != alert.status:
            return False  # SAME_MESSAGE, negated
        record.sent = True
        if record.resolve_after is not None and alert.status != "resolved":
            record.deadline = resolve_deadline(record.last_firing or utc(alert.as_of), record.resolve_after)
        else:
            record.deadline = None
        return True

    async def resolution_candidates(self, now: datetime, limit: int) -> list[Alert]:
        now = utc(now)
        due = sorted(
            (r for r in self.records.values() if r.sent and r.deadline is not None and r.deadline <= now),
            key=lambda r: r.deadline or now,
        )
        found: list[Alert] = []
        for record in due[:limit]:
            if self._is_churned(record.alert.customer_id):
                record.deadline = None  # out of the index, never resolved by message
                continue
            found.append(record.stored())
        return found

    async def resolve(self, alert: Alert, now: datetime) -> Claim | None:
        now = utc(now)
        record = self.records.get((alert.customer_id, alert.alert_type.value))
        if (  # RESOLVABLE, negated
            record is None
            or record.alert.alert_id != alert.alert_id
            or not record.sent
            or record.deadline is None
            or record.deadline > now
            or self._is_churned(alert.customer_id)
        ):
            return None
        opened = record.alert.window_start or record.alert.as_of
        record.alert = resolution_of(record.stored(), now, record.last_firing)
        record.sent, record.deadline = False, None
        self._take_over(record, now)
        self._count(record.alert, resolved=1, seconds=(now - opened).total_seconds())
        return record.held(ClaimStatus.NEW)

    async def resolutions_due(self, now: datetime, limit: int) -> list[Claim]:
        claims = [await self.resolve(alert, now) for alert in await self.resolution_candidates(now, limit)]
        return [claim for claim in claims if claim is not None]

    async def release(self, alerts: Sequence[Alert], now: datetime) -> None:
        for alert in alerts:
            record = self.records.get((alert.customer_id, alert.alert_type.value))
            if record is not None and record.alert.alert_id == alert.alert_id and not record.sent:
                record.lease_until = min(record.lease_until, utc(now))

    async def abandoned(self, now: datetime, limit: int) -> list[Claim]:
        now = utc(now)
        due = sorted(
            (r for r in self.records.values() if not r.sent and not r.dropped and r.lease_until <= now),
            key=lambda r: r.lease_until,
        )
        claims: list[Claim] = []
        for record in due[:limit]:
            if self._is_churned(record.alert.customer_id):
                record.dropped = True
                continue
            self._take_over(record, now)
            claims.append(record.held(ClaimStatus.PENDING))
        return claims

    async def upkeep(self, now: datetime) -> None:
        """Nothing to keep up: one process, one format."""

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        churned_us = to_us(utc(churned_at))
        marker = self.churned.get(customer_id)
        if marker is None or marker[0] < churned_us:  # NEWER_CHURN
            self.churned[customer_id] = (churned_us, None)

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        churned_us, returned_us = return_times(churned_at, signed_up_at)
        marker = self.churned.get(customer_id)
        if marker is None or (
            marker[0] <= churned_us and (marker[1] is None or marker[1] < returned_us)
        ):  # NEWER_RETURN
            self.churned[customer_id] = (churned_us, returned_us)

    async def confirm_churn(self, customer_id: str, churned_at: datetime) -> list[Resolution]:
        churned_us = to_us(utc(churned_at))
        resolved = []
        for record in self.history.get(customer_id, []):
            if record.outcome is not Outcome.CONFIRMED and is_confirmed(record.as_of_us, churned_us):
                resolved.append(self._resolve(record, Outcome.CONFIRMED))
        return resolved

    async def expire_outcomes(self, now: datetime, limit: int) -> list[Resolution]:
        now_us = to_us(utc(now))
        due = sorted(
            (
                r
                for records in self.history.values()
                for r in records
                if r.outcome is None and deadline_us(r.as_of_us) <= now_us
            ),
            key=lambda r: r.as_of_us,
        )
        return [self._resolve(record, Outcome.EXPIRED) for record in due[:limit]]

    def _resolve(self, record: _AlertRecord, outcome: Outcome) -> Resolution:
        was, record.outcome = record.outcome, outcome
        alert = record.alert
        counts = self.counters.setdefault(
            (day_of(record.as_of_us), alert.alert_type.value, alert.arm), [0, 0]
        )
        counts[0 if outcome is Outcome.CONFIRMED else 1] += 1
        if was is Outcome.EXPIRED:
            counts[1] -= 1
        return Resolution(alert.customer_id, alert.alert_type.value, alert.arm, record.as_of_us, outcome, was)

    async def outcome_stats(self, since: date, until: date) -> OutcomeStats:
        stats = OutcomeStats(since, until)
        for (day, alert_type, arm), (confirmed, expired) in self.counters.items():
            stats.add(day, alert_type, arm, confirmed=confirmed, expired=expired)
        for (day, alert_type, arm), (escalated, resolved, seconds) in self.lifecycle_counters.items():
            stats.add(
                day,
                alert_type,
                arm,
                escalated=int(escalated),
                resolved=int(resolved),
                resolve_seconds=seconds,
            )
        for (day, name), cap in self.budget_caps.items():
            stats.add_budget(day, name, sent=self.budget_used.get((day, name), 0), max_per_day=cap)
        for (_, alert_type, day), alert in self.deferred.items():
            if alert.budget is not None:
                stats.add_budget(day, alert.budget.name, alert_type=alert_type, deferred=1)
        for records in self.history.values():
            for record in records:
                if record.outcome is None:
                    stats.add(
                        day_of(record.as_of_us), record.alert.alert_type.value, record.alert.arm, open_=1
                    )
        return stats

    async def open_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """The latest message of every alert of `since` .. `until` (UTC days of its opening) whose
        outcome is still open, most at risk first (`alerts report`)."""
        bodies = []
        for (_, _), record in self.records.items():
            opened = record.alert.window_start or record.alert.as_of
            if not since.isoformat() <= opened.date().isoformat() <= until.isoformat():
                continue
            records = self.history.get(record.alert.customer_id, [])
            if any(r.alert.alert_id == record.alert.alert_id and r.outcome is not None for r in records):
                continue
            bodies.append({**record.alert.body(), "sent": record.sent})
        return rank_open(bodies)[:limit]

    async def deferred_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """Deferred alerts of the UTC days `since` .. `until` (their bodies), highest expected value first."""
        rows = [
            {**alert.body(), "deferred_on": day}
            for (_, _, day), alert in self.deferred.items()
            if since.isoformat() <= day <= until.isoformat()
        ]
        rows.sort(key=lambda b: (-(b.get("budget") or {}).get("expected_value", 0.0), b["customer_id"]))
        return rows[:limit]
