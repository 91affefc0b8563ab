"""A pipeline batch's sent marks on moto's DynamoDB (`DynamoDBAlertLedger.mark_all_sent`): up to
25 in one BatchExecuteStatement of conditional PartiQL UPDATEs, leaving each item exactly as
`mark_sent`'s UpdateItem would; a mark whose statement fails (the item moved on, an item written
before the lifecycle, throttling, an answer lost after the write) is asked again as the UpdateItem,
whose answer counts. What must hold: a mark never lands on another message than the one published,
and no published alert stays unmarked because its batch was refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, ReadTimeoutError

from tests.functional.actionable.alert_workers import ONLY_CALLS, T0
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.rules import Alert, route_alerts

LIFECYCLE = ONLY_CALLS.model_copy(
    update={"ib_call_spike": ONLY_CALLS.ib_call_spike.model_validate({"resolve_after_hours": 24})}
)
COOLDOWN = timedelta(hours=168)
MARKED = ("status", "sent_at", "pending_shard", "lease_until_us", "lifecycle", "alert_id")


class Counting:
    """The ledger's client, counting its DynamoDB calls; `batches` replaces BatchExecuteStatement."""

    def __init__(self, client: Any, batches: Any = None) -> None:
        self.client, self.calls, self.batches = client, Counter[str](), batches

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        async def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "batch_execute_statement" and self.batches is not None:
                return await self.batches(self.client, **kwargs)
            return await method(**kwargs)

        return call


@pytest.fixture
async def client(aws_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("dynamodb", region_name="us-east-1") as dynamodb:
        yield dynamodb


async def new_table(client: Any, prefix: str) -> str:
    name = alert_table_name(prefix)
    await create_alert_table(client, name)
    return name


def spike(customer: str, config: AlertsConfig) -> Alert:
    features = {"ib_call_count_14d": 2.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts(customer, features, None, config, T0, customer_tier="premium")
    return alert


async def claimed(ledger: DynamoDBAlertLedger, customers: list[str]) -> list[Alert]:
    """Half the customers' alerts with a lifecycle (resolved after 24 h), half without."""
    alerts = []
    for i, customer in enumerate(customers):
        config = LIFECYCLE if i % 2 else ONLY_CALLS
        claim = await ledger.claim(
            spike(customer, config), T0, COOLDOWN, resolve_after=config.resolve_after("IB_CALL_SPIKE")
        )
        assert claim.should_publish
        alerts.append(claim.alert.published_at(T0 + timedelta(seconds=1)))
    return alerts


async def item(client: Any, table: str, alert: Alert) -> dict[str, Any]:
    key = {"customer_id": {"S": alert.customer_id}, "alert_type": {"S": alert.alert_type.value}}
    found = (await client.get_item(TableName=table, Key=key, ConsistentRead=True))["Item"]
    return {name: found.get(name) for name in MARKED}


async def test_a_batchs_marks_go_in_one_request_and_leave_each_item_as_mark_sent_would(
    client: Any, unique_prefix: str
) -> None:
    customers = [f"c-{i}" for i in range(30)]  # two requests: 25 and 5
    batched, single = (
        await new_table(client, unique_prefix + "b-"),
        await new_table(client, unique_prefix + "s-"),
    )
    counting = Counting(client)
    ledger, reference = DynamoDBAlertLedger(counting, batched), DynamoDBAlertLedger(client, single)
    alerts, expected = await claimed(ledger, customers), await claimed(reference, customers)
    counting.calls.clear()

    assert await ledger.mark_all_sent(alerts) == [True] * len(alerts)
    assert counting.calls == Counter({"batch_execute_statement": 2})
    for alert in expected:
        assert await reference.mark_sent(alert)
    for mine, theirs in zip(alerts, expected, strict=True):
        got, want = await item(client, batched, mine), await item(client, single, theirs)
        assert {k: v for k, v in got.items() if k != "alert_id"} == {
            k: v for k, v in want.items() if k != "alert_id"
        }
        assert got["status"] == {"S": "sent"}
    lifecycle = await item(client, batched, alerts[1])
    assert lifecycle["pending_shard"]["S"].startswith("r") and lifecycle["lease_until_us"] is not None
    assert (await item(client, batched, alerts[0]))["pending_shard"] is None


async def test_a_mark_for_another_message_fails_alone_and_the_rest_of_its_batch_is_marked(
    client: Any, unique_prefix: str
) -> None:
    table = await new_table(client, unique_prefix)
    ledger = DynamoDBAlertLedger(client, table)
    first, second, third = await claimed(ledger, ["c-1", "c-2", "c-3"])
    stale = first.model_copy(update={"window_start": T0 - COOLDOWN})  # an older window's mark
    escalation = second.model_copy(update={"status": "escalated"})  # not the message stored
    assert stale.alert_id != first.alert_id

    assert await ledger.mark_all_sent([stale, escalation, third]) == [False, False, True]
    assert (await item(client, table, first))["status"] == {"S": "pending"}
    assert (await item(client, table, second))["status"] == {"S": "pending"}
    assert (await item(client, table, third))["status"] == {"S": "sent"}


async def test_items_the_statement_cannot_judge_are_marked_by_the_update_item(
    client: Any, unique_prefix: str
) -> None:
    """An item written before the lifecycle (no `lifecycle`), and a lifecycle alert whose last
    firing the published copy does not know: the UpdateItem's condition decides, and marks them."""
    table = await new_table(client, unique_prefix)
    counting = Counting(client)
    ledger = DynamoDBAlertLedger(counting, table)
    old, lifecycle, plain = await claimed(ledger, ["c-1", "c-2", "c-3"])
    key = {"customer_id": {"S": old.customer_id}, "alert_type": {"S": old.alert_type.value}}
    await client.update_item(TableName=table, Key=key, UpdateExpression="REMOVE lifecycle")
    unknown = lifecycle.model_copy(update={"last_firing_at": None})
    counting.calls.clear()

    assert await ledger.mark_all_sent([old, unknown, plain]) == [True, True, True]
    assert counting.calls == Counter({"batch_execute_statement": 1, "update_item": 2})
    for alert in (old, lifecycle, plain):
        assert (await item(client, table, alert))["status"] == {"S": "sent"}
    assert (await item(client, table, lifecycle))["pending_shard"]["S"].startswith("r")


async def refused(client: Any, **kwargs: Any) -> Any:
    raise ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        "BatchExecuteStatement",
    )


async def answer_lost(client: Any, **kwargs: Any) -> Any:
    await client.batch_execute_statement(**kwargs)
    raise ReadTimeoutError(endpoint_url="http://127.0.0.1")


@pytest.mark.parametrize("batches", [refused, answer_lost], ids=["throttled", "answer_lost_after_the_write"])
async def test_a_batch_without_an_answer_is_marked_mark_by_mark(
    client: Any, unique_prefix: str, batches: Any
) -> None:
    table = await new_table(client, unique_prefix)
    counting = Counting(client, batches)
    ledger = DynamoDBAlertLedger(counting, table)
    alerts = await claimed(ledger, ["c-1", "c-2", "c-3", "c-4"])
    counting.calls.clear()

    assert await ledger.mark_all_sent(alerts) == [True] * 4
    assert counting.calls == Counter({"batch_execute_statement": 1, "update_item": 4})
    for alert in alerts:
        assert (await item(client, table, alert))["status"] == {"S": "sent"}
