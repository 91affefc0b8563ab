"""The DynamoDB feature store never drops an event it was given, whatever mix of already stored
and new events a batch holds and however often the batch must be halved to fit a transaction.

A redelivery mixed with new events of a heavy customer (a backfill with large batches) makes the
store halve a batch whose write is too big; when the halved prefix held only stored events, the
rest of the batch used to be neither applied nor reported, and the records were acknowledged. The
transaction limits are shrunk here (`MAX_ITEMS_PER_WRITE`, `MAX_BYTES_PER_WRITE`) so that small
batches cross them as a backfill crosses the real ones, and every example is checked against the
in-memory store given the same events.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from aiobotocore.session import get_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import layout
from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import Event, validate_event
from features.state import DayPage
from features.store import MemoryFeatureStore

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
# moto's server takes any credentials; given explicitly, so the module-scoped table needs no env.
CLIENT = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
KINDS = ("login", "message_sent", "ib_call", "session_rated")


def event(i: int, customer: str, days_ago: int, kind: str) -> Event:
    body = {
        "event_id": f"{customer}-e{i}",
        "customer_id": customer,
        "type": kind,
        "occurred_at": (NOW - timedelta(days=days_ago, minutes=i % 600)).isoformat(),
    }
    if kind == "ib_call":
        body["sentiment"] = "negative"
    if kind == "session_rated":  # a tutor id of its own: bytes that do not compress away
        body.update(
            rating=1 + i % 5, tutor_id=f"tutor-{uuid.uuid5(uuid.NAMESPACE_OID, body['event_id']).hex}"
        )
    return validate_event(body)


async def check_mix(
    endpoint: str, table: str, stored: int, new: int, days: int, stored_first: bool, seed: int
) -> None:
    rng = random.Random(seed)
    customer = f"c-{uuid.uuid4().hex[:8]}"
    events = [event(i, customer, rng.randrange(days), rng.choice(KINDS)) for i in range(stored + new)]
    already, fresh = events[:stored], events[stored:]
    batch = (already + fresh) if stored_first else rng.sample(already + fresh, len(events))
    async with get_session().create_client("dynamodb", endpoint_url=endpoint, **CLIENT) as client:
        store = DynamoDBFeatureStore(client, table)
        if already:
            await store.apply(already, now=NOW)
        result = await store.apply(batch, now=NOW)
        assert sorted(result.applied) == sorted(e.event_id for e in fresh), (
            "a new event was dropped or doubled"
        )
        assert sorted(result.duplicates) == sorted(e.event_id for e in already)
        state = (await store.get([customer]))[customer]
    memory = MemoryFeatureStore()
    await memory.apply(events, now=NOW)
    # Every event once, day by day. Not page by page: a write split by the limits may start a
    # day's next page where one fold of everything would not (same events, other page numbers).
    assert by_day(state.pages) == by_day((await memory.get([customer]))[customer].pages)


def by_day(
    pages: dict[tuple[int, int], DayPage],
) -> dict[int, tuple[set[bytes], Counter[str], dict[str, list[int]]]]:
    days: dict[int, tuple[set[bytes], Counter[str], dict[str, list[int]]]] = {}
    for (day, _), page in pages.items():
        digests, counts, tutors = days.setdefault(day, (set(), Counter(), {}))
        assert digests.isdisjoint(page.event_digests), "an event counted on two pages of its day"
        digests.update(page.event_digests)
        counts.update(page.counts)
        for tutor, aggregate in page.tutors.items():
            tutors[tutor] = [a + b for a, b in zip(tutors.get(tutor, [0, 0, 0]), aggregate, strict=True)]
    return days


@pytest.fixture(scope="module")
def shared_table(moto_server: str) -> str:
    name = table_name(f"t{uuid.uuid4().hex[:10]}-")

    async def create() -> None:
        async with get_session().create_client("dynamodb", endpoint_url=moto_server, **CLIENT) as client:
            await create_feature_table(client, name)

    asyncio.run(create())
    return name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stored=st.one_of(st.integers(0, 20), st.integers(100, 500)),
    new=st.one_of(st.integers(1, 20), st.integers(100, 500)),
    days=st.one_of(st.integers(1, 6), st.integers(7, 30)),
    stored_first=st.booleans(),
    # Shrunk limits that one event's write always fits (a profile and a few segments; one full day
    # page of distinct tutors' ratings is up to ~15 KB) and that a few hundred events cross.
    max_items=st.sampled_from([5, 6]),
    max_bytes=st.sampled_from([16_000, 20_000, 24_000]),
    seed=st.integers(0, 10_000),
)
def test_no_mix_of_stored_and_new_events_loses_one(
    moto_server: str,
    shared_table: str,
    monkeypatch: pytest.MonkeyPatch,
    stored: int,
    new: int,
    days: int,
    stored_first: bool,
    max_items: int,
    max_bytes: int,
    seed: int,
) -> None:
    monkeypatch.setattr(layout, "MAX_ITEMS_PER_WRITE", max_items)
    monkeypatch.setattr(layout, "MAX_BYTES_PER_WRITE", max_bytes)
    asyncio.run(check_mix(moto_server, shared_table, stored, new, days, stored_first, seed))


def test_a_redelivered_prefix_too_big_to_write_with_the_rest_keeps_the_rest(
    moto_server: str, shared_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case that lost events: the batch is halved, and its first half was all stored."""
    monkeypatch.setattr(layout, "MAX_ITEMS_PER_WRITE", 6)
    monkeypatch.setattr(layout, "MAX_BYTES_PER_WRITE", 10_000)
    asyncio.run(check_mix(moto_server, shared_table, stored=400, new=400, days=3, stored_first=True, seed=1))
