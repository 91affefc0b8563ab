"""A Query over several result pages is not a snapshot. Another writer's commit landing between two
pages of our read must cost nothing: no acknowledged event lost, no lifetime counter counted twice.
On moto's DynamoDB, with one item per result page so the commit can be placed exactly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiobotocore.session import get_session

from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import Event, validate_event
from features.state import event_digest

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def call(n: str, days_ago: float, customer: str = "c-1") -> Event:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return validate_event({"event_id": n, "customer_id": customer, "type": "ib_call", "sentiment": "neutral",
                           "occurred_at": when})  # fmt: skip


class CommitBetweenPages:
    """A DynamoDB client that, before handing out the second result page of a Query, lets another
    writer run to completion: the interleaving a multi-page read is exposed to."""

    def __init__(self, client: Any, other_writer: Any) -> None:
        self._client = client
        self._other_writer = other_writer
        self.interleaved = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def query(self, **kwargs: Any) -> Any:
        if "ExclusiveStartKey" in kwargs and self._other_writer is not None:
            writer, self._other_writer = self._other_writer, None
            await writer()
            self.interleaved += 1
        return await self._client.query(**kwargs)


async def test_a_commit_between_query_pages_loses_no_acknowledged_event_and_double_counts_nothing(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    session = get_session()
    async with (
        session.create_client("dynamodb", region_name="us-east-1") as a_client,
        session.create_client("dynamodb", region_name="us-east-1") as b_client,
    ):
        await create_feature_table(a_client, table)
        b = DynamoDBFeatureStore(b_client, table)
        await b.apply([call("old-1", 2), call("old-2", 1)], NOW)  # two day pages and the profile

        async def b_commits() -> None:  # B's events land on the page A read first
            result = await b.apply([call("b-1", 2)], NOW)
            assert result.applied == ["b-1"]  # ... and B acknowledges them

        torn = CommitBetweenPages(a_client, b_commits)
        a = DynamoDBFeatureStore(torn, table, query_page_items=1)  # type: ignore[arg-type]
        result = await a.apply([call("a-1", 2)], NOW)
        assert torn.interleaved == 1 and result.applied == ["a-1"]

        state = (await b.get(["c-1"]))["c-1"]
        stored = set().union(*(page.event_digests for page in state.pages.values()))
        assert {event_digest(n) for n in ("old-1", "old-2", "a-1", "b-1")} <= stored  # nothing lost
        assert state.profile.lifetime["ib_calls"] == 4
        # B's producer sends b-1 again: a duplicate, not a fifth call.
        again = await b.apply([call("b-1", 2), call("a-1", 2)], NOW)
        assert sorted(again.duplicates) == ["a-1", "b-1"]
        assert (await b.get(["c-1"]))["c-1"].profile.lifetime["ib_calls"] == 4


async def test_many_writers_on_one_customer_with_paged_reads_count_every_event_once(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    session = get_session()
    async with session.create_client("dynamodb", region_name="us-east-1") as client:
        await create_feature_table(client, table)
        stores = [DynamoDBFeatureStore(client, table, query_page_items=1 + n % 3) for n in range(6)]
        events = [call(f"e-{n}", n % 4) for n in range(36)]
        batches = [events[i::6] for i in range(6)]
        # Every writer also redelivers a neighbour's batch: at-least-once in, exactly once counted.
        await asyncio.gather(*(stores[i].apply(batches[i] + batches[(i + 1) % 6], NOW) for i in range(6)))
        state = (await stores[0].get(["c-1"]))["c-1"]
    stored = [d for page in state.pages.values() for d in page.event_digests]
    assert sorted(stored) == sorted(event_digest(e.event_id) for e in events)
    assert state.profile.lifetime["ib_calls"] == 36
