"""`churn-worker replay EVENTS... --to sqs|kinesis`: publish history to the live queue or stream.

EVENTS are event paths as every command takes them (files, directories, globs, `s3://` prefixes:
`features.eventfile.read_event_paths`), streamed: at most `MAX_PENDING` events are held in
memory, besides the ids of the events sent (each event_id is sent once; a duplicate is counted,
not sent: about 100 bytes per distinct event). Input without a valid event is `no events in PATH`
(exit 2), found before any AWS client is made. Events go out batched (`send_message_batch`, 10 a
call; `put_records`, 500 a call, PartitionKey = customer_id) in the wire form producers send
(`event_to_json`).

Order across files. The files are read one after another in the order `event_sources` lists them
(the paths in the order given; a directory or glob in name order; an `s3://` prefix in key order,
which for the worker's archive is by event day, then by when each object was written), each from
its first line to its last. That concatenation is the order: a customer's events go out in it,
not re-sorted by `occurred_at` (sorting would need the whole log in memory, and a log whose files
each hold a span of time, as the archive's daily partitions do, is in time order this way).

Per-customer order. A customer's next event is handed to a batch only once the previous one was
accepted, so a batch never holds two events of one customer. For SQS that is the only way to keep
order at all. For Kinesis it is stricter than the API needs (records of one partition key in one
`put_records` call are written in request order), but it is what makes a partial failure safe: if
record i of a customer failed while record j > i of the same customer in the same call succeeded,
j is already on the stream ahead of i, and no retry can fix that without writing j twice. With one
record per customer per call, a failed record is simply sent again before anything after it.

Retries. What is retried is what the worker retries (`plumbing.retry.classify`): entries a batch
reports as failed with a retryable reason (throttling, internal errors) are sent again, alone, with
full-jitter exponential back-off (`plumbing.retry.backoff`); accepted entries are never re-sent,
so nothing is duplicated by a partial failure. A throttled call (the client's own retries spent) is
retried whole the same way. Entries refused for good (an SQS sender fault) are bad lines. A call
whose outcome is unknown (a connection dropped after sending) is retried too: at least once, not
exactly once, which the worker absorbs (it counts every event once by event_id). FIFO queues
(`.fifo`) get MessageGroupId = customer_id and MessageDeduplicationId = event_id, so SQS drops even
that duplicate. A fatal error (access denied, no such queue or stream) stops the replay at once with
one line naming the target (`FatalAwsError`, exit 1); no AWS credentials stops it the same way with
exit 2 (`plumbing.retry.MissingCredentialsError`: the user's to fix, never retried).

Pacing. `--speedup X` sends each event at its offset in event time from the first one, divided by
X; `--rate R` caps the events per second; both can be combined (the later of the two times wins).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from features.eventfile import SourcedEvent, describe_paths, read_event_paths
from features.events import event_to_json
from features.exceptions import EventParseError
from plumbing.clients import AwsClients
from plumbing.exceptions import FatalAwsError
from plumbing.retry import RETRYABLE, backoff, classify, classify_code, error_text, fatal_error
from plumbing.retry import Failure as AwsFailure
from worker.exceptions import ConfigError, UsageError, WorkerError
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.client import KinesisClient
    from types_aiobotocore_kinesis.type_defs import PutRecordsRequestEntryTypeDef
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


MAX_PENDING = 10_000  # events read ahead of what was accepted
MAX_ATTEMPTS = 10
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 5.0


class ReplayError(WorkerError):
    """The target kept refusing: the message says which events were still unsent."""


@dataclass
class Pending:
    line: int
    customer_id: str
    event_id: str
    body: str
    source: str = ""  # the file (or S3 object) the event was read from

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else f"line {self.line}"


@dataclass(frozen=True)
class Failure:
    entry: Pending
    reason: str
    retryable: bool


class Sink(Protocol):
    target: str
    max_entries: int
    max_bytes: int
    concurrency: int

    async def put(self, batch: list[Pending]) -> list[Failure]:
        """Send the batch; return the entries that were not accepted (all of them if the call failed)."""
        ...


def _call_failed(batch: list[Pending], exc: Exception, target: str) -> list[Failure]:
    """A whole call that failed: every entry again when throttled, transient or of unknown outcome
    (`plumbing.retry.classify`); a fatal error stops the replay at once, naming the target."""
    kind = classify(exc)
    if kind is AwsFailure.FATAL:
        raise fatal_error(exc, target) from exc
    if kind not in RETRYABLE:
        raise ReplayError(f"the target refused the batch: {error_text(exc)}")
    return [Failure(p, error_text(exc), True) for p in batch]


class SqsSink:
    max_entries, max_bytes, concurrency = 10, 256 * 1024, 8

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self.target = queue_url
        self._fifo = queue_url.endswith(".fifo")

    async def put(self, batch: list[Pending]) -> list[Failure]:
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for i, p in enumerate(batch):
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(i), "MessageBody": p.body}
            if self._fifo:
                entry["MessageGroupId"] = p.customer_id
                entry["MessageDeduplicationId"] = p.event_id
            entries.append(entry)
        try:
            response = await self._client.send_message_batch(QueueUrl=self.target, Entries=entries)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            return _call_failed(batch, exc, f"SQS queue {self.target}")
        accepted = {item["Id"] for item in response.get("Successful", [])}
        failures = []
        for item in response.get("Failed", []):
            p = batch[int(item["Id"])]
            reason = f"{item.get('Code', 'Error')}: {item.get('Message', '')}"
            failures.append(Failure(p, reason, not item.get("SenderFault", False)))
            accepted.add(item["Id"])
        return failures + [
            Failure(p, "no answer for this entry", True)
            for i, p in enumerate(batch)
            if str(i) not in accepted
        ]


class KinesisSink:
    max_entries, max_bytes, concurrency = 500, 5 * 1024 * 1024, 4

    def __init__(self, client: KinesisClient, stream: str) -> None:
        self._client = client
        self.target = stream
        self._arn = stream.startswith("arn:")

    async def put(self, batch: list[Pending]) -> list[Failure]:
        records: list[PutRecordsRequestEntryTypeDef] = [
            {"Data": p.body.encode(), "PartitionKey": p.customer_id} for p in batch
        ]
        try:
            if self._arn:
                response = await self._client.put_records(Records=records, StreamARN=self.target)
            else:
                response = await self._client.put_records(Records=records, StreamName=self.target)
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            return _call_failed(batch, exc, f"Kinesis stream {self.target}")
        failures = []
        for p, result in zip(batch, response.get("Records", []), strict=True):  # same order as the request
            if result.get("ErrorCode"):
                code = str(result["ErrorCode"])
                reason = f"{code}: {result.get('ErrorMessage', '')}"
                # throughput and internal failures pass; a KMS key that is disabled or denied does not
                kind = classify_code(code)
                if kind is AwsFailure.FATAL:
                    raise FatalAwsError(
                        f"Kinesis stream {self.target}: {reason}; check the stream's KMS key and that "
                        "the caller may use it"
                    )
                failures.append(Failure(p, reason, kind in RETRYABLE))
        return failures


@dataclass
class Counts:
    sent: int = 0
    skipped: int = 0  # bad lines and entries refused for good, reported with their line numbers
    retried: int = 0  # entries sent again after a failure
    out_of_range: int = 0  # outside --start / --end
    duplicates: int = 0  # an event_id read again after it was handed to the sender: not sent twice


@dataclass
class OrderedSender:
    """Per-customer queues: a batch takes the head of up to `max_entries` customers who have
    nothing in flight; a customer's next event becomes eligible once its head was accepted."""

    sink: Sink
    on_rejected: Callable[[Failure], None]
    on_done: Callable[[int], None] = lambda n: None
    backoff_base: float = BACKOFF_BASE_SECONDS
    counts: Counts = field(default_factory=Counts)
    stop_reason: str | None = None  # set when a refused entry stops the run (--on-error stop)
    _queues: dict[str, deque[Pending]] = field(default_factory=dict)
    _ready: deque[str] = field(default_factory=deque)
    _pending: int = 0
    _closed: bool = False
    _error: BaseException | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, entry: Pending) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._pending < MAX_PENDING or self._error is not None)
            self._raise_if_failed()
            queue = self._queues.get(entry.customer_id)
            if queue is None:
                self._queues[entry.customer_id] = deque([entry])
                self._ready.append(entry.customer_id)
            else:
                queue.append(entry)
            self._pending += 1
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def run(self) -> None:
        """Send until closed and drained; the first unrecoverable error stops every sender."""
        await asyncio.gather(*(self._sender() for _ in range(self.sink.concurrency)))
        self._raise_if_failed()

    async def _sender(self) -> None:
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda: (
                        bool(self._ready) or (self._closed and not self._pending) or self._error is not None
                    )
                )
                if self._error is not None or not self._ready:
                    return
                batch = self._take()
            try:
                await self._send(batch)
            except BaseException as exc:
                async with self._changed:
                    self._error = self._error or exc
                    self._changed.notify_all()
                return
            async with self._changed:
                for entry in batch:
                    queue = self._queues[entry.customer_id]
                    queue.popleft()
                    if queue:
                        self._ready.append(entry.customer_id)
                    else:
                        del self._queues[entry.customer_id]
                self._pending -= len(batch)
                self._changed.notify_all()
            self.on_done(len(batch))

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        size = 0
        while self._ready and len(batch) < self.sink.max_entries:
            head = self._queues[self._ready[0]][0]
            entry_size = len(head.body) + len(head.customer_id)
            if batch and size + entry_size > self.sink.max_bytes:
                break
            self._ready.popleft()
            batch.append(head)
            size += entry_size
        return batch

    async def _send(self, batch: list[Pending]) -> None:
        todo, attempt = batch, 0
        while todo:
            failures = await self.sink.put(todo)
            retry = [f for f in failures if f.retryable]
            for failure in failures:
                if not failure.retryable:
                    self.on_rejected(failure)
            self.counts.sent += len(todo) - len(failures)
            if not retry:
                return
            attempt += 1
            if attempt >= MAX_ATTEMPTS:
                lines = ", ".join(f.entry.where for f in retry[:10])
                raise ReplayError(
                    f"{self.sink.target}: events of {lines} still failing after {attempt} "
                    f"attempts ({retry[0].reason}); replay them again with --start"
                )
            self.counts.retried += len(retry)
            await backoff(attempt, self.backoff_base, BACKOFF_CAP_SECONDS)
            todo = [f.entry for f in retry]


@dataclass(frozen=True)
class ReplayRequest:
    events: str | Path | Sequence[str | Path]  # event paths: files, directories, globs, s3:// prefixes
    to: str
    rate: float | None = None
    speedup: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    on_error: str = "stop"
    as_json: bool = False


def _target(settings: Settings, to: str) -> str:
    value = settings.sqs_queue_url if to == "sqs" else settings.kinesis_stream
    if not value:
        name = "CHURN_SQS_QUEUE_URL" if to == "sqs" else "CHURN_KINESIS_STREAM"
        raise ConfigError(
            f"--to {to} needs {name} (or run `churn-worker bootstrap` and use the name it prints)"
        )
    return value


async def run_replay(
    settings: Settings, request: ReplayRequest, wrap_client: Callable[[Any], Any] = lambda client: client
) -> int:
    """`wrap_client` lets tests put a fault-injecting proxy around the aiobotocore client. Every
    argument, the target's setting and the input (listed, read up to its first valid event) are
    checked before any AWS client is made."""
    if request.start and request.end and request.start >= request.end:
        raise UsageError("--start must be before --end")
    target = _target(settings, request.to)
    records = read_event_paths(request.events, on_error=request.on_error)
    service = "sqs" if request.to == "sqs" else "kinesis"
    async with AwsClients(settings.aws_region, service) as aws:
        sink: Sink = (
            SqsSink(wrap_client(aws.sqs), target)
            if service == "sqs"
            else KinesisSink(wrap_client(aws.kinesis), target)
        )
        counts, stopped, seconds = await replay(request, sink, records)
    summary = {
        "to": request.to,
        "target": target,
        "sent": counts.sent,
        "skipped": counts.skipped,
        "retried": counts.retried,
        "out_of_range": counts.out_of_range,
        "duplicates": counts.duplicates,
        "seconds": round(seconds, 2),
    }
    if request.as_json:
        print(json.dumps(summary))
    else:
        rate = counts.sent / seconds if seconds > 0 else 0.0
        print(
            f"replayed {describe_paths(request.events)} to {request.to} {target}: sent {counts.sent}, "
            f"skipped {counts.skipped}, retried {counts.retried}, out of range {counts.out_of_range}, "
            f"duplicates {counts.duplicates}, {seconds:.1f} s ({rate:,.0f} events/s)"
        )
    if stopped:
        raise UsageError(f"{stopped} (use --on-error skip to skip bad lines); the events before it were sent")
    return 0


async def replay(
    request: ReplayRequest, sink: Sink, records: Iterator[SourcedEvent] | None = None
) -> tuple[Counts, str | None, float]:
    """Read, pace and send; returns the counts, the bad line that stopped the run (if any), seconds.
    `records`: the events as `read_event_paths` hands them out (read from `request.events` if None)."""
    if records is None:
        records = read_event_paths(request.events, on_error=request.on_error)
    started = time.monotonic()
    bar = tqdm(desc=f"replay -> {request.to}", unit="ev", unit_scale=True, file=sys.stderr, disable=None)

    def rejected(failure: Failure) -> None:
        text = f"{failure.entry.where}: refused by {request.to}: {failure.reason}"
        if request.on_error == "stop":
            sender.stop_reason = sender.stop_reason or text
        else:
            sender.counts.skipped += 1
            bar.write(f"{text}: skipped", file=sys.stderr)

    sender = OrderedSender(sink, rejected, on_done=bar.update, backoff_base=BACKOFF_BASE_SECONDS)
    sending = asyncio.create_task(sender.run())
    try:
        bad_line = await _read(request, records, sender, started, bar.write)
        await sender.close()
        await sending
    finally:
        if not sending.done():
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        bar.close()
    return sender.counts, bad_line or sender.stop_reason, time.monotonic() - started


def _event_key(event_id: str) -> int:
    """A 128-bit digest of an event_id: what the sent-set keeps (a collision is beyond reach)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=16).digest(), "big")


async def _read(
    request: ReplayRequest,
    records: Iterator[SourcedEvent],
    sender: OrderedSender,
    started: float,
    say: Callable[..., None],
) -> str | None:
    first_event: datetime | None = None
    admitted = 0
    sent_ids: set[int] = set()
    for record in records:
        item, number = record.item, record.line
        if sender.stop_reason:
            return None
        if isinstance(item, EventParseError):
            text = f"{record.source}:{number}: {item.error_code}: {item.error_detail}"
            if request.on_error == "stop":
                return text
            sender.counts.skipped += 1
            say(f"{text}: skipped", file=sys.stderr)
            continue
        if (request.start and item.occurred_at < request.start) or (
            request.end and item.occurred_at >= request.end
        ):
            sender.counts.out_of_range += 1
            continue
        key = _event_key(item.event_id)
        if key in sent_ids:
            sender.counts.duplicates += 1
            continue
        sent_ids.add(key)
        first_event = first_event or item.occurred_at
        due = started
        if request.speedup:
            due = max(due, started + (item.occurred_at - first_event).total_seconds() / request.speedup)
        if request.rate:
            due = max(due, started + admitted / request.rate)
        await _until(due, asyncio.sleep)
        admitted += 1
        await sender.add(Pending(number, item.customer_id, item.event_id, event_to_json(item), record.source))
    return None


async def _until(due: float, sleep: Callable[[float], Awaitable[None]]) -> None:
    wait = due - time.monotonic()
    if wait > 0.001:
        await sleep(wait)
