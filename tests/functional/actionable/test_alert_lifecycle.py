"""The alert lifecycle (worker/alerts/lifecycle.py): open, escalated, resolved, through the live
pipeline and sweeper on moto, published to a FIFO SNS topic (read back through a subscribed queue),
and the ledger's rules on both adapters.

What must hold (L1-L6 of worker/alerts/lifecycle.py):
- the escalation and the resolution are messages of their own with the original alert_id and their
  status; a FIFO topic does not drop them as duplicates of the opening;
- each is published once, whatever the redeliveries and however many sweepers run at once;
- a resolution comes only after the condition has been clear for resolve_after_hours, never while
  the rule keeps firing; a resolved alert re-fires on a new crossing (a new alert_id), and an open
  one never re-fires on cooldown expiry;
- a slow worker that published the opening cannot mark the escalation sent (SAME_MESSAGE).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.fakes import Clock
from tests.functional.actionable.alert_workers import (
    DAY,
    ONLY_CALLS,
    T0,
    MakeWorker,
    calls,
    customer,
    received,
    topic_with_queue,
)
from worker.alerts.claims import ClaimStatus
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import (
    AlertLedger,
    DynamoDBAlertLedger,
    MemoryAlertLedger,
    alert_table_name,
    create_alert_table,
)
from worker.alerts.rules import Alert, route_alerts

LIFECYCLE = ONLY_CALLS.model_copy(
    update={
        "ib_call_spike": ONLY_CALLS.ib_call_spike.model_validate(
            {"escalate_at_calls_14d": 3, "resolve_after_hours": 24}
        )
    }
)
R = timedelta(hours=24)
COOLDOWN = timedelta(hours=168)


@pytest.fixture(params=["dynamodb", "memory"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[AlertLedger]:
    if request.param == "memory":
        yield MemoryAlertLedger()
        return
    request.getfixturevalue("aws_endpoint")
    name = alert_table_name(request.getfixturevalue("unique_prefix"))
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_alert_table(client, name)
        yield DynamoDBAlertLedger(client, name)


def spike(calls_14d: int, when: Any = T0) -> Alert:
    features = {"ib_call_count_14d": float(calls_14d), "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts("c-1", features, None, LIFECYCLE, when, customer_tier="premium")
    return alert


async def test_the_ledger_escalates_once_refreshes_while_firing_and_resolves_once_clear(
    ledger: AlertLedger,
) -> None:
    opened = await ledger.claim(spike(2), T0, COOLDOWN, resolve_after=R)
    assert opened.status is ClaimStatus.NEW and opened.alert.status == "open"
    # A slow worker's mark_sent of the opening cannot mark a later message: here the opening is current.
    assert await ledger.mark_sent(opened.alert.published_at(T0))
    t1 = T0 + timedelta(hours=1)
    escalation = await ledger.claim(spike(3, t1), t1, COOLDOWN, resolve_after=R)
    assert escalation.status is ClaimStatus.NEW and escalation.alert.status == "escalated"
    assert escalation.alert.alert_id == opened.alert.alert_id
    # Until the escalation is marked sent, the opening's (late) mark_sent does not mark it.
    assert not await ledger.mark_sent(opened.alert.published_at(t1))
    assert await ledger.mark_sent(escalation.alert.published_at(t1))
    # Escalated once: a fourth call is suppressed.
    t2 = T0 + timedelta(hours=2)
    assert (await ledger.claim(spike(4, t2), t2, COOLDOWN, resolve_after=R)).status is ClaimStatus.SUPPRESSED
    # Still firing a day later, past the cooldown too: nothing to resolve, nothing re-fires.
    for hours in (10, 20, 30, 200):
        t = T0 + timedelta(hours=hours)
        assert (
            await ledger.claim(spike(2, t), t, COOLDOWN, resolve_after=R)
        ).status is ClaimStatus.SUPPRESSED
        assert await ledger.resolutions_due(t, 10) == []
    last = T0 + timedelta(hours=200)
    assert await ledger.resolutions_due(last + R, 10) == []  # clear for R, but the deadline is 1.25 R
    due = await ledger.resolutions_due(last + R * 1.25, 10)
    assert [(c.status, c.alert.status, c.alert.alert_id) for c in due] == [
        (ClaimStatus.NEW, "resolved", opened.alert.alert_id)
    ]
    assert await ledger.resolutions_due(last + R * 2, 10) == []  # once
    assert await ledger.mark_sent(due[0].alert.published_at(last + R * 1.25))
    # A new crossing opens a new alert.
    t3 = last + R * 2
    reopened = await ledger.claim(spike(2, t3), t3, COOLDOWN, resolve_after=R)
    assert reopened.status is ClaimStatus.NEW and reopened.alert.alert_id != opened.alert.alert_id
    stats = await ledger.outcome_stats(T0.date(), t3.date())
    counts = stats.by_type()["IB_CALL_SPIKE"]
    assert (counts.escalated, counts.resolved) == (1, 1)
    assert counts.hours_to_resolve == pytest.approx((last + R * 1.25 - T0).total_seconds() / 3600, abs=0.01)


async def test_an_abandoned_escalation_is_republished_by_the_sweep(ledger: AlertLedger) -> None:
    opened = await ledger.claim(spike(2), T0, COOLDOWN, resolve_after=R)
    await ledger.mark_sent(opened.alert.published_at(T0))
    escalation = await ledger.claim(spike(3), T0, COOLDOWN, resolve_after=R)  # its worker dies here
    later = T0 + ledger.lease_length + timedelta(seconds=1)
    (again,) = await ledger.abandoned(later, 10)
    assert (again.status, again.alert.status, again.alert.alert_id) == (
        ClaimStatus.PENDING,
        "escalated",
        escalation.alert.alert_id,
    )


async def test_open_escalated_resolved_on_sns_with_the_original_alert_id(
    make_worker: MakeWorker, sns_sqs: tuple[Any, Any], unique_prefix: str
) -> None:
    sns, sqs = sns_sqs
    topic, queue = await topic_with_queue(sns, sqs, f"{unique_prefix}lifecycle")
    clock = Clock(T0)
    one, two = (
        await make_worker(clock, alerts=LIFECYCLE, topic_arn=topic),
        await make_worker(clock, alerts=LIFECYCLE, topic_arn=topic),
    )
    await one.pipeline.process(customer("c-1", T0, 30.0))
    clock.advance(timedelta(hours=1))
    await one.pipeline.process(calls("c-1", clock(), 2))
    (opening,) = await received(sqs, queue)
    assert (opening["type"], opening["status"]) == ("IB_CALL_SPIKE", "open")
    assert opening["what_changed"].startswith("churn risk")  # the calls moved it since the sign-up's scoring

    clock.advance(timedelta(hours=1))
    third = calls("c-1", clock(), 1, first=20)
    await asyncio.gather(one.pipeline.process(third), two.pipeline.process(third))  # a duplicate delivery
    await one.pipeline.process(third)
    (escalation,) = await received(sqs, queue)
    assert escalation["alert_id"] == opening["alert_id"]
    assert (escalation["status"], escalation["opened_at"]) == ("escalated", opening["opened_at"])
    assert escalation["message"].startswith("Escalated: 3 calls in 14 days")

    # Day after day the sweepers re-score the quiet customer: while the calls are in its 14 days the
    # rule fires (nothing to send); after they leave, it resolves once, R to 1.25 R later.
    resolved_at = None
    for day in range(1, 18):
        clock.now = T0 + day * DAY
        await asyncio.gather(one.rescorer.step(), two.rescorer.step())
        bodies = await received(sqs, queue)
        if bodies:
            (resolution,) = bodies
            resolved_at = day
            break
    assert resolved_at is not None and resolved_at >= 15  # the calls leave the 14-day window on day 14
    assert resolution["alert_id"] == opening["alert_id"]
    assert (resolution["status"], resolution["opened_at"]) == ("resolved", opening["opened_at"])
    assert resolution["resolved_at"] is not None
    for _ in range(2):
        clock.advance(DAY)
        await asyncio.gather(one.rescorer.step(), two.rescorer.step())
    assert await received(sqs, queue) == []  # once

    # A new crossing: a new alert.
    await two.pipeline.process(calls("c-1", clock(), 2, first=30))
    (fresh,) = await received(sqs, queue)
    assert (fresh["status"], fresh["type"]) == ("open", "IB_CALL_SPIKE")
    assert fresh["alert_id"] != opening["alert_id"]
    stats = await two.ledger.outcome_stats(T0.date(), clock().date())
    counts = stats.by_type()["IB_CALL_SPIKE"]
    assert (counts.escalated, counts.resolved) == (1, 1)


async def test_without_resolve_after_a_rule_keeps_its_cooldown_windows(ledger: AlertLedger) -> None:
    config = AlertsConfig()
    features = {"ib_call_count_14d": 2.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts("c-1", features, None, config, T0)
    first = await ledger.claim(alert, T0, COOLDOWN)
    await ledger.mark_sent(first.alert.published_at(T0))
    later = T0 + COOLDOWN
    (again,) = route_alerts("c-1", features, None, config, later)
    assert (await ledger.claim(again, later, COOLDOWN)).status is ClaimStatus.NEW
    assert await ledger.resolutions_due(later + 10 * COOLDOWN, 10) == []
