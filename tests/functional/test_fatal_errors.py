"""Errors no retry can fix stop the worker with a one-line error instead of a worker that runs and
does nothing: `run_worker` raises (the CLI exits 1) for a missing queue or stream."""

from __future__ import annotations

import asyncio

import pytest

from cli.commands.bootstrap import bootstrap
from worker.exceptions import WorkerError
from worker.runtime import run_worker
from worker.settings import Settings


async def settings_for(prefix: str, **overrides: object) -> Settings:
    base = Settings(table_prefix=prefix, health_port=0, sqs_wait_seconds=1, **overrides)  # type: ignore[arg-type]
    resources = {r.setting: r.value for r in await bootstrap(base) if r.setting}
    return base.model_copy(
        update={
            "dlq_url": resources["CHURN_DLQ_URL"],
            "alerts_topic_arn": resources["CHURN_ALERTS_TOPIC_ARN"],
        }
    )


async def test_a_missing_queue_stops_the_worker_with_a_one_line_error(
    aws_endpoint: str, unique_prefix: str
) -> None:
    settings = await settings_for(unique_prefix)
    settings = settings.model_copy(
        update={"sqs_queue_url": f"{aws_endpoint}/123456789012/{unique_prefix}gone"}
    )
    with pytest.raises(WorkerError) as caught:
        await asyncio.wait_for(run_worker(settings, stop=asyncio.Event()), 60)
    message = str(caught.value)
    assert "queue" in message and "NonExistentQueue" in message and "\n" not in message


async def test_a_missing_stream_stops_the_worker_with_a_one_line_error(
    aws_endpoint: str, unique_prefix: str
) -> None:
    settings = await settings_for(
        unique_prefix, source="kinesis", kinesis_stream=f"{unique_prefix}events", kinesis_shards=1
    )
    settings = settings.model_copy(update={"kinesis_stream": f"{unique_prefix}gone"})
    with pytest.raises(WorkerError) as caught:
        await asyncio.wait_for(run_worker(settings, stop=asyncio.Event()), 60)
    assert "ResourceNotFoundException" in str(caught.value)
