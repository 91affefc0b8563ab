"""Reading a customer takes more than one request (its profile, then the segments it lists, or the
format-1 pages a Query returns), so another writer's commit can land between them. It must cost
nothing: no acknowledged event lost, no lifetime counter counted twice. On moto's DynamoDB, with
the other writer's commit placed exactly between our requests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import Event, validate_event
from features.state import event_digest
from tests.functional.format1 import write_format_1
from tests.functional.store_helpers import digests, two_clients_on_a_new_table

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def call(n: str, days_ago: float, customer: str = "c-1") -> Event:
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


class CommitBetweenReads:
    """A DynamoDB client that lets another writer run to completion just before our second read
    request (a BatchGetItem of segments, or the next result page of a Query): the interleaving a
    read of several requests is exposed to."""

    def __init__(self, client: Any, other_writer: Any, operation: str) -> None:
        self._client = client
        self._other_writer = other_writer
        self._operation = operation
        self._seen = 0
        self.interleaved = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def _maybe_interleave(self, operation: str, second: bool) -> None:
        if operation == self._operation and second and self._other_writer is not None:
            writer, self._other_writer = self._other_writer, None
            await writer()
            self.interleaved += 1

    async def batch_get_item(self, **kwargs: Any) -> Any:
        self._seen += 1
        await self._maybe_interleave("BatchGetItem", self._seen >= 2)
        return await self._client.batch_get_item(**kwargs)

    async def query(self, **kwargs: Any) -> Any:
        await self._maybe_interleave("Query", "ExclusiveStartKey" in kwargs)
        return await self._client.query(**kwargs)


@pytest.mark.parametrize("segment_cache_items", [0, 1000])
async def test_a_commit_between_reading_a_profile_and_its_segments_loses_and_doubles_nothing(
    aws_endpoint: str, unique_prefix: str, segment_cache_items: int
) -> None:
    table = table_name(unique_prefix)
    async with two_clients_on_a_new_table(table) as (a_client, b_client):
        b = DynamoDBFeatureStore(b_client, table)
        history = [call(f"old-{n}", n / 3) for n in range(90)]  # a month: the older pages are in segments
        await b.apply(history, NOW)

        async def b_commits() -> None:  # B adds an event to a page in a segment, and acknowledges it
            result = await b.apply([call("b-1", 29)], NOW)
            assert result.applied == ["b-1"]

        torn = CommitBetweenReads(a_client, b_commits, "BatchGetItem")
        a = DynamoDBFeatureStore(torn, table, segment_cache_items=segment_cache_items)  # type: ignore[arg-type]
        result = await a.apply([call("a-1", 29), call("a-2", 0)], NOW)
        assert torn.interleaved == 1 and sorted(result.applied) == ["a-1", "a-2"]
        # The profile and its segments, twice: the first view was torn. With the cache, the second
        # read of the segments is not needed: the ones read are the versions the new profile lists.
        assert a.requests["BatchGetItem"] == (3 if segment_cache_items else 4)

        state = (await b.get(["c-1"]))["c-1"]
        expected = {event_digest(e.event_id) for e in history} | {
            event_digest(n) for n in ("a-1", "a-2", "b-1")
        }
        assert digests(state) == expected  # nothing lost, nothing twice
        assert state.profile.lifetime["ib_calls"] == 93
        again = await b.apply([call("b-1", 29), call("a-1", 29)], NOW)
        assert sorted(again.duplicates) == ["a-1", "b-1"]
        assert (await b.get(["c-1"]))["c-1"].profile.lifetime["ib_calls"] == 93


async def test_a_format_1_writer_committing_between_our_reads_loses_and_doubles_nothing(
    aws_endpoint: str, unique_prefix: str
) -> None:
    """During an upgrade a worker of the old code may still write a customer the new code is
    converting: our conversion is conditional on the format-1 profile's version as read."""
    table = table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_feature_table(client, table)
        history = [call("old-1", 2), call("old-2", 1)]
        await write_format_1(client, table, history, NOW)

        async def old_worker_commits() -> None:  # what the old code's transaction did: a page and the profile
            await write_format_1(client, table, [*history, call("b-1", 2)], NOW, version=2)

        torn = CommitBetweenReads(client, old_worker_commits, "Query")
        a = DynamoDBFeatureStore(torn, table, query_page_items=1)  # type: ignore[arg-type]
        result = await a.apply([call("a-1", 2)], NOW)
        assert torn.interleaved == 1 and result.applied == ["a-1"]
        state = (await a.get(["c-1"]))["c-1"]
        assert digests(state) == {event_digest(n) for n in ("old-1", "old-2", "a-1", "b-1")}
        assert state.profile.lifetime["ib_calls"] == 4


async def test_many_writers_on_one_customer_count_every_event_once(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    session = get_session()
    async with session.create_client("dynamodb", region_name="us-east-1") as client:
        await create_feature_table(client, table)
        stores = [DynamoDBFeatureStore(client, table) for _ in range(6)]
        events = [call(f"e-{n}", n % 30) for n in range(120)]
        batches = [events[i::6] for i in range(6)]
        # Every writer also redelivers a neighbour's batch: at-least-once in, exactly once counted.
        await asyncio.gather(*(stores[i].apply(batches[i] + batches[(i + 1) % 6], NOW) for i in range(6)))
        state = (await stores[0].get(["c-1"]))["c-1"]
    stored = [d for page in state.pages.values() for d in page.event_digests]
    assert sorted(stored) == sorted(event_digest(e.event_id) for e in events)
    assert state.profile.lifetime["ib_calls"] == 120
