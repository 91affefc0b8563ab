"""The Kinesis source against moto's server (streams and the lease table over HTTP), and against
a small fake Kinesis client for what moto does not do: it never closes a shard's iterator after a
split (it routes writes to closed shards), never expires iterators and never throttles. The
lease table is always moto's DynamoDB, so the fencing conditions are evaluated for real."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from plumbing.exceptions import FatalAwsError
from tests.fakes import FakeClock, wait_until
from tests.functional.kinesis_helpers import (
    FAST,
    Consumer,
    WatchedKinesis,
    event,
    lease_items,
    renewed,
    rounds,
    shards_of,
    stream_of,
)
from worker.ports import Delivery, Record, Settlement
from worker.sources.kinesis import KinesisSource
from worker.sources.leases import SHARD_END

pytestmark = pytest.mark.usefixtures("stop_consumers")  # no reader outlives its test

SEQ_BASE = 49590338271490256608559692538361571095921575989136588898  # 56 digits, as Kinesis makes them


async def put_events(kinesis: Any, stream: str, count: int, customers: int = 6, first: int = 0) -> list[str]:
    entries = [(f"c-{i % customers}", event(f"c-{i % customers}", i)) for i in range(first, first + count)]
    response = await kinesis.put_records(
        StreamName=stream, Records=[{"Data": data, "PartitionKey": customer} for customer, data in entries]
    )
    assert response["FailedRecordCount"] == 0
    return [json.loads(data)["event_id"] for _, data in entries]


# --- against moto -----------------------------------------------------------------------------------


async def test_one_consumer_reads_everything_in_order_and_checkpoints(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 2)
    sent = await put_events(kinesis, stream, 40)  # > 9 per shard: "10" must sort after "9"
    consumer = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w1", max_records=7, **FAST))
    await wait_until(lambda: len(consumer.records) >= 40)
    assert sorted(consumer.event_ids()) == sorted(sent)
    for customer in {f"c-{i % 6}" for i in range(40)}:  # per-customer order as sent
        mine = [e for e in consumer.event_ids() if e.startswith(customer + "-")]
        assert mine == [e for e in sent if e.startswith(customer + "-")]
    record = consumer.records[0]
    shard, sequence = record.source_id.split(":")
    assert record.handle == sequence
    iterator = await kinesis.get_shard_iterator(
        StreamName=stream,
        ShardId=shard,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=sequence,
    )
    (raw,) = (await kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=1))["Records"]
    # enqueued_at is the record's arrival time on the stream, in epoch seconds
    assert record.enqueued_at == pytest.approx(raw["ApproximateArrivalTimestamp"].timestamp(), abs=1e-3)
    last = {}
    for r in consumer.records:
        last[r.source_id.split(":")[0]] = r.handle
    await wait_until(lambda: consumer.source.metrics.checkpoints >= len(consumer.deliveries))
    items = await lease_items(dynamodb, leases)
    assert {sid: items[sid]["checkpoint"]["S"] for sid in last} == last
    assert consumer.source.metrics.records_in == 40
    assert set(consumer.source.metrics.millis_behind_latest) == set(last)
    await consumer.stop()


async def test_records_a_kpl_producer_aggregated_arrive_one_by_one(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    from aws_kinesis_agg.aggregator import RecordAggregator

    stream = await stream_of(kinesis, unique_prefix, 1)
    aggregator = RecordAggregator()
    for n in range(3):
        aggregator.add_user_record("c-1", event("c-1", n))
    partition_key, _, data = aggregator.clear_and_get().get_contents()
    await kinesis.put_record(StreamName=stream, Data=data, PartitionKey=partition_key)
    await kinesis.put_record(StreamName=stream, Data=event("c-1", 3), PartitionKey="c-1")  # a plain one after
    consumer = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w1", **FAST))
    await wait_until(lambda: len(consumer.records) >= 4)
    assert consumer.event_ids() == ["c-1-0", "c-1-1", "c-1-2", "c-1-3"]
    packed = consumer.records[:3]
    assert len({r.handle for r in packed}) == 1  # one Kinesis record: one sequence number, one checkpoint
    assert [r.source_id.rsplit("/", 1)[1] for r in packed] == ["0", "1", "2"]
    await wait_until(lambda: consumer.source.metrics.checkpoints >= len(consumer.deliveries))
    items = await lease_items(dynamodb, leases)
    shard = consumer.records[-1].source_id.split(":")[0]
    assert items[shard]["checkpoint"]["S"] == consumer.records[-1].handle
    assert consumer.source.metrics.aggregates_unpacked == 1 and consumer.source.metrics.records_in == 4
    await consumer.stop()


async def test_restart_resumes_after_the_checkpoint_and_redelivers_failed_records(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    first = await put_events(kinesis, stream, 5)
    failing = asyncio.Event()

    async def policy(delivery: Delivery) -> Settlement:
        if failing.is_set():  # the pipeline could not make these durable
            return Settlement(done=list(delivery.records[:1]), failed=list(delivery.records[1:]))
        return Settlement(done=list(delivery.records))

    a = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w-a", **FAST), policy)
    await wait_until(lambda: len(a.records) == 5)
    await wait_until(lambda: a.source.metrics.checkpoints == len(a.deliveries))
    failing.set()
    second = await put_events(kinesis, stream, 3, first=5)
    await wait_until(lambda: len(a.records) >= 8)
    await a.stop()  # crashes or is redeployed before the failed records went through
    assert a.event_ids()[:8] == first + second

    watched = WatchedKinesis(kinesis)
    b = Consumer(KinesisSource(watched, dynamodb, stream, leases, "w-b", **FAST))
    await wait_until(lambda: len(b.records) >= 2)
    await watched.read_to_the_end(shards_of(b))  # nothing more to come
    # Settled done (the first five, and the first of the failed batch): checkpointed, never again.
    assert b.event_ids() == second[1:]
    await b.stop()


async def test_failed_records_are_read_again_after_a_back_off(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    sent = await put_events(kinesis, stream, 3)
    failures = 1

    async def fail_once(delivery: Delivery) -> Settlement:
        nonlocal failures
        if failures:
            failures -= 1
            return Settlement(done=list(delivery.records[:1]), failed=list(delivery.records[1:]))
        return Settlement(done=list(delivery.records))

    watched = WatchedKinesis(kinesis)
    consumer = Consumer(KinesisSource(watched, dynamodb, stream, leases, "w1", **FAST), fail_once)
    await wait_until(lambda: len(consumer.records) >= 5)
    await watched.read_to_the_end(shards_of(consumer))  # nothing more to come
    # The failed records again, not the one before them: it was checkpointed.
    assert consumer.event_ids() == sent + sent[1:]
    assert [r.receive_count for r in consumer.records] == [1, 1, 1, 2, 2]
    items = await lease_items(dynamodb, leases)
    assert [item["checkpoint"]["S"] for item in items.values() if "checkpoint" in item] == [
        consumer.records[-1].handle
    ]
    assert consumer.source.metrics.records_redelivered == 2
    await consumer.stop()


async def test_two_consumers_split_four_shards_and_deliver_each_record_once(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 4)
    watched = WatchedKinesis(kinesis)
    a = Consumer(KinesisSource(watched, dynamodb, stream, leases, "w-a", **FAST))
    await wait_until(lambda: len(a.source.held_shards) == 4)
    b = Consumer(KinesisSource(watched, dynamodb, stream, leases, "w-b", **FAST))
    await wait_until(lambda: len(a.source.held_shards) == 2 and len(b.source.held_shards) == 2)
    assert set(a.source.held_shards).isdisjoint(b.source.held_shards)
    assert b.source.metrics.leases_stolen == 2 and a.source.metrics.leases_lost == 2
    sent = await put_events(kinesis, stream, 80, customers=20)
    await wait_until(lambda: len(a.records) + len(b.records) >= 80)
    await watched.read_to_the_end(shards_of(a) | shards_of(b))  # anything delivered twice is in now
    got = a.event_ids() + b.event_ids()
    assert sorted(got) == sorted(sent)
    assert shards_of(a) == set(a.source.held_shards)
    assert shards_of(b) == set(b.source.held_shards)
    split = (a.source.held_shards, b.source.held_shards)
    # More than a lease duration of renewals (one every lease_duration / 3): the split stays put.
    await renewed(dynamodb, leases, times=4)
    assert (a.source.held_shards, b.source.held_shards) == split
    assert a.source.metrics.leases_lost == 2 and b.source.metrics.leases_lost == 0
    await asyncio.gather(a.stop(), b.stop())


async def test_consumer_that_lost_its_lease_cannot_checkpoint(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    await put_events(kinesis, stream, 4)
    handed_out = asyncio.Event()
    release = asyncio.Event()

    async def slow(delivery: Delivery) -> Settlement:
        handed_out.set()
        await release.wait()
        return Settlement(done=list(delivery.records))

    # Its clock stands still: it can never judge the new owner's (unrenewed) lease expired.
    source = KinesisSource(kinesis, dynamodb, stream, leases, "w-old", monotonic=FakeClock(), **FAST)
    consumer = Consumer(source, slow)
    await asyncio.wait_for(handed_out.wait(), 10)
    shard_id = consumer.source.held_shards[0]
    # Another worker takes the lease (as after a long GC pause past the expiry).
    item = (await lease_items(dynamodb, leases))[shard_id]
    await dynamodb.update_item(
        TableName=leases,
        Key={"shard_id": {"S": shard_id}},
        UpdateExpression="SET #o = :o, lease_counter = :c, expires_at = :e",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={
            ":o": {"S": "w-new"},
            ":c": {"N": str(int(item["lease_counter"]["N"]) + 1)},
            ":e": {"N": str(int((time.time() + 60) * 1000))},
        },
    )
    release.set()
    await wait_until(lambda: consumer.source.metrics.checkpoints_refused == 1)
    item = (await lease_items(dynamodb, leases))[shard_id]
    assert "checkpoint" not in item and item["owner"]["S"] == "w-new"
    assert consumer.source.held_shards == []
    await rounds(dynamodb, leases, "w-old", 2)  # a whole round with the new owner's lease live
    assert consumer.source.held_shards == [] and len(consumer.deliveries) == 1
    assert consumer.source.metrics.leases_taken == 1  # its first take only: no retake
    await consumer.stop()


async def test_expired_lease_of_a_crashed_worker_is_taken_over(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    sent = await put_events(kinesis, stream, 3)
    shard_id = (await kinesis.list_shards(StreamName=stream))["Shards"][0]["ShardId"]
    await dynamodb.put_item(  # a worker that stopped renewing
        TableName=leases,
        Item={
            "shard_id": {"S": shard_id},
            "owner": {"S": "w-crashed"},
            "lease_counter": {"N": "7"},
            "expires_at": {"N": str(int((time.time() + 2.0) * 1000))},
            "parents": {"L": []},
            "start": {"S": "TRIM_HORIZON"},
        },
    )
    clock = FakeClock()  # the live worker's monotonic clock: expiry is judged by it alone
    source = KinesisSource(kinesis, dynamodb, stream, leases, "w-live", monotonic=clock, **FAST)
    consumer = Consumer(source)
    await rounds(dynamodb, leases, "w-live", 2)  # it has seen the lease, and the counter standing still
    assert consumer.records == [] and consumer.source.held_shards == []
    clock.advance(FAST["lease_duration"] + 0.1)  # ... for longer than a lease duration
    await wait_until(lambda: len(consumer.records) == 3)
    assert consumer.event_ids() == sent and consumer.source.metrics.leases_taken == 1
    await consumer.stop()


async def test_stop_releases_leases_so_another_worker_takes_them_at_once(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 2)
    slow = dict(FAST, lease_duration=30.0)  # a takeover by expiry would take 30 s
    a = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w-a", **slow))
    await wait_until(lambda: len(a.source.held_shards) == 2)
    await a.stop()
    items = await lease_items(dynamodb, leases)
    assert "worker#w-a" not in items
    assert all("owner" not in item for item in items.values())
    # b's clock stands still, so it can never judge a lease expired: it takes them because they
    # are free, not because they ran out.
    b = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w-b", monotonic=FakeClock(), **slow))
    await wait_until(lambda: len(b.source.held_shards) == 2)
    assert b.source.metrics.leases_taken == 2 and b.source.metrics.leases_stolen == 0
    await b.stop()


async def test_stop_lets_a_delivery_in_flight_settle_and_checkpoint_first(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    await put_events(kinesis, stream, 3)
    handed_out = asyncio.Event()
    finish = asyncio.Event()

    async def slow(delivery: Delivery) -> Settlement:
        handed_out.set()
        await finish.wait()  # SIGTERM arrives while the pipeline is still on this batch
        return Settlement(done=list(delivery.records))

    consumer = Consumer(KinesisSource(kinesis, dynamodb, stream, leases, "w1", **FAST), slow)
    await asyncio.wait_for(handed_out.wait(), 10)
    stopping = asyncio.create_task(consumer.stop())
    await asyncio.sleep(0)  # stop() runs up to its wait for the delivery in flight
    assert not stopping.done()
    finish.set()
    await stopping
    (item,) = [i for sid, i in (await lease_items(dynamodb, leases)).items()]
    assert item["checkpoint"]["S"] == consumer.records[-1].handle and "owner" not in item


async def test_at_timestamp_starts_at_the_first_record_after_it(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    stream = await stream_of(kinesis, unique_prefix, 1)
    await put_events(kinesis, stream, 3)
    # Arrival times and the lease's start_at are kept to the millisecond: 20 ms on either side.
    await asyncio.sleep(0.02)
    since = time.time()
    await asyncio.sleep(0.02)
    later = await put_events(kinesis, stream, 2, first=3)
    watched = WatchedKinesis(kinesis)
    source = KinesisSource(
        watched,
        dynamodb,
        stream,
        leases,
        "w1",
        start_position="AT_TIMESTAMP",
        at_timestamp=datetime.fromtimestamp(since, UTC).isoformat(),
        **FAST,
    )
    consumer = Consumer(source)
    await wait_until(lambda: len(consumer.records) >= 2)
    await watched.read_to_the_end(shards_of(consumer))  # nothing more to come
    assert consumer.event_ids() == later
    await consumer.stop()


# --- a fake Kinesis for resharding, iterator expiry and throttling ----------------------------------


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, operation)


class FakeKinesis:
    """The three calls the source makes, over in-memory shards with 56-digit sequence numbers.
    A closed shard answers with no NextShardIterator once read to its end, as Kinesis does."""

    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}
        self.faults: list[tuple[str, str]] = []  # (operation, error code), each raised once
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._next_seq = SEQ_BASE

    def add_shard(self, shard_id: str, parents: tuple[str, ...] = ()) -> None:
        self.shards[shard_id] = {"records": [], "closed": False, "parents": parents}

    def put(self, shard_id: str, customer: str, n: int) -> str:
        self._next_seq += 1000
        sequence = str(self._next_seq)
        self.shards[shard_id]["records"].append(
            {
                "SequenceNumber": sequence,
                "Data": event(customer, n),
                "PartitionKey": customer,
                "ApproximateArrivalTimestamp": time.time(),
            }
        )
        return sequence

    def _fault(self, operation: str) -> None:
        for fault in self.faults:
            if fault[0] == operation:
                self.faults.remove(fault)
                raise client_error(fault[1], operation)

    async def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        shards = []
        for sid, shard in self.shards.items():
            entry: dict[str, Any] = {"ShardId": sid, "SequenceNumberRange": {"StartingSequenceNumber": "0"}}
            if shard["closed"]:
                entry["SequenceNumberRange"]["EndingSequenceNumber"] = str(self._next_seq)
            for key, parent in zip(
                ("ParentShardId", "AdjacentParentShardId"), shard["parents"], strict=False
            ):
                entry[key] = parent
            shards.append(entry)
        return {"Shards": shards}

    async def get_shard_iterator(
        self,
        StreamName: str,
        ShardId: str,
        ShardIteratorType: str,
        StartingSequenceNumber: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        self.calls.append(
            (
                "get_shard_iterator",
                {
                    "ShardId": ShardId,
                    "ShardIteratorType": ShardIteratorType,
                    "StartingSequenceNumber": StartingSequenceNumber,
                },
            )
        )
        self._fault("GetShardIterator")
        sequences = [int(r["SequenceNumber"]) for r in self.shards[ShardId]["records"]]
        if ShardIteratorType == "TRIM_HORIZON":
            index = 0
        elif ShardIteratorType == "LATEST":
            index = len(sequences)
        else:
            assert StartingSequenceNumber is not None
            at = int(StartingSequenceNumber)
            index = sum(
                1 for s in sequences if s < at or (ShardIteratorType == "AFTER_SEQUENCE_NUMBER" and s == at)
            )
        return {"ShardIterator": f"{ShardId}|{index}"}

    async def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        self.calls.append(("get_records", {"ShardIterator": ShardIterator}))
        self._fault("GetRecords")
        sid, index_text = ShardIterator.split("|")
        shard, index = self.shards[sid], int(index_text)
        records = shard["records"][index : index + Limit]
        end = index + len(records)
        response: dict[str, Any] = {"Records": records, "MillisBehindLatest": 0}
        if not (shard["closed"] and end >= len(shard["records"])):
            response["NextShardIterator"] = f"{sid}|{end}"
        return response


def fake_source(
    fake: FakeKinesis | WatchedKinesis, dynamodb: Any, leases: str, worker: str = "w1", **kwargs: Any
) -> KinesisSource:
    return KinesisSource(
        fake, dynamodb, "fake-stream", leases, worker, **{**FAST, "max_records": 3, **kwargs}
    )


def shard_of(record: Record) -> str:
    return record.source_id.split(":")[0]


async def test_split_parent_is_drained_before_its_children(dynamodb: Any, leases: str) -> None:
    fake = FakeKinesis()
    fake.add_shard("shardId-0")
    fake.add_shard("shardId-1", parents=("shardId-0",))
    fake.add_shard("shardId-2", parents=("shardId-0",))
    fake.shards["shardId-0"]["closed"] = True
    for n in range(7):
        fake.put("shardId-0", "c-1", n)
    fake.put("shardId-1", "c-1", 7)  # c-1's next event, in a child: must come after all of the parent's
    fake.put("shardId-2", "c-2", 8)
    consumer = Consumer(fake_source(fake, dynamodb, leases))
    await wait_until(lambda: len(consumer.records) == 9)
    shards = [shard_of(r) for r in consumer.records]
    assert shards[:7] == ["shardId-0"] * 7 and set(shards[7:]) == {"shardId-1", "shardId-2"}
    assert [e for e in consumer.event_ids() if e.startswith("c-1-")] == [f"c-1-{n}" for n in range(8)]
    await wait_until(lambda: consumer.source.metrics.checkpoints == len(consumer.deliveries) + 1)
    items = await lease_items(dynamodb, leases)
    assert items["shardId-0"]["checkpoint"]["S"] == SHARD_END and "owner" not in items["shardId-0"]
    assert items["shardId-1"]["checkpoint"]["S"] == fake.shards["shardId-1"]["records"][-1]["SequenceNumber"]
    assert len(items["shardId-1"]["checkpoint"]["S"]) == 56
    await consumer.stop()


async def test_latest_on_first_start_skips_closed_shards_and_old_records(dynamodb: Any, leases: str) -> None:
    fake = FakeKinesis()
    fake.add_shard("shardId-0")
    fake.add_shard("shardId-1", parents=("shardId-0",))
    fake.put("shardId-0", "c-1", 0)
    fake.shards["shardId-0"]["closed"] = True
    fake.put("shardId-1", "c-1", 1)
    watched = WatchedKinesis(fake)
    consumer = Consumer(fake_source(watched, dynamodb, leases, start_position="LATEST"))
    await wait_until(lambda: consumer.source.held_shards == ["shardId-1"])
    # Positioned at the shard's tip (LATEST) before the next record is put: it has read there.
    await wait_until(lambda: watched.empty_reads["shardId-1"] >= 1)
    fake.put("shardId-1", "c-1", 2)
    await wait_until(lambda: len(consumer.records) >= 1)
    await watched.read_to_the_end(["shardId-1"])  # nothing more to come
    assert consumer.event_ids() == ["c-1-2"]
    assert (await lease_items(dynamodb, leases))["shardId-0"]["checkpoint"]["S"] == SHARD_END
    await consumer.stop()


async def test_merge_child_waits_for_both_parents_and_reshard_while_reading(
    dynamodb: Any, leases: str
) -> None:
    fake = FakeKinesis()
    fake.add_shard("shardId-0")
    fake.add_shard("shardId-1")
    fake.put("shardId-0", "c-1", 0)
    fake.put("shardId-1", "c-2", 1)
    gate = asyncio.Event()

    async def hold_shard_1(delivery: Delivery) -> Settlement:
        if shard_of(delivery.records[0]) == "shardId-1" and len(fake.shards) == 3:
            await gate.wait()  # parent 1 is not drained until the test says so
        return Settlement(done=list(delivery.records))

    watched = WatchedKinesis(fake)
    consumer = Consumer(fake_source(watched, dynamodb, leases, start_position="LATEST"), hold_shard_1)
    await wait_until(lambda: len(consumer.source.held_shards) == 2)
    # Both readers positioned at their shard's tip (LATEST) before new records are put.
    await wait_until(lambda: watched.empty_reads["shardId-0"] >= 1 and watched.empty_reads["shardId-1"] >= 1)
    assert consumer.records == []  # LATEST: the two older records are skipped
    fake.put("shardId-0", "c-1", 2)
    await wait_until(lambda: len(consumer.records) == 1)
    # Merge 0 and 1 into 2 while reading. Writes now go to the child, read from its start.
    fake.put("shardId-1", "c-2", 3)
    fake.add_shard("shardId-2", parents=("shardId-0", "shardId-1"))
    fake.shards["shardId-0"]["closed"] = fake.shards["shardId-1"]["closed"] = True
    fake.put("shardId-2", "c-1", 4)
    fake.put("shardId-2", "c-2", 5)
    await wait_until(lambda: len(consumer.records) >= 2)  # c-2-3 from shard 1, held unsettled

    async def child_known_and_shard_0_done() -> bool:
        items = await lease_items(dynamodb, leases)
        return "shardId-2" in items and items["shardId-0"].get("checkpoint", {}).get("S") == SHARD_END

    await wait_until(child_known_and_shard_0_done)
    await rounds(dynamodb, leases, "w1", 2)  # a whole round since: shard 1 is not done, the child waits
    assert consumer.event_ids() == ["c-1-2", "c-2-3"] and "shardId-2" not in consumer.source.held_shards
    gate.set()
    await wait_until(lambda: len(consumer.records) == 4)
    assert consumer.event_ids()[2:] == ["c-1-4", "c-2-5"]
    items = await lease_items(dynamodb, leases)
    assert items["shardId-2"]["start"]["S"] == "TRIM_HORIZON"  # a reshard's child is read from its start
    await consumer.stop()


async def test_expired_iterator_is_renewed_after_the_last_processed_record(
    dynamodb: Any, leases: str
) -> None:
    fake = FakeKinesis()
    fake.add_shard("shardId-0")
    sequences = [fake.put("shardId-0", "c-1", n) for n in range(3)]
    watched = WatchedKinesis(fake)
    consumer = Consumer(fake_source(watched, dynamodb, leases))
    await wait_until(lambda: len(consumer.records) == 3)
    fake.faults.append(("GetRecords", "ExpiredIteratorException"))
    for n in range(3, 5):
        fake.put("shardId-0", "c-1", n)
    await wait_until(lambda: len(consumer.records) == 5)
    await watched.read_to_the_end(["shardId-0"])  # nothing more to come
    assert consumer.event_ids() == [f"c-1-{n}" for n in range(5)]
    assert consumer.source.metrics.iterators_renewed == 1
    renewals = [args for name, args in fake.calls if name == "get_shard_iterator"]
    assert renewals[-1] == {
        "ShardId": "shardId-0",
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "StartingSequenceNumber": sequences[-1],
    }
    await consumer.stop()


async def test_throttling_is_backed_off_and_nothing_is_lost(dynamodb: Any, leases: str) -> None:
    fake = FakeKinesis()
    fake.add_shard("shardId-0")
    fake.faults += [("GetRecords", "ProvisionedThroughputExceededException")] * 2
    for n in range(4):
        fake.put("shardId-0", "c-1", n)
    consumer = Consumer(fake_source(fake, dynamodb, leases, throttle_backoff=0.05))
    await wait_until(lambda: len(consumer.records) == 4)
    assert consumer.event_ids() == [f"c-1-{n}" for n in range(4)]
    assert consumer.source.metrics.throttled == 2
    await consumer.stop()


async def test_missing_stream_ends_deliveries_with_an_error_that_says_what_to_do(
    kinesis: Any, dynamodb: Any, leases: str, unique_prefix: str
) -> None:
    source = KinesisSource(kinesis, dynamodb, f"{unique_prefix}missing", leases, "w1", **FAST)
    with pytest.raises(FatalAwsError, match=r"ResourceNotFoundException.*bootstrap"):
        async for _ in source.deliveries():
            pass
