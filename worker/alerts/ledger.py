"""The alert ledger: the port and its rules (`worker.alerts.claims`, read its docstring first), the
in-memory twin here, and the DynamoDB adapter (`worker.alerts.dynamodb_ledger`), all importable
from this module."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from features.state import to_us
from worker.alerts.alert_outcomes import Outcome, OutcomeStats, Resolution, day_of, deadline_us, is_confirmed
from worker.alerts.claims import (
    CHURN_MARKER,
    DEFAULT_LEASE,
    AlertLedger,
    Batching,
    Claim,
    ClaimStatus,
    return_times,
    utc,
)
from worker.alerts.dynamodb_ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
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
    alert: Alert
    sent: bool
    lease_until: datetime
    dropped: bool = False  # pending when its customer churned: never sent, out of the sweep
    token: str = field(
        default_factory=lambda: uuid.uuid4().hex
    )  # who holds the claim (new at each take-over)

    def held(self, status: ClaimStatus) -> Claim:
        return Claim(status, self.alert, self.token, self.lease_until)


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

    def _is_churned(self, customer_id: str) -> bool:
        marker = self.churned.get(customer_id)  # CUSTOMER_NOT_CHURNED, negated
        return marker is not None and not (marker[1] is not None and marker[1] >= marker[0])

    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim:
        now = utc(now)
        if self._is_churned(alert.customer_id):
            return Claim(ClaimStatus.CHURNED, alert)
        key = (alert.customer_id, alert.alert_type.value)
        record = self.records.get(key)
        if record is None or record.alert.window_start is None or record.alert.window_start + cooldown <= now:
            record = self.records[key] = _Record(
                alert.with_window(now), sent=False, lease_until=now + self.lease
            )
            self.history.setdefault(alert.customer_id, []).append(
                _AlertRecord(record.alert, to_us(utc(alert.as_of)))
            )
            return record.held(ClaimStatus.NEW)
        if record.sent:
            return Claim(ClaimStatus.SUPPRESSED, record.alert)
        if record.lease_until > now:
            return Claim(ClaimStatus.IN_FLIGHT, record.alert)
        self._take_over(record, now)
        return record.held(ClaimStatus.PENDING)

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
        if record is None or record.alert.alert_id != alert.alert_id:
            return False
        record.sent = True
        return True

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
        for records in self.history.values():
            for record in records:
                if record.outcome is None:
                    stats.add(
                        day_of(record.as_of_us), record.alert.alert_type.value, record.alert.arm, open_=1
                    )
        return stats
