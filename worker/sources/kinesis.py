"""Kinesis adapter of `worker.ports.EventSource`: shards shared among worker processes through
leases (`worker.sources.leases`), one reader task per held shard, deliveries merged into one
async iterator.

Invariants:
- Per shard, one delivery at a time: the next GetRecords waits until the previous delivery is
  settled. A customer's events share a shard (PartitionKey = customer_id), so they stay in order.
- A checkpoint is written only in `settle`, when every record of the delivery is done or
  quarantined, i.e. its effects are durable. Otherwise the shard is re-read from the last
  checkpoint after `retry_backoff`: redelivered, never lost. Records the pipeline did not mention
  count as failed, as an unacknowledged SQS message would.
- Every checkpoint is fenced by the lease (owner and counter): a worker that lost a shard cannot
  write one, and drops the shard when it tries.
- A child shard is read only after all its parents were read to SHARD_END.
- `stop()` hands out nothing more, waits up to `stop_grace` for deliveries already handed out to
  be settled (so their checkpoints land), then releases its leases so others take them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from worker.exceptions import WorkerError
from worker.ports import Delivery, Record, Settlement
from worker.sources.kpl import deaggregate
from worker.sources.leases import SHARD_END, Lease, LeaseTable, is_after, plan_round

log = structlog.get_logger(__name__)

START_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
THROTTLED = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "LimitExceededException"}
)
# Errors no retry will fix: stop the source and tell the operator.
FATAL = frozenset({"ResourceNotFoundException", "AccessDeniedException", "UnrecognizedClientException"})
MAX_BACKOFF = 10.0  # seconds, cap of the throttling back-off
SHARD_SYNC_INTERVAL = 60.0  # seconds between ListShards calls; a finished shard triggers one at once

DONE, RETRY, LOST = "done", "retry", "lost"


class MetricsSink(Protocol):
    """What `worker.metrics.Metrics` offers; optional."""

    def inc(self, name: str, amount: float = 1, **labels: str) -> None: ...
    def set(self, name: str, value: float) -> None: ...


@dataclass
class KinesisMetrics:
    records_in: int = 0  # pipeline records: a KPL aggregate counts its user records
    aggregates_unpacked: int = 0
    deliveries: int = 0
    checkpoints: int = 0
    checkpoints_refused: int = 0
    records_redelivered: int = 0
    throttled: int = 0
    iterators_renewed: int = 0
    leases_taken: int = 0
    leases_stolen: int = 0
    leases_lost: int = 0
    leases_held: int = 0
    millis_behind_latest: dict[str, int] = field(default_factory=dict)  # per shard: the iterator age


def iterator_arguments(lease: Lease) -> dict[str, Any]:
    """GetShardIterator arguments for a lease: after its checkpoint, else its start position."""
    if lease.checkpoint is not None and lease.checkpoint != SHARD_END:
        return {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": lease.checkpoint}
    if lease.start == "AT_TIMESTAMP":
        return {
            "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": datetime.fromtimestamp(lease.start_at or 0, UTC),
        }
    return {"ShardIteratorType": lease.start}


def unsettled(records: Sequence[Record], settlement: Settlement) -> list[Record]:
    """Records not acknowledged (done or quarantined): failed, or not mentioned at all."""
    acked = {record.source_id for record in settlement.done + settlement.quarantined}
    return [record for record in records if record.source_id not in acked]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


@dataclass(eq=False)
class _Shard:
    lease: Lease
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # renew and checkpoint must see one counter
    task: asyncio.Task[None] | None = None
    lost: bool = False
    attempts: dict[str, int] = field(default_factory=dict)  # sequence -> deliveries so far, of failed ones


class KinesisDelivery:
    """The records of one GetRecords call on one shard."""

    def __init__(self, source: KinesisSource, shard: _Shard, records: list[Record]) -> None:
        self.records: Sequence[Record] = records
        self.shard_id = shard.lease.shard_id
        self._source = source
        self._shard = shard
        self.outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def settle(self, settlement: Settlement) -> None:
        if self.outcome.done():
            log.warning("kinesis delivery settled twice; ignored", shard=self.shard_id)
            return
        outcome = await self._source._settle(self._shard, self.records, settlement)
        if not self.outcome.done():
            self.outcome.set_result(outcome)


class KinesisSource:
    """`EventSource` over one Kinesis stream, sharing its shards with other workers."""

    def __init__(
        self,
        kinesis_client: Any,
        dynamodb_client: Any,
        stream_name: str,
        lease_table: str,
        worker_id: str,
        start_position: str = "TRIM_HORIZON",
        at_timestamp: datetime | str | None = None,
        lease_duration: float = 10.0,
        poll_interval: float = 1.0,
        max_records: int = 1000,
        *,
        min_get_interval: float = 0.2,  # Kinesis allows 5 GetRecords per second per shard
        retry_backoff: float = 1.0,  # before re-reading a shard whose delivery had failed records
        throttle_backoff: float = 0.5,  # base of the jittered exponential back-off
        stop_grace: float = 20.0,
        shard_sync_interval: float = SHARD_SYNC_INTERVAL,
        clock: Callable[[], float] = time.time,
        metrics: MetricsSink | None = None,
    ) -> None:
        if start_position not in START_POSITIONS:
            raise ValueError(
                f"start_position must be one of {', '.join(START_POSITIONS)}, not {start_position!r}"
            )
        if isinstance(at_timestamp, str):
            at_timestamp = datetime.fromisoformat(at_timestamp)
        if start_position == "AT_TIMESTAMP" and at_timestamp is None:
            raise ValueError("start_position AT_TIMESTAMP needs at_timestamp (CHURN_KINESIS_START_TIMESTAMP)")
        self._kinesis = kinesis_client
        self._stream = stream_name
        self._leases = LeaseTable(dynamodb_client, lease_table, worker_id, lease_duration)
        self.worker_id = worker_id
        self._start = start_position
        self._start_at = at_timestamp.timestamp() if at_timestamp is not None else None
        self._poll_interval = poll_interval
        self._max_records = max_records
        self._min_get_interval = min_get_interval
        self._retry_backoff = retry_backoff
        self._throttle_backoff = throttle_backoff
        self._stop_grace = stop_grace
        self._shard_sync_interval = shard_sync_interval
        self._clock = clock
        self._sink = metrics
        self.metrics = KinesisMetrics()
        self._shards: dict[str, _Shard] = {}
        self._queue: asyncio.Queue[KinesisDelivery | BaseException | None] = asyncio.Queue()
        self._inflight: set[KinesisDelivery] = set()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._resync = True
        self._coordinator: asyncio.Task[None] | None = None
        self._stopped = False
        self._closing = False  # set once in-flight deliveries are settled: stop renewing

    @property
    def held_shards(self) -> list[str]:
        return sorted(self._shards)

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._coordinator is not None or self._stopped:
            raise RuntimeError("KinesisSource.deliveries() runs once per source; make a new source to restart")
        self._coordinator = asyncio.create_task(self._coordinate())
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            await self.stop()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()  # readers hand out nothing more; the coordinator takes nothing more
        while not self._queue.empty():  # queued, never handed out: the next owner re-reads them
            item = self._queue.get_nowait()
            if isinstance(item, KinesisDelivery) and not item.outcome.done():
                item.outcome.set_result(LOST)
        pending = [d.outcome for d in self._inflight if not d.outcome.done()]
        if pending:  # the coordinator keeps renewing meanwhile, so these checkpoints still land
            await asyncio.wait(pending, timeout=self._stop_grace)
        self._closing = True
        self._wake.set()
        if self._coordinator is not None:
            await asyncio.wait({self._coordinator}, timeout=self._leases.lease_duration)
        tasks = [t for t in [self._coordinator, *(s.task for s in self._shards.values())] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for shard in list(self._shards.values()):
            with contextlib.suppress(ClientError, BotoCoreError):
                async with shard.lock:
                    await self._leases.release(shard.lease)
            self._drop(shard, lost=False)
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._leases.remove_heartbeat()
        self._gauge()
        self._queue.put_nowait(None)
        log.info("kinesis source stopped", worker_id=self.worker_id, stream=self._stream)

    # --- settling -------------------------------------------------------------------------------

    async def _settle(self, shard: _Shard, records: Sequence[Record], settlement: Settlement) -> str:
        if shard.lost:
            self._count("checkpoints_refused")
            return LOST
        retry = unsettled(records, settlement)
        if retry:
            for record in retry:
                shard.attempts[record.handle] = record.receive_count
            self._count("records_redelivered", len(retry))
            return RETRY
        last = str(records[-1].handle)
        current = shard.lease.checkpoint
        if current is not None and (current == SHARD_END or not is_after(last, current)):
            return DONE  # a stale delivery: never move a checkpoint backwards
        return await self._checkpoint(shard, last)

    async def _checkpoint(self, shard: _Shard, sequence: str) -> str:
        async with shard.lock:
            if shard.lost:
                self._count("checkpoints_refused")
                return LOST
            try:
                written = await self._leases.checkpoint(shard.lease, sequence)
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "kinesis checkpoint failed; shard re-read", shard=shard.lease.shard_id, error=str(exc)
                )
                return RETRY
            if not written:
                self._count("checkpoints_refused")
                log.warning(
                    "kinesis checkpoint refused: lease lost; dropping shard", shard=shard.lease.shard_id
                )
                self._drop(shard, lost=True)
                return LOST
            shard.lease = replace(shard.lease, checkpoint=sequence)
            shard.attempts.clear()
            self._count("checkpoints")
            return DONE

    # --- one shard ------------------------------------------------------------------------------

    async def _run_reader(self, shard: _Shard) -> None:
        try:
            await self._read(shard)
        except asyncio.CancelledError:
            raise
        except ClientError as exc:
            if _code(exc) in FATAL:
                self._fail(exc)
                return
            log.warning(
                "kinesis shard reader failed; lease released", shard=shard.lease.shard_id, error=str(exc)
            )
            await self._give_up(shard)
        except Exception:  # a bug or an outage: let this or another worker take it again
            log.exception("kinesis shard reader crashed; lease released", shard=shard.lease.shard_id)
            await self._give_up(shard)

    async def _read(self, shard: _Shard) -> None:
        sid = shard.lease.shard_id
        position = iterator_arguments(shard.lease)
        iterator: str | None = None
        failures = 0
        while not self._stopping.is_set() and not shard.lost:
            try:
                if iterator is None:
                    response = await self._kinesis.get_shard_iterator(
                        StreamName=self._stream, ShardId=sid, **position
                    )
                    iterator = response["ShardIterator"]
                response = await self._kinesis.get_records(ShardIterator=iterator, Limit=self._max_records)
            except ClientError as exc:
                if _code(exc) == "ExpiredIteratorException":  # held too long (a slow settle): start again
                    self._count("iterators_renewed")
                    iterator = None
                    continue
                if _code(exc) not in THROTTLED:
                    raise
                failures += 1
                self._count("throttled")
                await asyncio.sleep(
                    min(MAX_BACKOFF, self._throttle_backoff * 2**failures) * random.uniform(0.5, 1)
                )
                continue
            failures = 0
            behind = int(response.get("MillisBehindLatest", 0))
            self.metrics.millis_behind_latest[sid] = behind
            if self._sink is not None:
                self._sink.set(
                    "kinesis_millis_behind_latest", max(self.metrics.millis_behind_latest.values())
                )
            records = [record for raw in response.get("Records", []) for record in self._records(shard, raw)]
            next_iterator = response.get("NextShardIterator")
            if records:
                if self._stopping.is_set():
                    return  # not handed out, not checkpointed: the next owner reads them
                outcome = await self._hand_out(shard, records)
                if outcome == LOST:
                    return
                if outcome == RETRY:
                    await asyncio.sleep(self._retry_backoff)
                    position = iterator_arguments(shard.lease) if shard.lease.checkpoint else {
                        "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": records[0].handle}  # fmt: skip
                    iterator = None
                    continue
                position = {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "StartingSequenceNumber": records[-1].handle,
                }
            if next_iterator is None:  # a closed shard, read to its end
                await self._finish(shard)
                return
            iterator = next_iterator
            await asyncio.sleep(self._min_get_interval if records or behind else self._poll_interval)

    def _records(self, shard: _Shard, raw: dict[str, Any]) -> list[Record]:
        """One Kinesis record as pipeline records: itself, or the user records of a KPL aggregate.
        The user records share the Kinesis sequence number: a delivery settles whole, so the
        checkpoint never falls inside an aggregate."""
        sequence = str(raw["SequenceNumber"])
        source_id = f"{shard.lease.shard_id}:{sequence}"
        unpacked = deaggregate(raw["Data"])
        if unpacked is not None:
            self._count("aggregates_unpacked")
        bodies = [raw["Data"]] if unpacked is None else unpacked
        return [
            Record(
                body=body,
                handle=sequence,
                source_id=source_id if unpacked is None else f"{source_id}/{sub}",  # sub-sequence number
                enqueued_at=_epoch(raw.get("ApproximateArrivalTimestamp")),
                receive_count=shard.attempts.get(sequence, 0) + 1,
            )
            for sub, body in enumerate(bodies)
        ]

    async def _hand_out(self, shard: _Shard, records: list[Record]) -> str:
        delivery = KinesisDelivery(self, shard, records)
        self._inflight.add(delivery)
        delivery.outcome.add_done_callback(lambda _: self._inflight.discard(delivery))
        self._count("records_in", len(records))
        self._count("deliveries")
        self._queue.put_nowait(delivery)
        return await asyncio.shield(delivery.outcome)  # cancelling the reader must not cancel the settle

    async def _finish(self, shard: _Shard) -> None:
        if await self._checkpoint(shard, SHARD_END) != DONE:
            return
        log.info("kinesis shard finished", shard=shard.lease.shard_id)
        with contextlib.suppress(ClientError, BotoCoreError):
            async with shard.lock:
                await self._leases.release(shard.lease)
        self._drop(shard, lost=False)
        self._resync = True  # its children may be new, and are now readable
        self._wake.set()

    async def _give_up(self, shard: _Shard) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            async with shard.lock:
                await self._leases.release(shard.lease)
        self._drop(shard, lost=False)

    def _drop(self, shard: _Shard, lost: bool) -> None:
        shard.lost = True
        sid = shard.lease.shard_id
        if self._shards.get(sid) is shard:
            del self._shards[sid]
            self.metrics.millis_behind_latest.pop(sid, None)
            if lost:
                self._count("leases_lost")
        if shard.task is not None and shard.task is not asyncio.current_task():
            shard.task.cancel()
        self._gauge()

    # --- leases ---------------------------------------------------------------------------------

    async def _coordinate(self) -> None:
        interval = self._leases.lease_duration / 3  # renew well before expiry, even after a slow round
        next_sync = 0.0
        while not self._closing:
            sync = self._resync or time.monotonic() >= next_sync
            try:
                await self._round(sync)
                if sync:
                    self._resync = False
                    next_sync = time.monotonic() + self._shard_sync_interval
            except asyncio.CancelledError:
                raise
            except ClientError as exc:
                if _code(exc) in FATAL:
                    self._fail(exc)
                    return
                log.warning("kinesis lease round failed; retrying", error=str(exc))
            except BotoCoreError as exc:
                log.warning("kinesis lease round failed; retrying", error=str(exc))
            except Exception as exc:  # a bug: without renewals the leases would lapse unnoticed
                log.exception("kinesis lease coordinator crashed")
                self._queue.put_nowait(exc)
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _round(self, sync: bool) -> None:
        now = self._clock()
        await self._leases.heartbeat(now)
        for shard in list(self._shards.values()):
            await self._renew(shard, now)
        if self._stopping.is_set():
            return  # shutting down: keep what we hold alive until it is settled, take nothing
        leases, heartbeats = await self._leases.scan()
        if sync and await self._create_leases(leases):
            leases, heartbeats = await self._leases.scan()
        now = self._clock()
        plan = plan_round(self.worker_id, leases, heartbeats, self._shards, now)
        for lease in plan.take:
            taken = await self._leases.take(lease, now)
            if taken is not None:
                self._count("leases_taken")
                self._begin(taken)
        if plan.steal is not None:
            taken = await self._leases.take(plan.steal, now)
            if taken is not None:
                log.info(
                    "kinesis lease stolen",
                    shard=taken.shard_id,
                    from_worker=plan.steal.owner,
                    target=plan.target,
                )
                self._count("leases_stolen")
                self._begin(taken)
        self._gauge()

    async def _renew(self, shard: _Shard, now: float) -> None:
        async with shard.lock:
            if shard.lost:
                return
            try:
                renewed = await self._leases.renew(shard.lease, now)
            except (ClientError, BotoCoreError) as exc:
                if shard.lease.expires_at <= now:  # others may hold it by now: stop reading
                    log.warning(
                        "kinesis lease not renewed in time; dropping",
                        shard=shard.lease.shard_id,
                        error=str(exc),
                    )
                    self._drop(shard, lost=True)
                return
            if renewed is None:
                log.info("kinesis lease taken over; dropping shard", shard=shard.lease.shard_id)
                self._drop(shard, lost=True)
            else:
                shard.lease = renewed

    async def _create_leases(self, leases: dict[str, Lease]) -> bool:
        """One lease per shard of the stream. On the first start (no leases yet) shards begin at the
        configured position; shards born later from a reshard are read from their beginning."""
        bootstrap = not leases
        created = False
        kwargs: dict[str, Any] = {"StreamName": self._stream}
        while True:
            response = await self._kinesis.list_shards(**kwargs)
            for shard in response.get("Shards", []):
                if shard["ShardId"] in leases:
                    continue
                parents = tuple(
                    p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
                )
                closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
                lease = Lease(shard["ShardId"], parents=parents, start=self._start if bootstrap else "TRIM_HORIZON",
                              start_at=self._start_at if bootstrap else None)  # fmt: skip
                if bootstrap and closed and self._start == "LATEST":
                    lease = replace(lease, checkpoint=SHARD_END)  # nothing past its end will ever come
                created = await self._leases.create(lease) or created
            if not response.get("NextToken"):
                return created
            kwargs = {"NextToken": response["NextToken"]}

    def _begin(self, lease: Lease) -> None:
        shard = _Shard(lease)
        self._shards[lease.shard_id] = shard
        shard.task = asyncio.create_task(self._run_reader(shard), name=f"kinesis-{lease.shard_id}")
        log.info(
            "kinesis lease taken", shard=lease.shard_id, worker_id=self.worker_id, checkpoint=lease.checkpoint
        )

    # --- plumbing -------------------------------------------------------------------------------

    def _fail(self, exc: ClientError) -> None:
        error = exc.response.get("Error", {})
        self._queue.put_nowait(WorkerError(
            f"Kinesis stream {self._stream} / lease table {self._leases.table}: {error.get('Code')}: "
            f"{error.get('Message', '')}; check the names and permissions, or run `churn-worker bootstrap`"))  # fmt: skip

    def _count(self, name: str, amount: int = 1) -> None:
        setattr(self.metrics, name, getattr(self.metrics, name) + amount)
        if self._sink is not None:
            self._sink.inc(f"kinesis_{name}", amount)

    def _gauge(self) -> None:
        self.metrics.leases_held = len(self._shards)
        if self._sink is not None:
            self._sink.set("kinesis_leases_held", len(self._shards))


async def ensure_stream(kinesis_client: Any, name: str, shard_count: int) -> bool:
    """Create the stream if missing and wait until it is ACTIVE. True when it was created now."""
    created = True
    try:
        await kinesis_client.create_stream(StreamName=name, ShardCount=shard_count)
    except ClientError as exc:
        if _code(exc) != "ResourceInUseException":
            raise
        created = False
    await kinesis_client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    return created
