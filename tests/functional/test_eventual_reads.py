"""A batch's first read of a customer is eventually consistent (half the read units), unless this
process wrote the customer a moment ago. A replica behind must cost no event and count none twice:
every write is conditional on the version read, so a stale copy's write fails and the retry reads
strongly consistent. moto's DynamoDB is never behind, so the client here answers eventually
consistent reads from a snapshot taken earlier: the stalest view DynamoDB could give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiobotocore.session import get_session

from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import Event, validate_event
from features.state import event_digest
from tests.functional.store_helpers import digests, two_clients_on_a_new_table

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def call(n: str, customer: str, days_ago: float = 0.5) -> Event:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return validate_event(
        {
            "event_id": n,
            "customer_id": customer,
            "type": "ib_call",
            "sentiment": "neutral",
            "occurred_at": when,
        }
    )


class BehindReplica:
    """A DynamoDB client whose eventually consistent BatchGetItems answer from `snapshot` (the
    table as it was when `freeze` ran); strongly consistent ones, and everything else, go to the
    table. Records each read's consistency and the customers it asked for."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self.snapshot: dict[tuple[str, str], dict[str, Any]] = {}
        self.reads: list[tuple[bool, set[str]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def freeze(self) -> None:
        self.snapshot = {}
        async for page in self._client.get_paginator("scan").paginate(
            TableName=self._table, ConsistentRead=True
        ):
            for item in page["Items"]:
                self.snapshot[(item["customer_id"]["S"], item["bucket"]["S"])] = item

    async def batch_get_item(self, **kwargs: Any) -> Any:
        asked = kwargs["RequestItems"][self._table]
        consistent = bool(asked.get("ConsistentRead"))
        self.reads.append((consistent, {key["customer_id"]["S"] for key in asked["Keys"]}))
        if consistent:
            return await self._client.batch_get_item(**kwargs)
        found = [
            self.snapshot[(key["customer_id"]["S"], key["bucket"]["S"])]
            for key in asked["Keys"]
            if (key["customer_id"]["S"], key["bucket"]["S"]) in self.snapshot
        ]
        return {"Responses": {self._table: found}, "UnprocessedKeys": {}}


async def behind_store(client: Any, table: str, **options: Any) -> tuple[BehindReplica, DynamoDBFeatureStore]:
    """`table` created, and a store reading it through a `BehindReplica` of `client`."""
    await create_feature_table(client, table)
    replica = BehindReplica(client, table)
    return replica, DynamoDBFeatureStore(replica, table, **options)


async def test_a_replica_behind_costs_no_event_and_counts_none_twice(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    async with two_clients_on_a_new_table(table) as (a_client, b_client):
        replica = BehindReplica(a_client, table)
        a = DynamoDBFeatureStore(replica, table)  # type: ignore[arg-type]
        b = DynamoDBFeatureStore(b_client, table)
        await b.apply([call("b-1", "c-old")], NOW)
        await replica.freeze()  # the replica stops here: c-old at its first version, c-new unknown
        await b.apply([call("b-2", "c-old"), call("b-3", "c-new")], NOW)

        result = await a.apply([call("a-1", "c-old"), call("a-2", "c-new"), call("b-2", "c-old")], NOW)

        # The stale copies' writes failed (a version behind; a customer created meanwhile), the
        # retry read them strongly consistent: every event once, the redelivered b-2 a duplicate.
        assert sorted(result.applied) == ["a-1", "a-2"] and result.duplicates == ["b-2"]
        assert replica.reads[0] == (False, {"c-old", "c-new"})
        assert (True, {"c-old", "c-new"}) in replica.reads[1:]
        states = await b.get(["c-old", "c-new"])
        assert digests(states["c-old"]) == {event_digest(n) for n in ("b-1", "b-2", "a-1")}
        assert digests(states["c-new"]) == {event_digest(n) for n in ("b-3", "a-2")}
        assert states["c-old"].profile.lifetime["ib_calls"] == 3
        assert states["c-new"].profile.lifetime["ib_calls"] == 2


async def test_a_customer_this_process_just_wrote_is_read_strongly_consistent(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        replica, store = await behind_store(client, table)
        await store.apply([call("e-1", "c-1"), call("e-2", "c-2")], NOW)
        replica.reads.clear()
        writes = store.requests["BatchExecuteStatement"]

        result = await store.apply([call("e-3", "c-1"), call("e-4", "c-3")], NOW)

        assert sorted(result.applied) == ["e-3", "e-4"]
        # c-1, written a moment ago, strongly consistent; c-3, never written here, eventually.
        assert sorted(replica.reads) == [(False, {"c-3"}), (True, {"c-1"})]
        assert store.requests["BatchExecuteStatement"] == writes + 1  # no write failed, none retried


async def test_eventual_reads_off_reads_everything_strongly_consistent(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        replica, store = await behind_store(client, table, eventual_reads=False)
        await store.apply([call("e-1", "c-1")], NOW)
        assert replica.reads and all(consistent for consistent, _ in replica.reads)
