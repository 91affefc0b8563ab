"""Kinesis adapter of `worker.ports.EventSource`: shards shared among worker processes through
leases (`worker.sources.leases`), one reader task per held shard, deliveries merged into one
async iterator.

Invariants:
- Per shard, one delivery at a time: the next GetRecords waits until the previous delivery is
  settled. A customer's events share a shard (PartitionKey = customer_id), so they stay in order.
  A delivery holds at most `max_records_per_key` records of one partition key, so one customer's
  events always fit the feature store's one transaction (`worker.sources.kinesis_batches`).
- A checkpoint is written only in `settle`, for records whose effects are durable (done) or that
  were dead-lettered (quarantined). A failed record is read again from there after a back-off
  that grows with each failure: redelivered, never lost. The records before it are checkpointed
  (not read again); the ones after it come back with it. Records the pipeline did not mention
  count as failed, as an unacknowledged SQS message would.
- A record that keeps failing is read alone (its batch-mates are not held back), and after
  `poison_attempts` deliveries over at least `poison_after` seconds it is parked in the dead-letter
  queue (when one is given) with `error_code = retries_exhausted` and the checkpoint moves past it:
  no record blocks a shard for good. Bad input never gets that far: the pipeline dead-letters it
  at once.
- Every checkpoint is fenced by the lease (owner and counter): a worker that lost a shard cannot
  write one, and drops the shard when it tries. Expiry is judged on this worker's own monotonic
  clock (the KCL's rule), never by comparing wall clocks; a take reads the checkpoint back, so it
  never moves backwards.
- Throttling is back-off, never a lost race: a throttled renewal keeps the lease until its own
  validity ends, a throttled checkpoint is retried in place.
- A child shard is read only after all its parents were read to SHARD_END.
- `stop()` finishes within `stop_grace` seconds in all (ECS kills the task 30 s after SIGTERM):
  it hands out nothing more, waits for deliveries already handed out to be settled (so their
  checkpoints land) until shortly before the deadline, then releases its leases so others take
  them at once. Whatever is not settled by then is read again by the next owner.
- A fatal error (the stream or the lease table missing, access denied) ends `deliveries()` with a
  `FatalAwsError` naming what to check: the worker stops with exit code 1.
- Sequence numbers (56 digits) are strings everywhere, compared as Python ints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from plumbing.retry import (
    Failure,
    backoff,
    backoff_delay,
    classify,
    error_code,
    error_text,
    fatal_error,
    is_fatal,
)
from worker.ports import DeadLetterQueue, Delivery, Record, Settlement
from worker.sources.kinesis_batches import (
    MAX_RECORDS_PER_KEY,
    acknowledged_prefix,
    iterator_arguments,
    split_by_key,
    unsettled,
)
from worker.sources.kpl import deaggregate
from worker.sources.leases import SHARD_END, Lease, LeaseTable, Observations, is_after, plan_round

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_kinesis.type_defs import ListShardsInputTypeDef, RecordTypeDef

__all__ = ["KinesisDelivery", "KinesisSource", "ensure_stream", "iterator_arguments", "unsettled"]

log = structlog.get_logger(__name__)

START_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
MAX_BACKOFF = 10.0  # seconds, cap of the throttling back-off
MAX_RETRY_BACKOFF = 30.0  # seconds, cap of the wait before a failed delivery is read again
# Shares of the back-off always waited (`plumbing.retry.backoff_delay`'s floor). A shard allows 5
# GetRecords a second and a table item its own write rate: a retry at once meets the same limit.
# A failed delivery is read again about as late as its attempt says, so its failures stay spaced.
THROTTLE_FLOOR = 0.5
RETRY_FLOOR = 0.75
SHARD_SYNC_INTERVAL = 60.0  # seconds between ListShards calls; a finished shard triggers one at once
CHECKPOINT_ATTEMPTS = 6
RELEASE_RESERVE = 2.0  # seconds of the stop grace kept for releasing leases
AWS_ERRORS = (ClientError, BotoCoreError, OSError, TimeoutError)

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
    checkpoints_retried: int = 0
    records_redelivered: int = 0
    records_parked: int = 0  # dead-lettered after failing `poison_attempts` times
    throttled: int = 0
    read_errors: int = 0  # 5xx or no answer from GetRecords: retried in place, like throttling
    iterators_renewed: int = 0
    leases_taken: int = 0
    leases_stolen: int = 0
    leases_lost: int = 0
    leases_held: int = 0
    millis_behind_latest: dict[str, int] = field(default_factory=dict)  # per shard: the iterator age


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if isinstance(value, int | float) else None


@dataclass(eq=False)
class _Shard:
    lease: Lease
    valid_until: float  # monotonic: past this, without a renewal, others may have taken the lease
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # renew and checkpoint must see one counter
    task: asyncio.Task[None] | None = None
    lost: bool = False
    attempts: dict[str, int] = field(default_factory=dict)  # sequence -> deliveries so far, of failed ones
    failures: int = 0  # deliveries in a row whose first record failed
    failing_since: float | None = None  # monotonic: when the record at the head first failed


class KinesisDelivery:
    """Records of one GetRecords call on one shard (all of them, or a part: see `split_by_key`)."""

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
        kinesis_client: KinesisClient,
        dynamodb_client: DynamoDBClient,
        stream_name: str,
        lease_table: str,
        worker_id: str,
        start_position: str = "TRIM_HORIZON",
        at_timestamp: datetime | str | None = None,
        lease_duration: float = 10.0,
        poll_interval: float = 1.0,
        max_records: int = 1000,
        *,
        max_records_per_key: int = MAX_RECORDS_PER_KEY,
        min_get_interval: float = 0.2,  # Kinesis allows 5 GetRecords per second per shard
        retry_backoff: float = 1.0,  # before re-reading a shard whose delivery had failed records
        throttle_backoff: float = 0.5,  # base of the jittered exponential back-off
        stop_grace: float = 20.0,
        shard_sync_interval: float = SHARD_SYNC_INTERVAL,
        dead_letters: DeadLetterQueue | None = None,
        poison_attempts: int = 10,
        poison_after: float = 300.0,
        clock: Callable[[], float] = time.time,  # wall clock: only for what people read (expires_at)
        monotonic: Callable[[], float] = time.monotonic,  # the clock lease expiry is judged by
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
        self._observed = Observations(lease_duration)
        self.worker_id = worker_id
        self._start = start_position
        self._start_at = at_timestamp.timestamp() if at_timestamp is not None else None
        self._poll_interval = poll_interval
        self._max_records = max_records
        self._max_per_key = max_records_per_key
        self._min_get_interval = min_get_interval
        self._retry_backoff = retry_backoff
        self._throttle_backoff = throttle_backoff
        self._stop_grace = stop_grace
        self._shard_sync_interval = shard_sync_interval
        self._dead_letters = dead_letters
        self._poison_attempts = poison_attempts
        self._poison_after = poison_after
        self._clock = clock
        self._monotonic = monotonic
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

    @property
    def lease_duration(self) -> float:
        return self._leases.lease_duration

    async def deliveries(self) -> AsyncIterator[Delivery]:
        if self._coordinator is not None or self._stopped:
            raise RuntimeError(
                "KinesisSource.deliveries() runs once per source; make a new source to restart"
            )
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
        deadline = self._monotonic() + self._stop_grace
        self._stopping.set()  # readers hand out nothing more; the coordinator takes nothing more
        while not self._queue.empty():  # queued, never handed out: the next owner re-reads them
            item = self._queue.get_nowait()
            if isinstance(item, KinesisDelivery) and not item.outcome.done():
                item.outcome.set_result(LOST)
        pending = [d.outcome for d in self._inflight if not d.outcome.done()]
        reserve = min(RELEASE_RESERVE, self._stop_grace / 4)
        if pending:  # the coordinator keeps renewing meanwhile, so these checkpoints still land
            await asyncio.wait(pending, timeout=max(0.0, deadline - reserve - self._monotonic()))
        self._closing = True
        self._wake.set()
        tasks = [t for t in [self._coordinator, *(s.task for s in self._shards.values())] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        shards = list(self._shards.values())
        for shard in shards:
            self._drop(shard, lost=False)  # a settle still running now cannot checkpoint: fenced below

        async def release(shard: _Shard) -> None:
            with contextlib.suppress(*AWS_ERRORS):
                async with shard.lock:
                    await self._leases.release(shard.lease)

        async def remove_heartbeat() -> None:
            with contextlib.suppress(*AWS_ERRORS):
                await self._leases.remove_heartbeat()

        releases = asyncio.gather(*(release(shard) for shard in shards), remove_heartbeat())
        try:
            await asyncio.wait_for(releases, timeout=max(0.1, deadline - self._monotonic()))
        except TimeoutError:  # the leases will expire instead: a slower takeover, nothing lost
            log.warning(
                "kinesis leases not released before the stop deadline",
                shards=[s.lease.shard_id for s in shards],
            )
        self._gauge()
        self._queue.put_nowait(None)
        log.info("kinesis source stopped", worker_id=self.worker_id, stream=self._stream)

    # --- settling -------------------------------------------------------------------------------

    async def _settle(self, shard: _Shard, records: Sequence[Record], settlement: Settlement) -> str:
        if shard.lost:
            self._count("checkpoints_refused")
            return LOST
        failed = unsettled(records, settlement)
        if not failed:
            shard.failures, shard.failing_since = 0, None
            return await self._checkpoint_if_after(shard, str(records[-1].handle))
        for record in failed:
            shard.attempts[record.handle] = record.receive_count
        self._count("records_redelivered", len(failed))
        prefix = acknowledged_prefix(records, failed)
        if prefix is not None:  # progress: what came before the failed record is not read again
            outcome = await self._checkpoint_if_after(shard, prefix)
            if outcome == LOST:
                return LOST
            shard.failures, shard.failing_since = 1, self._monotonic()
            return RETRY
        shard.failures += 1
        shard.failing_since = shard.failing_since if shard.failing_since is not None else self._monotonic()
        if self._is_poison(shard, records):
            return await self._park(shard, records)
        return RETRY

    def _is_poison(self, shard: _Shard, records: Sequence[Record]) -> bool:
        alone = len({record.handle for record in records}) == 1
        waited = (
            shard.failing_since is not None and self._monotonic() - shard.failing_since >= self._poison_after
        )
        return alone and shard.failures >= self._poison_attempts and waited

    async def _park(self, shard: _Shard, records: Sequence[Record]) -> str:
        """Dead-letter a record that failed `poison_attempts` times, alone, and move past it."""
        if self._dead_letters is None:
            log.error(
                "kinesis record keeps failing and no dead-letter queue is configured; retrying",
                shard=shard.lease.shard_id,
                source_id=records[0].source_id,
                failures=shard.failures,
            )
            return RETRY
        detail = f"failed {shard.failures} deliveries in a row; parked so the shard moves on"
        try:
            for record in records:
                await self._dead_letters.quarantine(record, "retries_exhausted", detail)
        except Exception as exc:  # the DLQ is down too: keep the record, try again later
            log.warning("dead-letter queue unavailable; record kept", error=error_text(exc))
            return RETRY
        log.error(
            "kinesis record parked in the dead-letter queue",
            shard=shard.lease.shard_id,
            source_id=records[0].source_id,
            failures=shard.failures,
        )
        self._count("records_parked", len(records))
        shard.failures, shard.failing_since = 0, None
        return await self._checkpoint_if_after(shard, str(records[-1].handle))

    async def _checkpoint_if_after(self, shard: _Shard, sequence: str) -> str:
        current = shard.lease.checkpoint
        if current is not None and (current == SHARD_END or not is_after(sequence, current)):
            return DONE  # a stale delivery: never move a checkpoint backwards
        return await self._checkpoint(shard, sequence)

    async def _checkpoint(self, shard: _Shard, sequence: str) -> str:
        for attempt in range(CHECKPOINT_ATTEMPTS):
            async with shard.lock:
                if shard.lost:
                    self._count("checkpoints_refused")
                    return LOST
                try:
                    written = await self._leases.checkpoint(shard.lease, sequence)
                except AWS_ERRORS as exc:
                    kind = classify(exc)
                    if kind is Failure.FATAL:
                        self._fail(exc, f"lease table {self._leases.table}")
                        return RETRY
                    retry = kind in (Failure.THROTTLED, Failure.TRANSIENT, Failure.CONFLICT)
                    if (
                        not retry
                        or attempt + 1 == CHECKPOINT_ATTEMPTS
                        or self._monotonic() >= shard.valid_until
                    ):
                        log.warning(
                            "kinesis checkpoint failed; records read again",
                            shard=shard.lease.shard_id,
                            error=error_text(exc),
                        )
                        return RETRY
                    written = None
                if written is False:
                    self._count("checkpoints_refused")
                    log.warning(
                        "kinesis checkpoint refused: lease lost; dropping shard", shard=shard.lease.shard_id
                    )
                    self._drop(shard, lost=True)
                    return LOST
                if written:
                    shard.lease = replace(shard.lease, checkpoint=sequence)
                    shard.attempts = (
                        {}
                        if sequence == SHARD_END
                        else {seq: n for seq, n in shard.attempts.items() if is_after(seq, sequence)}
                    )
                    self._count("checkpoints")
                    return DONE
            self._count("checkpoints_retried")  # throttled or no answer: the same write again, later
            await backoff(attempt, self._throttle_backoff, MAX_BACKOFF, THROTTLE_FLOOR)
        return RETRY

    # --- one shard ------------------------------------------------------------------------------

    async def _run_reader(self, shard: _Shard) -> None:
        try:
            await self._read(shard)
        except asyncio.CancelledError:
            raise
        except AWS_ERRORS as exc:
            if is_fatal(exc):
                self._fail(exc, f"Kinesis stream {self._stream}")
                return
            log.warning(
                "kinesis shard reader failed; lease released",
                shard=shard.lease.shard_id,
                error=error_text(exc),
            )
            await self._give_up(shard)
        except Exception:  # a bug or an outage: let this or another worker take it again
            log.exception("kinesis shard reader crashed; lease released", shard=shard.lease.shard_id)
            await self._give_up(shard)

    async def _read(self, shard: _Shard) -> None:
        sid = shard.lease.shard_id
        position = iterator_arguments(shard.lease)
        iterator: str | None = None
        throttles = 0
        while not self._stopping.is_set() and not shard.lost:
            # A record failing at the head is read alone: its batch-mates are not held back by it.
            limit = 1 if shard.failures >= 2 else self._max_records
            try:
                if iterator is None:
                    started = await self._kinesis.get_shard_iterator(
                        StreamName=self._stream, ShardId=sid, **position
                    )
                    iterator = started["ShardIterator"]
                response = await self._kinesis.get_records(ShardIterator=iterator, Limit=limit)
            except AWS_ERRORS as exc:
                if isinstance(exc, ClientError) and error_code(exc) == "ExpiredIteratorException":
                    self._count("iterators_renewed")  # held too long (a slow settle): start again
                    iterator = None
                    continue
                kind = classify(exc)
                if kind not in (Failure.THROTTLED, Failure.TRANSIENT):
                    raise
                throttles += 1
                self._count("throttled" if kind is Failure.THROTTLED else "read_errors")
                await backoff(throttles, self._throttle_backoff, MAX_BACKOFF, THROTTLE_FLOOR)
                continue
            throttles = 0
            behind = int(response.get("MillisBehindLatest", 0))
            self.metrics.millis_behind_latest[sid] = behind
            if self._sink is not None:
                self._sink.set(
                    "kinesis_millis_behind_latest", max(self.metrics.millis_behind_latest.values())
                )
            units = [
                (str(raw.get("PartitionKey", "")), self._records(shard, raw))
                for raw in response.get("Records", [])
            ]
            # absent at a closed shard's end, whatever the stubs say
            next_iterator: str | None = response.get("NextShardIterator")
            retry_at: str | None = None
            for records in split_by_key(units, self._max_per_key):
                if self._stopping.is_set():
                    return  # not handed out, not checkpointed: the next owner reads them
                outcome = await self._hand_out(shard, records)
                if outcome == LOST:
                    return
                if outcome == RETRY:
                    retry_at = str(records[0].handle)
                    break
                position = {
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                    "StartingSequenceNumber": str(records[-1].handle),
                }
            if retry_at is not None:
                await asyncio.sleep(self._retry_delay(shard))
                position = (
                    iterator_arguments(shard.lease)
                    if shard.lease.checkpoint
                    else {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": retry_at}
                )
                iterator = None
                continue
            if next_iterator is None:  # a closed shard, read to its end
                await self._finish(shard)
                return
            iterator = next_iterator
            await asyncio.sleep(self._min_get_interval if units or behind else self._poll_interval)

    def _retry_delay(self, shard: _Shard) -> float:
        """Grows with each failure in a row, so an outage is not hammered; jittered."""
        return backoff_delay(max(0, shard.failures - 1), self._retry_backoff, MAX_RETRY_BACKOFF, RETRY_FLOOR)

    def _records(self, shard: _Shard, raw: RecordTypeDef) -> list[Record]:
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
        with contextlib.suppress(*AWS_ERRORS):
            async with shard.lock:
                await self._leases.release(shard.lease)
        self._drop(shard, lost=False)
        self._resync = True  # its children may be new, and are now readable
        self._wake.set()

    async def _give_up(self, shard: _Shard) -> None:
        with contextlib.suppress(*AWS_ERRORS):
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
            sync = self._resync or self._monotonic() >= next_sync
            try:
                await self._round(sync)
                if sync:
                    self._resync = False
                    next_sync = self._monotonic() + self._shard_sync_interval
            except asyncio.CancelledError:
                raise
            except AWS_ERRORS as exc:
                if is_fatal(exc):
                    self._fail(exc, f"Kinesis stream {self._stream} / lease table {self._leases.table}")
                    return
                log.warning("kinesis lease round failed; retrying", error=error_text(exc))
            except Exception as exc:  # a bug: without renewals the leases would lapse unnoticed
                log.exception("kinesis lease coordinator crashed")
                self._queue.put_nowait(exc)
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _round(self, sync: bool) -> None:
        # Renewals first and side by side: a slow or throttled one must not delay the others.
        await asyncio.gather(*(self._renew(shard) for shard in list(self._shards.values())))
        try:
            await self._leases.heartbeat(self._clock())
        except AWS_ERRORS as exc:  # a missed beat only makes others count us out a little early
            if is_fatal(exc):
                raise
            log.warning("kinesis heartbeat failed", error=error_text(exc))
        if self._stopping.is_set():
            return  # shutting down: keep what we hold alive until it is settled, take nothing
        leases, beats = await self._leases.scan()
        if sync and await self._create_leases(leases):
            leases, beats = await self._leases.scan()
        now = self._monotonic()
        self._observed.update(leases, beats, now)
        expired = self._observed.expired_shards(leases, now)
        plan = plan_round(self.worker_id, leases, self._observed.beating(now), self._shards, expired)
        for lease in plan.take:
            if await self._take(lease) is not None:
                self._count("leases_taken")
        if plan.steal is not None and (taken := await self._take(plan.steal)) is not None:
            log.info(
                "kinesis lease stolen", shard=taken.shard_id, from_worker=plan.steal.owner, target=plan.target
            )
            self._count("leases_stolen")
        self._gauge()

    async def _take(self, lease: Lease) -> Lease | None:
        started = self._monotonic()
        taken = await self._leases.take(lease, self._clock())
        if taken is not None:
            self._begin(taken, valid_until=started + self._leases.lease_duration)
        return taken

    async def _renew(self, shard: _Shard) -> None:
        async with shard.lock:
            if shard.lost:
                return
            started = self._monotonic()
            try:
                renewed = await self._leases.renew(shard.lease, self._clock())
            except AWS_ERRORS as exc:
                if is_fatal(exc):
                    raise
                # Throttled or no answer: not a lost lease. Keep reading until our own validity
                # ends; past it, others may have taken it (they watched the counter stand still).
                if self._monotonic() >= shard.valid_until:
                    log.warning(
                        "kinesis lease not renewed in time; dropping",
                        shard=shard.lease.shard_id,
                        error=error_text(exc),
                    )
                    self._drop(shard, lost=True)
                return
            if renewed is None:
                log.info("kinesis lease taken over; dropping shard", shard=shard.lease.shard_id)
                self._drop(shard, lost=True)
            else:
                shard.lease = renewed
                shard.valid_until = started + self._leases.lease_duration

    async def _create_leases(self, leases: dict[str, Lease]) -> bool:
        """One lease per shard of the stream. On the first start (no leases yet) shards begin at the
        configured position; shards born later from a reshard are read from their beginning."""
        bootstrap = not leases
        created = False
        kwargs: ListShardsInputTypeDef = {"StreamName": self._stream}
        while True:
            response = await self._kinesis.list_shards(**kwargs)
            for shard in response.get("Shards", []):
                if shard["ShardId"] in leases:
                    continue
                parents = tuple(
                    p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p
                )
                closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
                lease = Lease(
                    shard["ShardId"],
                    parents=parents,
                    start=self._start if bootstrap else "TRIM_HORIZON",
                    start_at=self._start_at if bootstrap else None,
                )
                if bootstrap and closed and self._start == "LATEST":
                    lease = replace(lease, checkpoint=SHARD_END)  # nothing past its end will ever come
                created = await self._leases.create(lease) or created
            if not response.get("NextToken"):
                return created
            kwargs = {"NextToken": response["NextToken"]}

    def _begin(self, lease: Lease, valid_until: float) -> None:
        shard = _Shard(lease, valid_until)
        self._shards[lease.shard_id] = shard
        shard.task = asyncio.create_task(self._run_reader(shard), name=f"kinesis-{lease.shard_id}")
        log.info(
            "kinesis lease taken", shard=lease.shard_id, worker_id=self.worker_id, checkpoint=lease.checkpoint
        )

    # --- plumbing -------------------------------------------------------------------------------

    def _fail(self, exc: BaseException, resource: str) -> None:
        self._queue.put_nowait(fatal_error(exc, resource))

    def _count(self, name: str, amount: int = 1) -> None:
        setattr(self.metrics, name, getattr(self.metrics, name) + amount)
        if self._sink is not None:
            self._sink.inc(f"kinesis_{name}", amount)

    def _gauge(self) -> None:
        self.metrics.leases_held = len(self._shards)
        if self._sink is not None:
            self._sink.set("kinesis_leases_held", len(self._shards))


async def ensure_stream(kinesis_client: KinesisClient, name: str, shard_count: int) -> bool:
    """Create the stream if missing and wait until it is ACTIVE. True when it was created now."""
    created = True
    try:
        await kinesis_client.create_stream(StreamName=name, ShardCount=shard_count)
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        created = False
    await kinesis_client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    return created
