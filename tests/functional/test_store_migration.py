"""Existing feature tables hold format 1 (a profile and one item per day page). The store reads
them, converts a customer at its next write, counts nothing twice across the change, and the old
code can no longer overwrite a converted customer. On moto's DynamoDB."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

import features.layout
from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import Event, validate_event
from features.layout import read_profile
from features.registry import compute_features
from features.store import MemoryFeatureStore
from tests.functional.format1 import write_format_1

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def session(n: int, days_ago: float, customer: str = "c-old") -> Event:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return validate_event(
        {
            "event_id": f"s-{n}",
            "customer_id": customer,
            "type": "session_completed",
            "occurred_at": when,
            "tutor_id": f"t-{n % 4}",
            "subject": "physics",
            "duration_minutes": 30 + n % 30,
            "first_session": n == 0,
            "success": True,
        }
    )


@pytest.fixture
async def table(dynamodb: Any, unique_prefix: str) -> str:
    name = table_name(unique_prefix)
    await create_feature_table(dynamodb, name)
    return name


async def profile_item(dynamodb: Any, table: str, customer: str) -> dict[str, Any]:
    key = {"customer_id": {"S": customer}, "bucket": {"S": "profile"}}
    item: dict[str, Any] = (await dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True))["Item"]
    return item


def same_state(a: Any, b: Any) -> bool:
    unversioned = dataclasses.replace(a.profile, version=0), dataclasses.replace(b.profile, version=0)
    return a.pages == b.pages and unversioned[0] == unversioned[1]


async def test_a_format_1_customer_is_read_as_it_was_and_converted_by_its_next_write(
    dynamodb: Any, table: str
) -> None:
    history = [session(n, n / 2 + 0.1) for n in range(40)]  # 20 days
    await write_format_1(dynamodb, table, history, NOW)
    memory = MemoryFeatureStore()
    await memory.apply(history, NOW)
    store = DynamoDBFeatureStore(dynamodb, table)

    before = (await store.get(["c-old"]))["c-old"]
    assert same_state(before, (await memory.get(["c-old"]))["c-old"])

    result = await store.apply([session(100, 0.05), history[3], history[30]], NOW)
    await memory.apply([session(100, 0.05)], NOW)
    assert result.applied == ["s-100"] and sorted(result.duplicates) == ["s-3", "s-30"]
    item = await profile_item(dynamodb, table, "c-old")
    assert "sv" in item and "version" not in item  # format 2 now
    assert read_profile("c-old", item).legacy_until is None  # every old page copied

    reads = dict(store.requests)
    after = (await store.get(["c-old"]))["c-old"]
    assert store.requests["Query"] == reads["Query"]  # format 2 only: no Query any more
    remembered = (await memory.get(["c-old"]))["c-old"]
    assert same_state(after, remembered)
    assert np.array_equal(compute_features(after, NOW), compute_features(remembered, NOW))
    assert after.profile.lifetime["sessions"] == 41


async def test_a_format_1_customer_too_big_to_copy_keeps_its_pages_read_only_until_they_age_out(
    dynamodb: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        features.layout, "LEGACY_COPY_BYTES", 100
    )  # as if this customer had megabytes of pages
    history = [session(n, n / 2 + 0.1) for n in range(40)]
    await write_format_1(dynamodb, table, history, NOW)
    memory = MemoryFeatureStore()
    await memory.apply(history, NOW)
    store = DynamoDBFeatureStore(dynamodb, table)

    same_day_as_an_old_page = session(100, 3.2)
    result = await store.apply([same_day_as_an_old_page, history[7]], NOW)
    await memory.apply([same_day_as_an_old_page], NOW)
    assert result.applied == ["s-100"] and result.duplicates == ["s-7"]
    stored = read_profile("c-old", await profile_item(dynamodb, table, "c-old"))
    assert stored.format == 2 and stored.legacy_until is not None
    state = (await store.get(["c-old"]))["c-old"]
    day = int(same_day_as_an_old_page.occurred_at.timestamp()) // 86_400
    assert (day, 1) in state.pages and state.pages[(day, 0)].sealed  # the old page takes no new event
    assert np.array_equal(
        compute_features(state, NOW), compute_features((await memory.get(["c-old"]))["c-old"], NOW)
    )
    queries = store.requests["Query"]
    await store.apply([session(101, 0.1)], NOW)
    assert store.requests["Query"] == queries + 1  # its old pages are still read while they matter

    later = NOW + timedelta(days=40)  # every old page is past retention now
    late_event = validate_event(
        {"event_id": "late", "customer_id": "c-old", "type": "login", "occurred_at": later.isoformat()}
    )
    await store.apply([late_event], later)
    assert read_profile("c-old", await profile_item(dynamodb, table, "c-old")).legacy_until is None
    queries = store.requests["Query"]
    await store.apply([late_event], later)
    assert store.requests["Query"] == queries


async def test_a_worker_of_the_old_code_cannot_overwrite_a_converted_customer(
    dynamodb: Any, table: str
) -> None:
    """The old code's transaction puts the profile on condition that its `version` is the one it
    read: a format-2 profile has none, so the old write fails (and is retried, and fails again, until
    the old worker is replaced) instead of dropping the new format's pages."""
    await write_format_1(dynamodb, table, [session(1, 1)], NOW)
    store = DynamoDBFeatureStore(dynamodb, table)
    await store.apply([session(2, 0.5)], NOW)
    old_put = {
        "Put": {
            "TableName": table,
            "Item": {"customer_id": {"S": "c-old"}, "bucket": {"S": "profile"}, "version": {"N": "2"}},
            "ConditionExpression": "#version = :read_version",
            "ExpressionAttributeNames": {"#version": "version"},
            "ExpressionAttributeValues": {":read_version": {"N": "1"}},
        }
    }
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        await dynamodb.transact_write_items(TransactItems=[old_put])
    state = (await store.get(["c-old"]))["c-old"]
    assert state.profile.lifetime["sessions"] == 2
