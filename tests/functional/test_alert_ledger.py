"""The alert ledger on moto's DynamoDB (and its in-memory twin, same scenarios): cooldown windows,
abandoned claims, churned customers, concurrent claimers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import (
    AlertLedger,
    ClaimStatus,
    DynamoDBAlertLedger,
    MemoryAlertLedger,
    alert_table_name,
    create_alert_table,
)
from worker.alerts.rules import Alert, AlertType, route_alerts

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
WEEK = timedelta(hours=168)
LEASE = timedelta(minutes=2)


@pytest.fixture
async def table(dynamodb: Any, unique_prefix: str) -> str:
    name = alert_table_name(unique_prefix)
    assert await create_alert_table(dynamodb, name) is True
    return name


@pytest.fixture(params=["dynamodb", "memory"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[AlertLedger]:
    if request.param == "memory":
        yield MemoryAlertLedger(lease=LEASE)
        return
    request.getfixturevalue("aws_endpoint")
    name = alert_table_name(request.getfixturevalue("unique_prefix"))
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_alert_table(client, name)
        yield DynamoDBAlertLedger(client, name, lease=LEASE)


def spike(customer: str = "c-1", at: datetime = T0, calls: int = 2, tier: str | None = "premium") -> Alert:
    features = {"ib_call_count_14d": float(calls), "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts(customer, features, None, AlertsConfig(), at, customer_tier=tier)
    return alert


async def test_create_alert_table_is_idempotent(dynamodb: Any, table: str) -> None:
    assert await create_alert_table(dynamodb, table) is False
    ttl = await dynamodb.describe_time_to_live(TableName=table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


async def test_one_alert_per_cooldown_window(ledger: AlertLedger) -> None:
    first = await ledger.claim(spike(), T0, WEEK)
    assert first.status is ClaimStatus.NEW and first.should_publish
    assert first.alert.window_start == T0
    assert await ledger.mark_sent(first.alert.published_at(T0)) is True

    # A redelivery, or a later event in the same window: suppressed, and it is the same alert.
    for later in (T0, T0 + timedelta(hours=1), T0 + WEEK - timedelta(microseconds=1)):
        again = await ledger.claim(spike(at=later, calls=4), later, WEEK)
        assert again.status is ClaimStatus.SUPPRESSED and not again.should_publish
        assert again.alert.alert_id == first.alert.alert_id

    # The window is over at window_start + cooldown: a new alert, a new id.
    nxt = await ledger.claim(spike(at=T0 + WEEK), T0 + WEEK, WEEK)
    assert nxt.status is ClaimStatus.NEW
    assert nxt.alert.window_start == T0 + WEEK
    assert nxt.alert.alert_id != first.alert.alert_id


async def test_types_and_customers_have_their_own_windows(ledger: AlertLedger) -> None:
    assert (await ledger.claim(spike("c-1"), T0, WEEK)).status is ClaimStatus.NEW
    assert (await ledger.claim(spike("c-2"), T0, WEEK)).status is ClaimStatus.NEW
    other_type = spike("c-1").model_copy(update={"alert_type": AlertType.HIGH_CHURN_RISK})
    assert (await ledger.claim(other_type, T0, WEEK)).status is ClaimStatus.NEW


async def test_an_unsent_claim_is_in_flight_until_its_lease_ends_then_pending(ledger: AlertLedger) -> None:
    claimed = await ledger.claim(spike(), T0, WEEK)  # ... and the worker dies before mark_sent
    busy = await ledger.claim(spike(at=T0 + timedelta(seconds=30)), T0 + timedelta(seconds=30), WEEK)
    assert busy.status is ClaimStatus.IN_FLIGHT and not busy.should_publish

    after_lease = T0 + LEASE + timedelta(seconds=1)
    pending = await ledger.claim(spike(at=after_lease, calls=7), after_lease, WEEK)
    assert pending.status is ClaimStatus.PENDING and pending.should_publish
    # The stored alert, not the new one: same id, same body.
    assert pending.alert.alert_id == claimed.alert.alert_id
    assert pending.alert.body() == claimed.alert.body()
    assert pending.alert.customer_tier == "premium"

    # The taker holds a new lease: nobody else re-publishes meanwhile.
    assert (await ledger.claim(spike(at=after_lease), after_lease, WEEK)).status is ClaimStatus.IN_FLIGHT
    assert await ledger.mark_sent(pending.alert) is True
    assert (await ledger.claim(spike(at=after_lease), after_lease, WEEK)).status is ClaimStatus.SUPPRESSED


async def test_mark_sent_never_marks_a_newer_window(ledger: AlertLedger) -> None:
    old = await ledger.claim(spike(), T0, WEEK)
    new = await ledger.claim(spike(at=T0 + WEEK), T0 + WEEK, WEEK)  # old window over, still unsent
    assert new.status is ClaimStatus.NEW
    assert await ledger.mark_sent(old.alert) is False
    assert (await ledger.claim(spike(at=T0 + WEEK), T0 + WEEK + LEASE, WEEK)).status is ClaimStatus.PENDING


async def test_a_churned_customer_gets_no_more_alerts(ledger: AlertLedger) -> None:
    await ledger.record_churn("c-1", T0)
    await ledger.record_churn("c-1", T0 + timedelta(days=1))  # a redelivered churn event: no error
    claim = await ledger.claim(spike("c-1"), T0 + timedelta(days=30), WEEK)
    assert claim.status is ClaimStatus.CHURNED and not claim.should_publish
    assert (await ledger.claim(spike("c-2"), T0, WEEK)).status is ClaimStatus.NEW


async def test_a_customer_who_signs_up_again_is_alerted_again_until_the_next_churn(
    ledger: AlertLedger,
) -> None:
    day = timedelta(days=1)
    await ledger.record_churn("c-1", T0)
    await ledger.record_return("c-1", T0, T0 + day)
    assert (await ledger.claim(spike(at=T0 + 2 * day), T0 + 2 * day, WEEK)).status is ClaimStatus.NEW
    await ledger.record_churn("c-1", T0)  # the old churn, redelivered: the return stands
    assert (await ledger.claim(spike(at=T0 + 9 * day), T0 + 9 * day, WEEK)).status is ClaimStatus.NEW
    await ledger.record_churn("c-1", T0 + 10 * day)  # churned again
    await ledger.record_return("c-1", T0, T0 + day)  # the old return, late: does not undo it
    assert (await ledger.claim(spike(at=T0 + 20 * day), T0 + 20 * day, WEEK)).status is ClaimStatus.CHURNED
    await ledger.record_return("c-1", T0 + 10 * day, T0 + 11 * day)
    assert (await ledger.claim(spike(at=T0 + 20 * day), T0 + 20 * day, WEEK)).status is ClaimStatus.NEW


async def test_a_return_written_before_the_churn_it_follows_still_counts(ledger: AlertLedger) -> None:
    """Two workers: one saw churn then sign-up and records the return; the other, with the older
    state, records the churn afterwards. The customer is back, whatever the order."""
    await ledger.record_return("c-1", T0, T0 + timedelta(days=1))
    await ledger.record_churn("c-1", T0)
    assert (
        await ledger.claim(spike(at=T0 + timedelta(days=2)), T0 + timedelta(days=2), WEEK)
    ).status is ClaimStatus.NEW


async def test_churn_stops_even_a_pending_claim(ledger: AlertLedger) -> None:
    await ledger.claim(spike(), T0, WEEK)
    await ledger.record_churn("c-1", T0 + timedelta(seconds=1))
    assert (await ledger.claim(spike(), T0 + LEASE * 2, WEEK)).status is ClaimStatus.CHURNED


async def test_concurrent_claimers_exactly_one_new(ledger: AlertLedger) -> None:
    claims = await asyncio.gather(*(ledger.claim(spike(), T0, WEEK) for _ in range(8)))
    statuses = sorted(claim.status.value for claim in claims)
    assert statuses == ["in_flight"] * 7 + ["new"]
    assert len({claim.alert.alert_id for claim in claims}) == 1


async def test_two_workers_on_their_own_clients(table: str, aws_endpoint: str) -> None:
    session = get_session()
    async with (
        session.create_client("dynamodb", region_name="us-east-1") as a,
        session.create_client("dynamodb", region_name="us-east-1") as b,
    ):
        workers = [DynamoDBAlertLedger(a, table), DynamoDBAlertLedger(b, table)]
        claims = await asyncio.gather(
            *(workers[i % 2].claim(spike(f"c-{i // 2}"), T0, WEEK) for i in range(20))
        )
    by_customer: dict[str, list[str]] = {}
    for claim in claims:
        by_customer.setdefault(claim.alert.customer_id, []).append(claim.status.value)
    assert all(sorted(statuses) == ["in_flight", "new"] for statuses in by_customer.values()), by_customer


async def test_a_window_known_sent_suppresses_claims_without_a_request(table: str, aws_endpoint: str) -> None:
    """A customer scored again inside its cooldown (every event scores it) costs no request once
    this worker knows the window was sent, by its own mark or by DynamoDB's answer; a window that
    ended, or a churn this worker recorded, asks DynamoDB again."""
    requests: list[str] = []

    def count(event_name: str = "", **_: Any) -> None:
        requests.append(event_name.rsplit(".", 1)[-1])

    session = get_session()
    async with (
        session.create_client("dynamodb", region_name="us-east-1") as a,
        session.create_client("dynamodb", region_name="us-east-1") as b,
    ):
        a.meta.events.register("before-send", count)
        b.meta.events.register("before-send", count)
        first, second = DynamoDBAlertLedger(a, table), DynamoDBAlertLedger(b, table)
        claim = await first.claim(spike(), T0, WEEK)
        assert await first.mark_sent(claim.alert.published_at(T0)) is True
        requests.clear()
        for hours in (0, 1, 100):
            later = T0 + timedelta(hours=hours)
            again = await first.claim(spike(at=later), later, WEEK)
            assert again.status is ClaimStatus.SUPPRESSED and again.alert.alert_id == claim.alert.alert_id
        assert requests == []
        # Another worker learns it from DynamoDB's answer, once.
        for _ in range(3):
            assert (
                await second.claim(spike(), T0 + timedelta(hours=2), WEEK)
            ).status is ClaimStatus.SUPPRESSED
        assert requests == ["GetItem", "TransactWriteItems"]  # the table's format, read once
        # The window ends: a new claim goes to DynamoDB and wins.
        assert (await first.claim(spike(at=T0 + WEEK), T0 + WEEK, WEEK)).status is ClaimStatus.NEW
        # A churn this worker records: DynamoDB answers the next claim (CHURNED, not SUPPRESSED).
        await second.record_churn("c-1", T0 + timedelta(hours=3))
        assert (await second.claim(spike(), T0 + timedelta(hours=4), WEEK)).status is ClaimStatus.CHURNED


async def test_claim_all_uses_each_types_cooldown(ledger: AlertLedger) -> None:
    features = {"ib_call_count_14d": 3.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    config = AlertsConfig.model_validate({"ib_call_spike": {"cooldown_hours": 1}})
    batch = [spike("c-1"), spike("c-2")]
    claims = await ledger.claim_all(batch, T0, config)
    assert [c.status for c in claims] == [ClaimStatus.NEW, ClaimStatus.NEW]
    assert await ledger.mark_all_sent([c.alert for c in claims]) == [True, True]
    later = T0 + timedelta(hours=1)
    again = route_alerts("c-1", features, None, config, later)
    (claim,) = await ledger.claim_all(again, later, config)  # the 1-hour window is over
    assert claim.status is ClaimStatus.NEW
    await ledger.mark_all_sent([claim.alert])
    # With the default week the window that just started holds: a second alert is suppressed.
    assert [c.status for c in await ledger.claim_all(again, later, AlertsConfig())] == [
        ClaimStatus.SUPPRESSED
    ]


async def test_an_abandoned_claim_is_found_by_the_sweep_and_taken_once(ledger: AlertLedger) -> None:
    claimed = await ledger.claim(spike("c-1"), T0, WEEK)  # its worker dies before publishing
    sent = await ledger.claim(spike("c-2"), T0, WEEK)
    await ledger.mark_sent(sent.alert)  # sent: never swept
    assert await ledger.abandoned(T0 + LEASE - timedelta(seconds=1), 10) == []  # the lease still holds
    later = T0 + LEASE + timedelta(seconds=1)
    [taken] = await ledger.abandoned(later, 10)
    assert taken.status is ClaimStatus.PENDING and taken.alert.alert_id == claimed.alert.alert_id
    assert taken.alert.body() == claimed.alert.body()
    assert await ledger.abandoned(later, 10) == []  # the taker holds a new lease
    assert await ledger.mark_sent(taken.alert) is True
    assert await ledger.abandoned(later + 2 * LEASE, 10) == []  # sent: out of the sweep


async def test_a_released_claim_is_swept_at_once_and_a_churned_ones_never(ledger: AlertLedger) -> None:
    failed = await ledger.claim(spike("c-1"), T0, WEEK)
    await ledger.release([failed.alert], T0)  # its publish failed
    [again] = await ledger.abandoned(T0, 10)
    assert again.alert.alert_id == failed.alert.alert_id
    assert await ledger.mark_sent(again.alert)
    gone = await ledger.claim(spike("c-9"), T0, WEEK)
    await ledger.record_churn("c-9", T0 + timedelta(seconds=1))
    assert gone.should_publish
    assert await ledger.abandoned(T0 + 2 * LEASE, 10) == []  # churned since: dropped, not sent
    assert await ledger.abandoned(T0 + 4 * LEASE, 10) == []


async def test_churn_and_sign_up_at_the_same_instant_is_a_return(ledger: AlertLedger) -> None:
    await ledger.record_churn("c-1", T0)
    await ledger.record_return("c-1", T0, T0)  # the same instant: no error, and the customer is back
    assert (
        await ledger.claim(spike(at=T0 + timedelta(days=1)), T0 + timedelta(days=1), WEEK)
    ).status is ClaimStatus.NEW


async def test_a_claim_nearing_the_end_of_its_lease_is_renewed_before_it_is_published(
    ledger: AlertLedger,
) -> None:
    claim = await ledger.claim(spike(), T0, WEEK)
    assert claim.status is ClaimStatus.NEW
    assert await ledger.keep_live([claim], T0 + LEASE / 4) == [claim]  # plenty of lease left: no request
    (renewed,) = await ledger.keep_live([claim], T0 + LEASE * 3 / 4)
    assert renewed.lease_until == T0 + LEASE * 3 / 4 + LEASE
    assert await ledger.abandoned(T0 + LEASE * 3 / 2, 10) == []  # the renewed lease still holds it


async def test_a_claim_the_sweep_took_over_is_never_published_by_its_slow_first_holder(
    ledger: AlertLedger,
) -> None:
    """FINDINGS.md #3: a batch slowed past its claims' lease must not publish what the sweep took."""
    claim = await ledger.claim(spike(), T0, WEEK)
    (taken,) = await ledger.abandoned(T0 + LEASE * 2, 10)  # the sweep: the lease ran out
    assert taken.alert.alert_id == claim.alert.alert_id and taken.token != claim.token
    assert await ledger.keep_live([claim], T0 + LEASE * 2) == []  # the first holder lost it
    assert await ledger.keep_live([taken], T0 + LEASE * 2) == [taken]  # the sweep publishes it
