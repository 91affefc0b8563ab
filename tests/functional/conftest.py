"""AWS clients on moto's server for the functional tests: one aiobotocore client per service and test."""

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
