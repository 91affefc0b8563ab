"""The SQS source and DLQ against moto's server: long polling, deletes only on settle, failed
records come back, heartbeats keep a slow batch hidden, bad events keep their error attributes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.fakes import wait_until
from worker.ports import Record, Settlement
from worker.sources.sqs import SqsDeadLetterQueue, SqsSource


@pytest.fixture
async def queue(sqs: Any, unique_prefix: str) -> str:
    return (await sqs.create_queue(QueueName=f"{unique_prefix}events"))["QueueUrl"]  # type: ignore[no-any-return]


class WatchedSqs:
    """The SQS client, noting visibility extensions (a delivery's heartbeat), receives in flight
    and receives cut short by a cancellation."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.extensions = 0
        self.receiving = 0
        self.cancelled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def change_message_visibility_batch(self, **kwargs: Any) -> Any:
        response = await self._client.change_message_visibility_batch(**kwargs)
        self.extensions += 1
        return response

    async def receive_message(self, **kwargs: Any) -> Any:
        self.receiving += 1
        try:
            return await self._client.receive_message(**kwargs)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.receiving -= 1


async def send(sqs: Any, queue: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": f'{{"n": {start + i}}}'} for i in range(min(10, count - start))
        ]
        await sqs.send_message_batch(QueueUrl=queue, Entries=entries)


async def take(source: SqsSource, records: int, within: float = 10) -> list[Any]:
    """Deliveries until `records` distinct messages came (a standard queue may repeat one)."""
    out = []
    async with asyncio.timeout(within):
        async for delivery in source.deliveries():
            out.append(delivery)
            if len({r.body for d in out for r in d.records}) >= records:
                break
    return out


async def visible(sqs: Any, queue: str) -> int:
    attrs = await sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"]) + int(
        attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
    )


async def test_a_backlog_is_received_in_bigger_deliveries_and_a_short_receive_ends_one(
    sqs: Any, queue: str
) -> None:
    """A full receive means more are waiting: the poller receives again at once, up to half the
    pipeline batch (`max_records`), so a backlog makes bigger batches; each message once."""
    await send(sqs, queue, 75)
    source = SqsSource(sqs, queue, pollers=1, wait_seconds=1, visibility_timeout=30, max_records=60)
    deliveries = await take(source, 75)
    await source.stop()
    sizes = [len(d.records) for d in deliveries]
    assert max(sizes) == 30 and sum(sizes) == 75, sizes
    for delivery in deliveries:
        await delivery.settle(Settlement(done=list(delivery.records)))
    assert await visible(sqs, queue) == 0


async def test_settled_records_are_deleted_and_failed_ones_come_back(sqs: Any, queue: str) -> None:
    await send(sqs, queue, 25)
    source = SqsSource(sqs, queue, pollers=2, wait_seconds=1, visibility_timeout=30, retry_delay=0)
    deliveries = await take(source, 25)
    await source.stop()
    bodies = [r.body for d in deliveries for r in d.records]
    # Standard queues deliver at least once: moto, like SQS, may hand two pollers the same message.
    assert set(bodies) == {f'{{"n": {i}}}'.encode() for i in range(25)}
    assert all(len(d.records) <= 10 for d in deliveries)
    failing = next(r for d in deliveries for r in d.records if bodies.count(r.body) == 1)
    failed_body = failing.body
    for delivery in deliveries:
        await delivery.settle(
            Settlement(
                done=[r for r in delivery.records if r is not failing],
                failed=[r for r in delivery.records if r is failing],
            )
        )
    again = SqsSource(sqs, queue, pollers=1, wait_seconds=1, visibility_timeout=30)
    redelivered = await take(again, 1)
    await again.stop()
    assert [r.body for d in redelivered for r in d.records] == [failed_body]
    assert redelivered[0].records[0].receive_count == 2
    await redelivered[0].settle(Settlement(done=list(redelivered[0].records)))
    assert await visible(sqs, queue) == 0


async def test_a_slow_batch_stays_hidden_while_its_heartbeat_runs(sqs: Any, queue: str) -> None:
    await send(sqs, queue, 1)
    watched = WatchedSqs(sqs)
    visibility = 3  # seconds; the heartbeat extends it every max(1, visibility / 3) seconds
    source = SqsSource(watched, queue, pollers=1, wait_seconds=1, visibility_timeout=visibility)
    [delivery] = await take(source, 1)
    received = time.monotonic()
    await source.stop()
    # SQS (moto) hides a message by its own wall clock: a second past the visibility it was
    # received with, and the heartbeat extended it meanwhile. Only the heartbeat keeps it hidden.
    await wait_until(
        lambda: watched.extensions >= 2 and time.monotonic() > received + visibility + 1,
        within=30,
        what="the visibility timeout to pass, heartbeats extending it",
    )
    other = (await sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0)).get("Messages", [])
    assert other == []
    await delivery.settle(Settlement(done=list(delivery.records)))
    assert await visible(sqs, queue) == 0


async def test_stop_ends_polling_promptly_even_during_a_long_poll(sqs: Any, queue: str) -> None:
    watched = WatchedSqs(sqs)
    source = SqsSource(watched, queue, pollers=2, wait_seconds=20)
    consumer = asyncio.create_task(take(source, 1, within=30))
    await wait_until(lambda: watched.receiving == 2, what="both pollers in a long poll")
    async with asyncio.timeout(10):  # only against a hang: how the polls ended is asserted below
        await source.stop()
        assert await consumer == []
    assert watched.cancelled == 2 and watched.receiving == 0  # cut short, not waited out


async def test_quarantine_keeps_the_body_and_says_why(sqs: Any, unique_prefix: str) -> None:
    dlq = (await sqs.create_queue(QueueName=f"{unique_prefix}dlq"))["QueueUrl"]
    await SqsDeadLetterQueue(sqs, dlq).quarantine(
        Record(b"not json", "h", "m-1"), "not_json", "body is not JSON"
    )
    await SqsDeadLetterQueue(sqs, dlq).quarantine(Record(b"\x00\xff", "h", "m-2"), "not_json", "binary")
    got = (await sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]))[
        "Messages"
    ]
    by_source = {m["MessageAttributes"]["source_id"]["StringValue"]: m for m in got}
    first = by_source["m-1"]
    assert first["Body"] == "not json"
    assert first["MessageAttributes"]["error_code"]["StringValue"] == "not_json"
    assert first["MessageAttributes"]["error_detail"]["StringValue"] == "body is not JSON"
    assert by_source["m-2"]["MessageAttributes"]["body_encoding"]["StringValue"] == "base64"
