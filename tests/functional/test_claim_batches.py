"""A pipeline batch's claims in one transaction (`DynamoDBAlertLedger.claim_all`), on moto.

Invariants, whatever happens to the shared transaction:
- every alert window opens at most once: one NEW (or PENDING on a take-over) per window across
  claimers, redeliveries and lost answers; a claim that opened went through with its record;
- a claim that cannot open (a window open, the customer churned) never holds the others back: they
  are claimed together again, it alone finds out what is there (SUPPRESSED, IN_FLIGHT, CHURNED);
- a batch whose answer was lost may have been applied: each of its claims finds its own token
  there and is NEW, not IN_FLIGHT (else an opened window would never be published but by the sweep).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ReadTimeoutError

from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import ClaimStatus, DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.rules import Alert, AlertType, route_alerts

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
WEEK = timedelta(hours=168)
CONFIG = AlertsConfig()


def spike(customer: str, at: datetime = T0) -> Alert:
    features = {"ib_call_count_14d": 3.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts(customer, features, None, CONFIG, at, customer_tier="premium")
    return alert


class Counting:
    """The DynamoDB client, counting TransactWriteItems; `lose_answer`: the next one is applied,
    then its answer lost."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.transactions: list[int] = []  # items per transaction sent
        self.lose_answer = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions.append(len(kwargs["TransactItems"]))
        answer = await self._client.transact_write_items(**kwargs)
        if self.lose_answer:
            self.lose_answer = False
            raise ReadTimeoutError(endpoint_url="http://dynamodb")
        return answer


@pytest.fixture
async def clients(aws_endpoint: str, unique_prefix: str) -> AsyncIterator[tuple[Counting, str]]:
    name = alert_table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_alert_table(client, name)
        yield Counting(client), name


def ledger(clients: tuple[Counting, str]) -> DynamoDBAlertLedger:
    client, name = clients
    return DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]


async def records(clients: tuple[Counting, str], customer: str) -> list[dict[str, Any]]:
    client, name = clients
    response = await client.query(
        TableName=name,
        KeyConditionExpression="customer_id = :c AND begins_with(alert_type, :r)",
        ExpressionAttributeValues={":c": {"S": customer}, ":r": {"S": "#alert#"}},
        ConsistentRead=True,
    )
    return list(response["Items"])


async def test_a_batch_of_new_claims_is_one_transaction_with_their_records(
    clients: tuple[Counting, str],
) -> None:
    batch = [spike(f"c-{n}") for n in range(8)]
    claims = await ledger(clients).claim_all(batch, T0, CONFIG)
    assert [c.status for c in claims] == [ClaimStatus.NEW] * 8
    assert [c.alert.customer_id for c in claims] == [a.customer_id for a in batch]  # in order
    assert clients[0].transactions == [8 * 2]  # a claim and its record each (churn stamps: no check)
    for n in range(8):
        [record] = await records(clients, f"c-{n}")
        assert record["alert_id"]["S"] == claims[n].alert.alert_id


async def test_two_types_of_one_customer_share_its_check(clients: tuple[Counting, str]) -> None:
    """On a table whose churns are not all stamped yet (no format item), claims check the
    `#churned` item: once per customer."""
    client, name = clients
    await client.delete_item(
        TableName=name, Key={"customer_id": {"S": "#ledger"}, "alert_type": {"S": "format"}}
    )
    older = ledger(clients)
    older._started_wall += timedelta(hours=1)  # a table older than the worker: it may hold old churns
    other = spike("c-1").model_copy(update={"alert_type": AlertType.SESSION_VELOCITY_DROP})
    claims = await older.claim_all([spike("c-1"), other, spike("c-2")], T0, CONFIG)
    assert [c.status for c in claims] == [ClaimStatus.NEW] * 3
    assert clients[0].transactions == [2 + 3 * 2]  # one check per customer


async def test_an_open_window_or_a_churn_does_not_hold_the_others_back(clients: tuple[Counting, str]) -> None:
    """Another worker opened c-3's window (this one does not know it), c-5 churned (the stamp on its
    claim item refuses the claim): the shared transaction is cancelled for those two; the rest are
    claimed together again, those two alone."""
    elsewhere = ledger(clients)
    opened = await elsewhere.claim(spike("c-3"), T0, WEEK)
    assert await elsewhere.mark_sent(opened.alert.published_at(T0))
    await elsewhere.record_churn("c-5", T0 - timedelta(hours=1))
    clients[0].transactions.clear()
    later = T0 + timedelta(hours=1)
    claims = await ledger(clients).claim_all([spike(f"c-{n}", later) for n in range(8)], later, CONFIG)
    statuses = {c.alert.customer_id: c.status for c in claims}
    assert statuses.pop("c-3") is ClaimStatus.SUPPRESSED
    assert statuses.pop("c-5") is ClaimStatus.CHURNED
    assert set(statuses.values()) == {ClaimStatus.NEW}
    assert claims[3].alert.alert_id == opened.alert.alert_id
    # the cancelled batch, the six again together, then each refused one on its own
    assert clients[0].transactions[:2] == [8 * 2, 6 * 2] and len(clients[0].transactions) == 4
    for n in (0, 1, 2, 4, 6, 7):
        assert len(await records(clients, f"c-{n}")) == 1
    assert await records(clients, "c-5") == []


async def test_a_lost_answer_is_found_to_be_ours(clients: tuple[Counting, str]) -> None:
    clients[0].lose_answer = True
    batch = [spike(f"c-{n}") for n in range(4)]
    claims = await ledger(clients).claim_all(batch, T0, CONFIG)
    assert [c.status for c in claims] == [ClaimStatus.NEW] * 4  # not IN_FLIGHT: our own tokens
    for n in range(4):
        assert len(await records(clients, f"c-{n}")) == 1  # applied once


async def test_two_workers_claiming_one_batch_open_each_window_once(clients: tuple[Counting, str]) -> None:
    batch = [spike(f"c-{n}") for n in range(10)]
    one, two = ledger(clients), ledger(clients)
    first, second = await asyncio.gather(one.claim_all(batch, T0, CONFIG), two.claim_all(batch, T0, CONFIG))
    for a, b in zip(first, second, strict=True):
        assert sorted([a.status, b.status]) == sorted([ClaimStatus.NEW, ClaimStatus.IN_FLIGHT])
        assert a.alert.alert_id == b.alert.alert_id
    for n in range(10):
        assert len(await records(clients, f"c-{n}")) == 1
