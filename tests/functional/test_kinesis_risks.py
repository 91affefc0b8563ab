"""Regression tests for the Kinesis risks of issue 10, each named after the guarantee it protects:
moto's server over HTTP, with the fault proxy (`tests.faults.proxy`) in front of it where moto
cannot misbehave on its own (it never throttles and has no clock skew)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.fakes import FakeClock, ListDlq, wait_until
from tests.faults.proxy import Fault, FaultProxy
from tests.functional.kinesis_helpers import (
    FAST,
    Consumer,
    WatchedKinesis,
    counters,
    event,
    lease_items,
    renewed,
    rounds,
    shards_of,
    stream_of,
)
from worker.exceptions import FatalAwsError
from worker.ports import Delivery, Settlement
from worker.sources.kinesis import KinesisSource
from worker.sources.leases import LeaseTable

pytestmark = pytest.mark.usefixtures("stop_consumers")  # no reader outlives its test


@pytest.fixture
def proxy(moto_server: str) -> AsyncIterator[FaultProxy]:
    with FaultProxy(moto_server) as started:
        yield started


@pytest.fixture
async def proxied_dynamodb(proxy: FaultProxy) -> AsyncIterator[Any]:
    """A DynamoDB client whose calls go through the fault proxy (botocore retries off: the source's
    own handling of a throttled call is what is under test)."""
    from aiobotocore.config import AioConfig

    config = AioConfig(retries={"mode": "standard", "max_attempts": 1})
    async with get_session().create_client(
        "dynamodb", region_name="us-east-1", endpoint_url=proxy.url, config=config
    ) as client:
        yield client


async def test_a_live_lease_is_not_taken_when_its_owners_clock_is_an_hour_behind(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    """Expiry is judged by the counter standing still on the observer's monotonic clock, not by
    comparing the owner's `expires_at` (written on its clock) with the observer's wall clock."""
    stream = await stream_of(kinesis, unique_prefix, 1)
    behind = KinesisSource(
        kinesis, dynamodb, stream, leases, "w-behind", clock=lambda: time.time() - 3600, **FAST
    )
    a = Consumer(behind)
    await wait_until(lambda: behind.held_shards != [])
    item = next(iter((await lease_items(dynamodb, leases)).values()))
    assert int(item["expires_at"]["N"]) / 1000 < time.time() - 3000  # by wall clocks, long expired
    b = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w-on-time", **FAST))
    await rounds(dynamodb, leases, "w-on-time", 1)
    # Rounds spanning more than a lease duration on b's clock (one every lease_duration / 3): b
    # judged the lease by its counter all along, and the counter moves.
    await rounds(dynamodb, leases, "w-on-time", 4)
    assert b.source.held_shards == [] and b.source.metrics.leases_taken == 0
    assert behind.held_shards != [] and behind.metrics.leases_lost == 0
    await asyncio.gather(a.stop(), b.stop())


async def test_a_dead_workers_lease_is_taken_once_its_counter_stood_still_whatever_its_clock_said(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    shard_id = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
    ahead = time.time() + 3600  # its clock was an hour ahead: by wall clocks, an hour to wait
    await dynamodb.put_item(
        TableName=leases,
        Item={
            "shard_id": {"S": shard_id},
            "owner": {"S": "w-crashed"},
            "lease_counter": {"N": "7"},
            "expires_at": {"N": str(int(ahead * 1000))},
            "parents": {"L": []},
            "start": {"S": "TRIM_HORIZON"},
        },
    )
    await kinesis.put_record(StreamName=stream, Data=event("c-1", 0), PartitionKey="c-1")
    clock = FakeClock()  # the live worker's monotonic clock: expiry is judged by it alone
    source = KinesisSource(kinesis, dynamodb, stream, leases, "w-live", monotonic=clock, **FAST)
    consumer = Consumer(source)
    await rounds(dynamodb, leases, "w-live", 2)  # it has seen the counter, standing still
    assert consumer.records == [] and source.metrics.leases_taken == 0  # an hour's expires_at aside
    clock.advance(FAST["lease_duration"] + 0.1)  # ... for longer than a lease duration
    await wait_until(lambda: len(consumer.records) == 1)
    assert consumer.source.metrics.leases_taken == 1
    await consumer.stop()


async def test_a_take_starts_from_the_checkpoint_as_it_is_at_the_take_never_an_older_one(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    """The old owner may checkpoint between the new owner's scan and its take (a checkpoint does not
    move the counter): the new owner must start from that checkpoint, or it would move it back."""
    stream = await stream_of(kinesis, unique_prefix, 1)
    shard_id = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
    old, new = LeaseTable(dynamodb, leases, "w-old", 2.0), LeaseTable(dynamodb, leases, "w-new", 2.0)
    from worker.sources.leases import Lease

    await old.create(Lease(shard_id))
    held = await old.take((await old.scan())[0][shard_id], time.time())
    assert held is not None and await old.checkpoint(held, "1000")
    scanned = (await new.scan())[0][shard_id]
    assert scanned.checkpoint == "1000"
    assert await old.checkpoint(held, "2000")  # after the scan, before the take
    taken = await new.take(scanned, time.time())
    assert taken is not None and taken.owner == "w-new" and taken.checkpoint == "2000"
    assert not await old.checkpoint(held, "3000")  # fenced from the take on
    assert (await lease_items(dynamodb, leases))[shard_id]["checkpoint"]["S"] == "2000"


async def test_a_release_after_a_renewal_the_worker_never_heard_of_still_frees_the_lease(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    """Shutdown cancels the coordinator mid-renewal: the renewal lands, the worker keeps the old
    counter. Its release must still free the lease (or the next worker waits a whole lease out),
    and a worker whose lease was taken over meanwhile must not free the new owner's."""
    stream = await stream_of(kinesis, unique_prefix, 1)
    shard_id = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
    mine, other = LeaseTable(dynamodb, leases, "w-mine", 2.0), LeaseTable(dynamodb, leases, "w-other", 2.0)
    from worker.sources.leases import Lease

    await mine.create(Lease(shard_id))
    held = await mine.take((await mine.scan())[0][shard_id], time.time())
    assert held is not None
    assert await mine.renew(held, time.time()) is not None  # landed; the answer was never read
    assert await mine.release(held)
    item = (await lease_items(dynamodb, leases))[shard_id]
    assert "owner" not in item and int(item["lease_counter"]["N"]) == held.counter + 2

    taken = await other.take((await other.scan())[0][shard_id], time.time())
    assert taken is not None
    assert not await mine.release(held)  # not mine any more
    assert (await lease_items(dynamodb, leases))[shard_id]["owner"]["S"] == "w-other"


async def test_a_throttled_checkpoint_is_retried_in_place_not_read_as_a_lost_lease(
    kinesis: Any, proxied_dynamodb: Any, dynamodb: Any, proxy: FaultProxy, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    proxy.set_faults(Fault("dynamodb:UpdateItem", "throttle", times=3, body_contains=b"#checkpoint"))
    await kinesis.put_records(
        StreamName=stream, Records=[{"Data": event("c-1", n), "PartitionKey": "c-1"} for n in range(5)]
    )
    watched = WatchedKinesis(kinesis)
    consumer = Consumer(
        KinesisSource(watched, proxied_dynamodb, stream, leases, "w1", throttle_backoff=0.05, **FAST)
    )
    await wait_until(lambda: consumer.source.metrics.checkpoints >= 1)
    await watched.read_to_the_end(shards_of(consumer))  # settled, checkpointed, nothing read again
    assert proxy.injected_total("throttle") == 3
    assert consumer.event_ids() == [f"c-1-{n}" for n in range(5)]  # each once: not read again
    assert consumer.source.metrics.checkpoints_retried >= 1  # (botocore may retry one itself)
    assert consumer.source.metrics.leases_lost == 0 and consumer.source.metrics.checkpoints_refused == 0
    items = await lease_items(dynamodb, leases)
    assert [i["checkpoint"]["S"] for i in items.values() if "checkpoint" in i] == [
        consumer.records[-1].handle
    ]
    await consumer.stop()


async def test_throttled_renewals_keep_the_lease_until_it_could_have_expired(
    kinesis: Any, dynamodb: Any, proxied_dynamodb: Any, proxy: FaultProxy, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 2)
    consumer = Consumer(KinesisSource(kinesis, proxied_dynamodb, stream, leases, "w1", **FAST))
    await wait_until(lambda: len(consumer.source.held_shards) == 2)
    # One renewal round in two throttled: less than a lease duration without a renewal.
    proxy.set_faults(
        Fault("dynamodb:UpdateItem", "throttle", times=2, body_contains=b"expires_at = :expires, #owner")
    )
    await wait_until(lambda: proxy.injected_total("throttle") == 2)
    # Then renewals again, for more than a lease duration (one every lease_duration / 3).
    await renewed(dynamodb, leases, times=4)
    assert consumer.source.metrics.leases_lost == 0 and len(consumer.source.held_shards) == 2
    await consumer.stop()


async def test_a_throttled_heartbeat_does_not_hold_up_the_renewals(
    kinesis: Any, dynamodb: Any, proxied_dynamodb: Any, proxy: FaultProxy, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    consumer = Consumer(KinesisSource(kinesis, proxied_dynamodb, stream, leases, "w1", **FAST))
    await wait_until(lambda: len(consumer.source.held_shards) == 1)
    proxy.set_faults(Fault("dynamodb:PutItem", "throttle", body_contains=b"worker#"))  # every heartbeat
    await wait_until(lambda: proxy.injected_total("throttle") >= 2)
    throttled = proxy.injected_total("throttle")
    ((shard, before),) = (await counters(dynamodb, leases)).items()
    # Renewed all along (others see it alive) while the heartbeats keep failing.
    await renewed(dynamodb, leases, times=2)
    assert proxy.injected_total("throttle") > throttled
    assert (await counters(dynamodb, leases))[shard] >= before + 2
    assert consumer.source.held_shards != [] and consumer.source.metrics.leases_lost == 0
    proxy.clear()
    await consumer.stop()


async def test_one_customers_backlog_comes_in_deliveries_its_transaction_can_hold(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    """TransactWriteItems takes 100 items and 4 MB: a customer's events in one delivery must fit one
    (64 events touch at most 64 day pages plus the profile), whatever GetRecords returns."""
    stream = await stream_of(kinesis, unique_prefix, 1)
    records = [("hot", event("hot", n)) for n in range(150)] + [
        (f"c-{n}", event(f"c-{n}", n)) for n in range(20)
    ]
    await kinesis.put_records(StreamName=stream, Records=[{"Data": d, "PartitionKey": k} for k, d in records])
    consumer = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w1", **FAST))
    await wait_until(lambda: len(consumer.records) == 170)
    per_delivery = [
        Counter(r.body.split(b'"customer_id": "')[1].split(b'"')[0] for r in d.records)
        for d in consumer.deliveries
    ]
    assert max(counts[b"hot"] for counts in per_delivery) == 64
    assert [e for e in consumer.event_ids() if e.startswith("hot-")] == [f"hot-{n}" for n in range(150)]
    await wait_until(lambda: consumer.source.metrics.checkpoints == len(consumer.deliveries))
    await consumer.stop()


async def test_a_record_that_keeps_failing_is_read_alone_then_parked_and_the_shard_moves_on(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    await kinesis.put_records(
        StreamName=stream, Records=[{"Data": event("c-1", n), "PartitionKey": "c-1"} for n in range(6)]
    )
    dead = ListDlq()

    async def poison_at_3(delivery: Delivery) -> Settlement:
        bad = [r for r in delivery.records if b'"c-1-3"' in r.body]
        return Settlement(done=[r for r in delivery.records if r not in bad], failed=bad)

    source = KinesisSource(
        kinesis,
        dynamodb,
        stream,
        leases,
        "w1",
        dead_letters=dead,
        poison_attempts=4,
        poison_after=0.0,
        **FAST,
    )
    consumer = Consumer(source, poison_at_3)
    await wait_until(lambda: source.metrics.records_parked == 1 and len(consumer.records) >= 10)
    await wait_until(lambda: source.metrics.checkpoints >= 3)
    ids = consumer.event_ids()
    assert ids[:6] == [f"c-1-{n}" for n in range(6)]
    assert ids.count("c-1-0") == ids.count("c-1-1") == ids.count("c-1-2") == 1  # before it: checkpointed
    assert [d.records[0].body for d in consumer.deliveries[1:4]] == [event("c-1", 3)] * 3
    assert [len(d.records) for d in consumer.deliveries[2:4]] == [1, 1]  # read alone
    ((record, code, _),) = dead.records
    assert b'"c-1-3"' in record.body and code == "retries_exhausted"
    assert ids[-2:] == ["c-1-4", "c-1-5"]
    items = await lease_items(dynamodb, leases)
    assert [i["checkpoint"]["S"] for i in items.values() if "checkpoint" in i] == [
        consumer.records[-1].handle
    ]
    await consumer.stop()


async def test_stop_ends_within_its_grace_even_when_a_delivery_never_settles(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    """ECS kills a task 30 s after SIGTERM: the whole stop, leases released, fits the grace."""
    stream = await stream_of(kinesis, unique_prefix, 2)
    await kinesis.put_record(StreamName=stream, Data=event("c-1", 0), PartitionKey="c-1")
    stuck = asyncio.Event()

    async def never(delivery: Delivery) -> Settlement:
        stuck.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    grace = 2.0
    consumer = Consumer(
        KinesisSource(
            kinesis, dynamodb, stream, leases, "w1", **{**FAST, "stop_grace": grace, "lease_duration": 10.0}
        ),
        never,
    )
    await asyncio.wait_for(stuck.wait(), 10)
    await wait_until(lambda: len(consumer.source.held_shards) == 2)
    await asyncio.wait_for(consumer.source.stop(), timeout=grace)  # what ECS allows, scaled down
    items = await lease_items(dynamodb, leases)
    assert all("owner" not in item for item in items.values())  # released, not left to expire
    consumer.task.cancel()


async def test_access_denied_on_the_lease_table_ends_deliveries_with_a_fatal_error(
    kinesis: Any, proxied_dynamodb: Any, proxy: FaultProxy, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    proxy.set_faults(
        Fault(
            "dynamodb:*",
            "respond",
            status=400,
            body={
                "__type": "com.amazon.coral.service#AccessDeniedException",
                "message": "User is not authorized to perform: dynamodb:Scan",
            },
        )
    )
    source = KinesisSource(kinesis, proxied_dynamodb, stream, leases, "w1", **FAST)
    with pytest.raises(FatalAwsError, match=r"lease table .*AccessDeniedException.*task role"):
        async for _ in source.deliveries():
            pass
