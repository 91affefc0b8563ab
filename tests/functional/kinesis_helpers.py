"""What the Kinesis source tests (`test_kinesis_source`, `test_kinesis_risks`) share: fast source
settings, a consumer that drives `deliveries()` as the runtime does, and ways to observe the source
from outside instead of sleeping: reads that found nothing more, rounds of the lease coordinator
(its heartbeat), renewals (lease counters). The fixtures `leases` and `stop_consumers` are in
`tests/functional/conftest.py`."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from tests.fakes import wait_until
from worker.ports import Delivery, Record, Settlement
from worker.sources.kinesis import KinesisSource, ensure_stream
from worker.sources.leases import HEARTBEAT_PREFIX

FAST = {
    "lease_duration": 2.0,
    "poll_interval": 0.1,
    "min_get_interval": 0.02,
    "retry_backoff": 0.2,
    "stop_grace": 2.0,
}

RUNNING: list[Consumer] = []  # stopped by the `stop_consumers` fixture, whatever the test did


def event(customer: str, n: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"{customer}-{n}",
            "customer_id": customer,
            "type": "login",
            "occurred_at": "2026-11-27T12:00:00Z",
        }
    ).encode()


class Consumer:
    """Drives `deliveries()` like the runtime does, settling each delivery by `policy`."""

    def __init__(
        self, source: KinesisSource, policy: Callable[[Delivery], Awaitable[Settlement]] | None = None
    ):
        self.source = source
        self.policy = policy
        self.deliveries: list[Delivery] = []
        self.task = asyncio.create_task(self._run())
        RUNNING.append(self)

    async def _run(self) -> None:
        handlers: set[asyncio.Task[None]] = set()
        async for delivery in self.source.deliveries():
            self.deliveries.append(delivery)
            handler = asyncio.create_task(self._handle(delivery))  # concurrently, as the runtime does
            handlers.add(handler)
            handler.add_done_callback(handlers.discard)

    async def _handle(self, delivery: Delivery) -> None:
        if self.policy is not None:
            await delivery.settle(await self.policy(delivery))
        else:
            await delivery.settle(Settlement(done=list(delivery.records)))

    @property
    def records(self) -> list[Record]:
        return [record for delivery in self.deliveries for record in delivery.records]

    def event_ids(self) -> list[str]:
        return [json.loads(record.body)["event_id"] for record in self.records]

    async def stop(self) -> None:
        await self.source.stop()
        await asyncio.wait_for(self.task, 10)


class WatchedKinesis:
    """A Kinesis client (moto's, or `FakeKinesis`) that counts, per shard, the GetRecords calls that
    came back empty. A shard is read one delivery at a time (the next GetRecords waits until the
    last delivery is settled), so an empty read after the records a test expects means the reader
    settled them and found nothing more: what a test would otherwise sleep for before asserting
    that nothing else (a duplicate, a record read again) arrives."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._shard_of: dict[str, str] = {}
        self.empty_reads: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get_shard_iterator(self, **kwargs: Any) -> Any:
        response = await self._client.get_shard_iterator(**kwargs)
        self._shard_of[response["ShardIterator"]] = kwargs["ShardId"]
        return response

    async def get_records(self, **kwargs: Any) -> Any:
        response = await self._client.get_records(**kwargs)
        shard = self._shard_of.pop(kwargs["ShardIterator"], None)
        if shard is not None:
            if response.get("NextShardIterator"):
                self._shard_of[response["NextShardIterator"]] = shard
            if not response.get("Records"):
                self.empty_reads[shard] += 1
        return response

    async def read_to_the_end(self, shards: Iterable[str]) -> None:
        """Wait until each of `shards` has had an empty read from now on."""
        marks = {shard: self.empty_reads[shard] for shard in shards}
        await wait_until(
            lambda: all(self.empty_reads[shard] > mark for shard, mark in marks.items()),
            what=f"an empty read on {sorted(marks)}",
        )


def shards_of(consumer: Consumer) -> set[str]:
    return {record.source_id.split(":")[0] for record in consumer.records}


async def lease_items(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    response = await dynamodb.scan(TableName=table, ConsistentRead=True)
    return {item["shard_id"]["S"]: item for item in response["Items"]}


async def beat(dynamodb: Any, table: str, worker_id: str) -> int:
    """The worker's heartbeat: one more per round of its lease coordinator (0 before the first)."""
    item = (await lease_items(dynamodb, table)).get(HEARTBEAT_PREFIX + worker_id)
    return int(item["beat"]["N"]) if item else 0


async def rounds(dynamodb: Any, table: str, worker_id: str, count: int) -> None:
    """Wait until the worker's coordinator has run `count` more rounds (each renews, beats, scans
    the table and takes or steals what its plan says) than when this was called."""
    start = await beat(dynamodb, table, worker_id)

    async def done() -> bool:
        return await beat(dynamodb, table, worker_id) >= start + count

    await wait_until(done, what=f"{count} lease rounds of {worker_id}")


async def counters(dynamodb: Any, table: str) -> dict[str, int]:
    """Each shard lease's counter: it moves on every take, renewal and release."""
    return {
        sid: int(item["lease_counter"]["N"])
        for sid, item in (await lease_items(dynamodb, table)).items()
        if not sid.startswith(HEARTBEAT_PREFIX)
    }


async def renewed(dynamodb: Any, table: str, times: int) -> None:
    """Wait until every shard lease has moved `times` more (renewals, at lease_duration / 3 each)."""
    start = await counters(dynamodb, table)

    async def done() -> bool:
        now = await counters(dynamodb, table)
        return all(now[sid] >= count + times for sid, count in start.items())

    await wait_until(done, what=f"every lease renewed {times} times")


async def stream_of(kinesis: Any, prefix: str, shards: int) -> str:
    name = f"{prefix}events"
    assert await ensure_stream(kinesis, name, shards) is True
    assert await ensure_stream(kinesis, name, shards) is False
    return name
