"""The DynamoDB feature store against moto's server, through aiobotocore over HTTP."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from features.dynamodb import DynamoDBFeatureStore, create_feature_table, state_from_items, table_name
from features.eventfile import read_event_file
from features.events import Event, check_event_time, validate_event
from features.exceptions import EventParseError
from features.layout import MAX_ITEMS_PER_WRITE, PROFILE_ROLL_AT, SEGMENT_TARGET, item_bytes
from features.registry import compute_features
from features.state import PAGE_CAPACITY
from features.store import MemoryFeatureStore
from tests.conftest import SAMPLE_EVENTS

AS_OF = datetime(2026, 11, 27, 12, tzinfo=UTC)
ITEM_LIMIT_BYTES = 400 * 1024  # DynamoDB's


@pytest.fixture
async def table(dynamodb: Any, unique_prefix: str) -> str:
    name = table_name(unique_prefix)
    assert await create_feature_table(dynamodb, name) is True
    return name


def sample_events() -> list[Event]:
    out = []
    for _, item in read_event_file(SAMPLE_EVENTS):
        assert not isinstance(item, EventParseError), item
        if check_event_time(item, AS_OF, timedelta(days=35)) is None:
            out.append(item)
    return out


def login(i: int, customer: str = "c-busy", when: str = "2026-11-26T10:00:00Z") -> Event:
    return validate_event(
        {"event_id": f"e-{i}", "customer_id": customer, "type": "login", "occurred_at": when}
    )


async def test_same_events_through_both_stores_give_identical_features(dynamodb: Any, table: str) -> None:
    events = sample_events()
    memory = MemoryFeatureStore()
    await memory.apply(events, now=AS_OF)
    dynamo = DynamoDBFeatureStore(dynamodb, table)
    shuffled = events[:]
    random.Random(7).shuffle(shuffled)
    for i in range(0, len(shuffled), 4):  # several batches, in another order
        await dynamo.apply(shuffled[i : i + 4], now=AS_OF)
    customers = ["c-alice", "c-bob"]
    from_memory = await memory.get(customers)
    from_dynamo = await dynamo.get(customers)
    for cid in customers:
        for as_of in (AS_OF, AS_OF + timedelta(days=20)):
            assert np.array_equal(
                compute_features(from_dynamo[cid], as_of), compute_features(from_memory[cid], as_of)
            )


async def test_redelivery_is_counted_once_and_costs_no_write(dynamodb: Any, table: str) -> None:
    store = DynamoDBFeatureStore(dynamodb, table)
    batch = [login(i) for i in range(5)]
    first = await store.apply(batch, now=AS_OF)
    writes = store.requests["TransactWriteItems"] + store.requests["PutItem"]
    again = await store.apply(batch, now=AS_OF)
    assert sorted(first.applied) == sorted(e.event_id for e in batch) and again.applied == []
    assert sorted(again.duplicates) == sorted(first.applied)
    assert store.requests["TransactWriteItems"] + store.requests["PutItem"] == writes  # nothing written
    state = (await store.get(["c-busy"]))["c-busy"]
    assert sum(p.counts["n.login"] for p in state.pages.values()) == 5


async def test_a_batch_of_many_customers_costs_one_read_and_one_write_request(
    dynamodb: Any, table: str
) -> None:
    """With every write in the transactions (`single_item_puts=False`): one read and one write
    request for a batch's customers; by default a write of one item is a PutItem of its own."""
    store = DynamoDBFeatureStore(dynamodb, table, single_item_puts=False)
    events = [login(i, customer=f"c-{i % 7}", when=f"2026-11-2{i % 3}T10:00:00Z") for i in range(70)]
    await store.apply(events, now=AS_OF)
    none = {"BatchExecuteStatement": 0, "PutItem": 0}
    assert store.requests == {"BatchGetItem": 1, "Query": 0, "TransactWriteItems": 1, **none}
    many = [login(1000 + i, customer=f"c-many-{i}") for i in range(250)]  # a profile each: 100 per request
    await store.apply(many, now=AS_OF)
    assert store.requests == {"BatchGetItem": 4, "Query": 0, "TransactWriteItems": 4, **none}
    puts = DynamoDBFeatureStore(dynamodb, table, batch_statements=False)
    await puts.apply([login(2000 + i, customer=f"c-put-{i}") for i in range(30)], now=AS_OF)
    assert puts.requests == {"BatchGetItem": 1, "Query": 0, "TransactWriteItems": 0, **none, "PutItem": 30}
    # By default one-item writes go 25 to a BatchExecuteStatement: new customers (INSERT) ...
    statements = DynamoDBFeatureStore(dynamodb, table)
    await statements.apply([login(3000 + i, customer=f"c-stmt-{i}") for i in range(30)], now=AS_OF)
    assert statements.requests == {
        "BatchGetItem": 1,
        "Query": 0,
        "TransactWriteItems": 0,
        "BatchExecuteStatement": 2,
        "PutItem": 0,
    }
    # ... and customers written before (UPDATE on the version read), counted once each
    await statements.apply([login(4000 + i, customer=f"c-stmt-{i}") for i in range(30)], now=AS_OF)
    assert statements.requests["BatchExecuteStatement"] == 4 and statements.requests["PutItem"] == 0
    state = await statements.get([f"c-stmt-{i}" for i in range(30)])
    assert all(sum(p.counts.get("n.login", 0) for p in s.pages.values()) == 2 for s in state.values())


async def test_two_workers_racing_on_one_customer_lose_and_double_nothing(dynamodb: Any, table: str) -> None:
    first, second = DynamoDBFeatureStore(dynamodb, table), DynamoDBFeatureStore(dynamodb, table)
    events = [login(i) for i in range(60)]
    # overlapping batches, as two workers see after a visibility timeout or a lease takeover
    batches_a = [events[i : i + 10] for i in range(0, 60, 10)]
    batches_b = [events[i : i + 15] for i in range(0, 60, 15)]

    async def run(store: DynamoDBFeatureStore, batches: list[list[Event]]) -> None:
        for batch in batches:
            await store.apply(batch, now=AS_OF)

    await asyncio.gather(run(first, batches_a), run(second, batches_b))
    state = (await first.get(["c-busy"]))["c-busy"]
    assert sum(p.counts["n.login"] for p in state.pages.values()) == 60
    assert state.profile.version >= 2


async def partition(dynamodb: Any, table: str, customer: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        response = await dynamodb.query(
            TableName=table,
            KeyConditionExpression="customer_id = :c",
            ExpressionAttributeValues={":c": {"S": customer}},
            **kwargs,
        )
        items += response["Items"]
        if "LastEvaluatedKey" not in response:
            return items
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


async def test_a_customer_with_ten_thousand_events_in_a_day_stays_under_the_item_limit(
    dynamodb: Any, table: str
) -> None:
    store = DynamoDBFeatureStore(dynamodb, table)
    events = [
        validate_event(
            {
                "event_id": f"r-{i}",
                "customer_id": "c-huge",
                "type": "session_rated",
                "occurred_at": "2026-11-26T10:00:00Z",
                "rating": 5,
                "tutor_id": f"tutor-{i:058d}",
            }
        )
        for i in range(10_000)
    ]
    for i in range(0, len(events), 2_500):
        await store.apply(events[i : i + 2_500], now=AS_OF)
    items = await partition(dynamodb, table, "c-huge")
    assert max(item_bytes(item) for item in items) < ITEM_LIMIT_BYTES / 4
    segments = [item for item in items if item["bucket"]["S"].startswith("s#")]
    assert segments and all(
        int(item["expires_at"]["N"]) > AS_OF.timestamp() + 35 * 86_400 for item in segments
    )
    state = (await store.get(["c-huge"]))["c-huge"]
    assert len(state.pages) == 10_000 // PAGE_CAPACITY
    assert sum(p.counts["n.session_rated"] for p in state.pages.values()) == 10_000
    assert state_from_items("c-huge", items) == state


async def test_any_batch_of_one_customer_stays_inside_the_transaction_limits(
    dynamodb: Any, table: str
) -> None:
    """40,000 events of one customer in one batch, over every day of retention and 72 pages of one
    busy day: each transaction stays under TransactWriteItems' 100 items (moto refuses more) and
    4 MB, the batch is written in parts, each its own read and transaction."""
    sizes: list[tuple[int, int]] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(dynamodb, name)

        async def transact_write_items(self, **kwargs: Any) -> Any:
            sizes.append(
                (
                    len(kwargs["TransactItems"]),
                    sum(item_bytes(a["Put"]["Item"]) for a in kwargs["TransactItems"]),
                )
            )
            return await dynamodb.transact_write_items(**kwargs)

    store = DynamoDBFeatureStore(Counting(), table)  # type: ignore[arg-type]
    busy = [login(i, "c-flood", "2026-11-26T10:00:00Z") for i in range(36_000)]
    spread = [
        login(100_000 + i, "c-flood", (AS_OF - timedelta(days=i % 34, hours=1)).isoformat())
        for i in range(4_000)
    ]
    result = await store.apply(spread + busy, now=AS_OF)
    assert len(result.applied) == 40_000
    assert len(sizes) > 1 and max(n for n, _ in sizes) <= MAX_ITEMS_PER_WRITE
    assert max(size for _, size in sizes) <= 4_000_000
    state = (await store.get(["c-flood"]))["c-flood"]
    assert sum(p.counts["n.login"] for p in state.pages.values()) == 40_000
    again = await store.apply(busy[:5_000] + spread[:100], now=AS_OF)
    assert len(again.duplicates) == 5_100 and again.applied == []


async def test_a_customer_with_a_long_history_keeps_a_small_profile(dynamodb: Any, table: str) -> None:
    """Five events a day for 35 days, a batch a day: the profile item stays near 1 KB (one write
    unit) and the older pages live in segments of about 4 KB (one read unit)."""
    store = DynamoDBFeatureStore(dynamodb, table)
    memory = MemoryFeatureStore()
    for day in range(35):
        when = AS_OF - timedelta(days=34 - day)
        batch = [
            validate_event(
                {
                    "event_id": f"d{day}-{n}",
                    "customer_id": "c-long",
                    "type": "session_completed",
                    "occurred_at": (when - timedelta(hours=n)).isoformat(),
                    "tutor_id": f"t-{n % 3}",
                    "subject": "algebra",
                    "duration_minutes": 45,
                    "first_session": day == 0,
                    "success": True,
                }
            )
            for n in range(5)
        ]
        await store.apply(batch, now=when)
        await memory.apply(batch, now=when)
    items = await partition(dynamodb, table, "c-long")
    profile = next(item for item in items if item["bucket"]["S"] == "profile")
    assert item_bytes(profile) <= PROFILE_ROLL_AT + 200
    segments = [item for item in items if item["bucket"]["S"].startswith("s#")]
    assert len(segments) >= 2 and all(item_bytes(item) <= SEGMENT_TARGET + 400 for item in segments)
    stored = (await store.get(["c-long"]))["c-long"]
    remembered = (await memory.get(["c-long"]))["c-long"]
    assert stored.pages == remembered.pages and stored.profile == remembered.profile
    assert np.array_equal(compute_features(stored, AS_OF), compute_features(remembered, AS_OF))


async def test_segments_this_worker_read_or_wrote_are_not_read_again_until_another_writer_changes_them(
    dynamodb: Any, table: str
) -> None:
    history = [
        login(i, customer="c-seg", when=(AS_OF - timedelta(days=i % 30, hours=1)).isoformat())
        for i in range(120)
    ]
    writer = DynamoDBFeatureStore(dynamodb, table)
    await writer.apply(history, now=AS_OF)
    assert writer.requests["BatchGetItem"] == 1  # a new customer: its profile only
    await writer.apply([login(500, customer="c-seg", when="2026-11-27T10:00:00Z")], now=AS_OF)
    assert writer.requests["BatchGetItem"] == 2  # the profile; its segments are the ones it wrote
    other = DynamoDBFeatureStore(dynamodb, table)
    await other.apply(
        [login(501, customer="c-seg", when=(AS_OF - timedelta(days=25)).isoformat())], now=AS_OF
    )
    assert other.requests["BatchGetItem"] == 2  # the profile, then its segments
    state = (await writer.get(["c-seg"]))["c-seg"]  # one segment changed: read again, the others cached
    assert writer.requests["BatchGetItem"] == 4 and writer.segments.hits > 0
    assert sum(page.counts["n.login"] for page in state.pages.values()) == 122


async def test_a_quiet_customer_whose_old_segments_ttl_deleted_is_still_read(
    dynamodb: Any, table: str
) -> None:
    """The profile of a customer quiet for weeks still lists segments that TTL may have deleted
    (their pages past retention): `get` (the re-scoring sweeper's read) reads the customer, it
    does not take the missing segment for a torn read."""
    then = datetime.now(UTC) - timedelta(days=45)
    history = [
        login(i, customer="c-quiet", when=(then - timedelta(days=i % 20, hours=1)).isoformat())
        for i in range(80)
    ]
    store = DynamoDBFeatureStore(dynamodb, table)
    await store.apply(history, now=then)
    segments = [
        item for item in await partition(dynamodb, table, "c-quiet") if item["bucket"]["S"].startswith("s#")
    ]
    assert segments
    for item in segments:  # what DynamoDB's TTL does, some time after `expires_at`
        assert int(item["expires_at"]["N"]) < datetime.now(UTC).timestamp()
        await dynamodb.delete_item(
            TableName=table, Key={"customer_id": item["customer_id"], "bucket": item["bucket"]}
        )
    fresh = DynamoDBFeatureStore(dynamodb, table)
    state = (await fresh.get(["c-quiet"]))["c-quiet"]
    assert state.profile.lifetime == (await store.get(["c-quiet"]))["c-quiet"].profile.lifetime
    assert fresh.requests["BatchGetItem"] == 2


async def test_bootstrap_of_the_table_is_idempotent(dynamodb: Any, table: str) -> None:
    assert await create_feature_table(dynamodb, table) is False
    ttl = await dynamodb.describe_time_to_live(TableName=table)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
