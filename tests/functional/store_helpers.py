"""What the feature-store race tests (`test_torn_reads`, `test_eventual_reads`) share: a feature
table with two writers' clients on it, and the events a stored customer holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.session import get_session

from features.dynamodb import create_feature_table


@asynccontextmanager
async def two_clients_on_a_new_table(table: str) -> AsyncIterator[tuple[Any, Any]]:
    """Two DynamoDB clients (two writers: one tampered with, one plain) and `table` created."""
    session = get_session()
    async with (
        session.create_client("dynamodb", region_name="us-east-1") as a_client,
        session.create_client("dynamodb", region_name="us-east-1") as b_client,
    ):
        await create_feature_table(a_client, table)
        yield a_client, b_client


def digests(state: Any) -> set[bytes]:
    """The digests of every event a customer's state holds, all pages together."""
    return set().union(*(page.event_digests for page in state.pages.values()))
