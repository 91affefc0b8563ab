"""What a DynamoDB transaction can hold, against the feature store: moto's server (which refuses
more than 100 items, as DynamoDB does) over HTTP. A customer's batch must be written whatever its
shape, or the batch fails and comes back forever."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.events import validate_event

pytestmark = pytest.mark.faults


@pytest.fixture
async def dynamodb(aws_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        yield client


async def test_one_customers_year_of_events_in_one_batch_is_written(
    dynamodb: Any, unique_prefix: str
) -> None:
    """A backfill on SQS: 200 events of one customer, one a day, retention 365 days (allowed):
    200 day pages, more than one transaction's 100 items."""
    table = table_name(unique_prefix)
    await create_feature_table(dynamodb, table)
    store = DynamoDBFeatureStore(dynamodb, table, retention=timedelta(days=365))
    now = datetime.now(UTC)
    events = [
        validate_event(
            {
                "event_id": f"e-{day}",
                "customer_id": "c-backfill",
                "type": "login",
                "occurred_at": (now - timedelta(days=day, hours=1)).isoformat(),
            }
        )
        for day in range(200)
    ]
    result = await store.apply(events, now)
    assert len(result.applied) == 200
    state = (await store.get(["c-backfill"]))["c-backfill"]
    assert sum(page.counts.get("n.login", 0) for page in state.pages.values()) == 200
    assert (await store.apply(events[::7], now)).applied == []  # redelivered: counted once
