"""A publish slower than the claim lease sends each alert once: the claims it holds are renewed
while it runs, so the outbox sweep (this worker's or another's) never takes them over; a publish
whose leases cannot be renewed stops before they end instead of racing the sweep; and a claim
found taken over is not retried by its old holder. In-memory ledger and publisher, short leases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from worker.alerts.claims import Claim
from worker.alerts.config import AlertsConfig
from worker.alerts.lease_guard import LeaseEndingError, LeaseGuard
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher, SnsAlertPublisher
from worker.alerts.rules import Alert, AlertType, route_alerts

LEASE = timedelta(seconds=0.6)


def wall() -> datetime:
    return datetime.now(UTC)


def spike(customer: str) -> Alert:
    features = {"ib_call_count_14d": 3.0, "session_count_30d": 1.0, "days_since_last_session": 2.0}
    alerts = route_alerts(customer, features, None, AlertsConfig(), wall(), "standard", "m-1")
    return next(alert for alert in alerts if alert.alert_type is AlertType.IB_CALL_SPIKE)


class SlowPublisher(MemoryAlertPublisher):
    """SNS answering after `delay` seconds (what a hung PublishBatch looks like to the worker)."""

    def __init__(self, delay: float) -> None:
        super().__init__(clock=wall)
        self.delay = delay

    async def publish(
        self, alerts: Sequence[Alert], still_ours: Callable[[Alert], bool] | None = None
    ) -> list[Alert]:
        await asyncio.sleep(self.delay)
        return await super().publish(alerts)


async def sweep_until(ledger: MemoryAlertLedger, publisher: MemoryAlertPublisher, stop: asyncio.Event) -> int:
    """The outbox sweep, every tenth of a lease: publishes what it takes over."""
    taken = 0
    while not stop.is_set():
        for claim in await ledger.abandoned(wall(), 10):
            taken += 1
            await publisher.publish([claim.alert])
        await asyncio.sleep(LEASE.total_seconds() / 10)
    return taken


async def claimed(ledger: MemoryAlertLedger, customers: int = 3) -> list[Claim]:
    claims = await ledger.claim_all([spike(f"c-{i}") for i in range(customers)], wall(), AlertsConfig())
    assert all(claim.should_publish for claim in claims)
    return claims


async def test_a_publish_three_leases_long_sends_each_alert_once() -> None:
    ledger = MemoryAlertLedger(lease=LEASE)
    publisher = SlowPublisher(delay=3 * LEASE.total_seconds())
    claims = await claimed(ledger)
    stop = asyncio.Event()
    sweeper = asyncio.create_task(sweep_until(ledger, publisher, stop))
    guard = LeaseGuard(ledger, claims, wall)
    published = await guard.publish(publisher.publish([c.alert for c in claims], guard.holds))
    stop.set()
    assert await sweeper == 0  # the sweep never took a claim over
    ids = [message.body["alert_id"] for message in publisher.messages]
    assert sorted(ids) == sorted(a.alert_id for a in published) and len(set(ids)) == len(ids) == 3
    assert guard.renewals >= 3 and not guard.lost


async def test_without_the_guard_the_sweep_sends_a_second_copy() -> None:
    """The failure the guard prevents, shown on the same parts: it must be possible to detect."""
    ledger = MemoryAlertLedger(lease=LEASE)
    publisher = SlowPublisher(delay=3 * LEASE.total_seconds())
    claims = await claimed(ledger)
    stop = asyncio.Event()
    sweeper = asyncio.create_task(sweep_until(ledger, publisher, stop))
    await publisher.publish([c.alert for c in claims])
    stop.set()
    assert await sweeper == 3
    ids = [message.body["alert_id"] for message in publisher.messages]
    assert len(ids) == 6 and len(set(ids)) == 3


class UnreachableLedger(MemoryAlertLedger):
    async def renew(self, claim: Claim, now: datetime) -> Claim | None:
        raise ConnectionError("ledger unreachable")


async def test_a_publish_whose_leases_cannot_be_renewed_stops_before_they_end() -> None:
    ledger = UnreachableLedger(lease=LEASE)
    publisher = SlowPublisher(delay=10 * LEASE.total_seconds())
    claims = await claimed(ledger)
    guard = LeaseGuard(ledger, claims, wall)
    started = wall()
    with pytest.raises(LeaseEndingError):
        await guard.publish(publisher.publish([c.alert for c in claims], guard.holds))
    earliest = min(claim.lease_until for claim in claims if claim.lease_until is not None)
    assert wall() < earliest + LEASE / 4  # stopped around the margin before the leases ended
    assert wall() - started < 2 * LEASE  # and did not wait for SNS
    assert publisher.messages == []


async def test_a_claim_taken_over_meanwhile_is_not_retried_by_its_old_holder() -> None:
    ledger = MemoryAlertLedger(lease=LEASE)
    [taken] = await claimed(ledger, customers=1)
    await asyncio.sleep(LEASE.total_seconds() * 1.05)  # its lease ends (this holder stalled) ...
    [took_over] = await ledger.abandoned(wall(), 10)
    assert took_over.alert.alert_id == taken.alert.alert_id and took_over.token != taken.token
    [fresh] = await ledger.claim_all([spike("c-fresh")], wall(), AlertsConfig())
    guard = LeaseGuard(ledger, [taken, fresh], wall)
    await guard._renew_all()  # ... which the next renewal finds out
    assert not guard.holds(taken.alert) and guard.holds(fresh.alert)
    assert [claim.alert.alert_id for claim in guard.lost] == [taken.alert.alert_id]

    class NoAnswerOnce:
        """SNS whose first PublishBatch gets no answer (it may have been applied: unknown)."""

        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        async def publish_batch(self, **request: Any) -> dict[str, Any]:
            entries = request["PublishBatchRequestEntries"]
            self.calls.append([json.loads(entry["Message"])["alert_id"] for entry in entries])
            if len(self.calls) == 1:
                raise ReadTimeoutError(endpoint_url="https://sns.example")
            return {"Successful": [{"Id": entry["Id"]} for entry in entries], "Failed": []}

    sns = NoAnswerOnce()
    publisher = SnsAlertPublisher(sns, "arn:aws:sns:us-east-1:1:alerts", clock=wall, backoff_base=0.001)  # type: ignore[arg-type]
    published = await publisher.publish([taken.alert, fresh.alert], guard.holds)
    assert sns.calls == [[taken.alert.alert_id, fresh.alert.alert_id], [fresh.alert.alert_id]]
    assert [alert.alert_id for alert in published] == [fresh.alert.alert_id]
