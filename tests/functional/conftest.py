"""AWS clients on moto's server for the functional tests (one aiobotocore client per service and
test), and the Kinesis lease-table fixtures the source tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session


@pytest.fixture
async def dynamodb(aws_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        yield client


@pytest.fixture
async def kinesis(aws_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("kinesis", region_name="us-east-1") as client:
        yield client


@pytest.fixture
async def sqs(aws_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client("sqs", region_name="us-east-1") as client:
        yield client


@pytest.fixture
async def sns_sqs(aws_endpoint: str) -> AsyncIterator[tuple[Any, Any]]:
    """An SNS and an SQS client: alerts published to a topic, read from a subscribed queue."""
    session = get_session()
    async with (
        session.create_client("sns", region_name="us-east-1") as sns,
        session.create_client("sqs", region_name="us-east-1") as sqs,
    ):
        yield sns, sqs


@pytest.fixture
async def leases(dynamodb: Any, unique_prefix: str) -> str:
    """A fresh Kinesis lease table (creating it is idempotent: the second call finds it)."""
    from worker.sources.leases import create_lease_table, lease_table_name

    name = lease_table_name(unique_prefix)
    assert await create_lease_table(dynamodb, name) is True
    assert await create_lease_table(dynamodb, name) is False
    return name


@pytest.fixture
async def stop_consumers(dynamodb: Any) -> AsyncIterator[None]:
    """A failed assertion must not leave Kinesis readers (`tests.functional.kinesis_helpers.Consumer`)
    polling into the next test, nor past the clients (torn down after this)."""
    import asyncio

    from tests.functional.kinesis_helpers import RUNNING

    yield
    while RUNNING:
        consumer = RUNNING.pop()
        await consumer.source.stop()
        consumer.task.cancel()
        await asyncio.gather(consumer.task, return_exceptions=True)
