"""SQS adapters: the event source (long polling, several pollers, visibility heartbeats, batch
deletes after effects are durable) and the dead-letter queue for bad events.

Invariants:
- A message is deleted only in `settle`, i.e. after the pipeline made its effects durable, or
  after it was copied to the DLQ. Anything else (a crash, a failed record) lets SQS redeliver it.
- While a delivery is being worked on, a heartbeat extends the visibility of its unsettled
  messages, so a slow batch (endpoint retries, throttling) is not redelivered to another poller.
- `stop()` ends polling at once; deliveries already handed out can still be settled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from plumbing.retry import backoff, backoff_delay, error_text, fatal_error, is_fatal
from worker.ports import Delivery, Record, Settlement

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageAttributeValueTypeDef

log = structlog.get_logger(__name__)

MAX_BATCH = 10  # SQS's limit for receive, delete and change-visibility batches
MAX_DLQ_BODY = 240 * 1024  # SQS's limit is 256 KiB including attributes
MAX_RETRY_DELAY = 900  # seconds before a failed message is visible again, at most
RETRY_DELAY = 5  # seconds before a message that failed once is visible again; doubles per delivery


def retry_delay(receive_count: int, base: int = RETRY_DELAY) -> int:
    """Seconds a message that failed its `receive_count`-th delivery stays invisible."""
    return int(min(MAX_RETRY_DELAY, base * 2 ** min(receive_count - 1, 10)))


def redrive_after_seconds(max_receive_count: int, visibility_timeout: int, base: int = RETRY_DELAY) -> int:
    """How long a message that fails every delivery takes to reach the dead-letter queue: the
    back-offs between its `max_receive_count` deliveries, each worked on for up to the visibility
    timeout. Bootstrap keeps this well inside the queue's retention, or the message would expire
    unseen instead of being dead-lettered."""
    return sum(retry_delay(n, base) + visibility_timeout for n in range(1, max_receive_count))


class SqsDelivery:
    def __init__(self, source: SqsSource, records: list[Record]) -> None:
        self.records: Sequence[Record] = records
        self._source = source
        self._unsettled = {record.handle for record in records}
        self._heartbeat = asyncio.create_task(self._extend_visibility())

    async def _extend_visibility(self) -> None:
        interval = max(1.0, self._source.visibility_timeout / 3)
        while True:
            await asyncio.sleep(interval)
            handles = list(self._unsettled)
            if handles:
                await self._source.change_visibility(handles, self._source.visibility_timeout)

    async def settle(self, settlement: Settlement) -> None:
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        acked = [r.handle for r in settlement.done + settlement.quarantined]
        await self._source.delete(acked)
        for record in settlement.failed:
            # Visible again after a back-off that grows with each delivery: redelivered, not lost,
            # not hammered during an outage, and slow enough that the redrive policy's
            # maxReceiveCount (see bootstrap) is hours away, so good events do not drift into the DLQ.
            delay = retry_delay(record.receive_count, self._source.retry_delay)
            await self._source.change_visibility([record.handle], delay)
        self._unsettled.clear()


class SqsSource:
    """`EventSource` over one SQS queue."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        *,
        pollers: int = 4,
        wait_seconds: int = 20,
        visibility_timeout: int = 60,
        retry_delay: int = RETRY_DELAY,
        max_records: int = MAX_BATCH,
    ) -> None:
        self._client = client
        self._max_records = max_records
        self._queue_url = queue_url
        self._pollers = pollers
        self._wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.retry_delay = retry_delay
        self._ready: asyncio.Queue[SqsDelivery | Exception | None] = asyncio.Queue(maxsize=pollers)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.received = 0

    async def deliveries(self) -> AsyncIterator[Delivery]:
        self._tasks = [asyncio.create_task(self._poll(i)) for i in range(self._pollers)]
        try:
            while not self._stopping.is_set():
                getter = asyncio.ensure_future(self._ready.get())
                stopper = asyncio.ensure_future(self._stopping.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                delivery = getter.result()
                if isinstance(delivery, Exception):
                    raise delivery  # fatal: the runtime stops the worker with exit code 1
                if delivery is not None:
                    yield delivery
        finally:
            await self.stop()

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        # A receive cancelled in flight may still have been answered: those messages reappear
        # after their visibility timeout. Delayed, never lost.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _receive(self, wait_seconds: int) -> Any:
        return await self._client.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=MAX_BATCH,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
        )

    async def _more(self, messages: list[Any]) -> None:
        """A full receive means a backlog: receive again at once (short polls), up to half of
        `max_records` (the runtime's pipeline batch),
        so one delivery feeds a bigger pipeline batch (the store, the endpoint, the archive and the
        topic are paid per batch). A receive that comes back short, or fails, ends it: the
        messages in hand go out now, the rest wait for the next poll."""
        last = len(messages)
        # Half the pipeline batch: the runtime still groups deliveries into batches of about max_records.
        limit = max(MAX_BATCH, self._max_records // 2)
        while last == MAX_BATCH and len(messages) + MAX_BATCH <= limit and not self._stopping.is_set():
            try:
                more = (await self._receive(0)).get("Messages", [])
            except (ClientError, BotoCoreError, OSError, TimeoutError):
                return
            messages += more
            last = len(more)

    async def _poll(self, poller: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                response = await self._receive(self._wait_seconds)
                failures = 0
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                if is_fatal(exc):  # access denied, no such queue: stop the worker, do not spin
                    await self._ready.put(fatal_error(exc, f"queue {self._queue_url}"))
                    return
                delay = backoff_delay(failures, 0.5, 30.0)
                failures += 1
                log.warning(
                    "sqs receive failed", poller=poller, error=error_text(exc), retry_in_s=round(delay, 1)
                )
                await asyncio.sleep(delay)
                continue
            messages = response.get("Messages", [])
            if not messages:
                continue
            await self._more(messages)
            self.received += len(messages)
            records = [
                Record(
                    body=message["Body"].encode(),
                    handle=message["ReceiptHandle"],
                    source_id=message["MessageId"],
                    enqueued_at=int(message.get("Attributes", {}).get("SentTimestamp", 0)) / 1000 or None,
                    receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                )
                for message in messages
            ]
            await self._ready.put(SqsDelivery(self, records))

    async def delete(self, handles: list[str]) -> None:
        await self._batched("delete_message_batch", [{"ReceiptHandle": h} for h in handles])

    async def change_visibility(self, handles: list[str], seconds: int) -> None:
        entries = [{"ReceiptHandle": h, "VisibilityTimeout": seconds} for h in handles]
        await self._batched("change_message_visibility_batch", entries)

    async def _batched(self, operation: str, entries: list[dict[str, Any]]) -> None:
        """Run a batch API in chunks of 10, retrying entries SQS reports as failed."""
        for start in range(0, len(entries), MAX_BATCH):
            chunk = [dict(entry, Id=str(i)) for i, entry in enumerate(entries[start : start + MAX_BATCH])]
            for attempt in range(5):
                try:
                    if operation == "delete_message_batch":
                        response: Any = await self._client.delete_message_batch(
                            QueueUrl=self._queue_url,
                            Entries=chunk,  # type: ignore[arg-type]  # built above
                        )
                    else:
                        response = await self._client.change_message_visibility_batch(
                            QueueUrl=self._queue_url,
                            Entries=chunk,  # type: ignore[arg-type]
                        )
                except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                    log.warning(
                        "sqs batch call failed", operation=operation, error=error_text(exc), attempt=attempt
                    )
                    await backoff(attempt, 0.2)
                    continue
                failed = {f["Id"] for f in response.get("Failed", []) if not f.get("SenderFault")}
                for failure in response.get("Failed", []):
                    if failure.get("SenderFault"):  # e.g. an expired receipt handle: SQS will redeliver
                        log.info("sqs entry not applied", operation=operation, code=failure.get("Code"))
                chunk = [entry for entry in chunk if entry["Id"] in failed]
                if not chunk:
                    break
                await backoff(attempt, 0.2)
            else:
                log.error("sqs batch entries still failing; SQS will redeliver them", operation=operation)


class SqsDeadLetterQueue:
    """Quarantine for bad events: the original body plus `error_code` / `error_detail` attributes."""

    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    async def quarantine(self, record: Record, error_code: str, error_detail: str) -> None:
        body, encoding = _printable(record.body)
        attributes: dict[str, MessageAttributeValueTypeDef] = {
            "error_code": {"DataType": "String", "StringValue": error_code},
            "error_detail": {"DataType": "String", "StringValue": error_detail[:1000] or "-"},
            "source_id": {"DataType": "String", "StringValue": record.source_id or "-"},
            "body_encoding": {"DataType": "String", "StringValue": encoding},
        }
        try:
            await self._client.send_message(
                QueueUrl=self._queue_url, MessageBody=body, MessageAttributes=attributes
            )
        except (ClientError, BotoCoreError) as exc:
            if is_fatal(exc):  # no such queue, access denied: every bad record would wait forever
                raise fatal_error(exc, f"dead-letter queue {self._queue_url}") from exc
            raise


def _printable(body: bytes) -> tuple[str, str]:
    """SQS bodies must be valid Unicode text; anything else travels base64-encoded. Over-large
    bodies (a Kinesis record can be 1 MB) are cut, and say so."""
    encoding = "utf-8"
    try:
        text = body.decode("utf-8")
        if any(ord(c) < 0x20 and c not in "\t\n\r" for c in text):
            raise ValueError("control characters")
    except ValueError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    if len(text.encode()) > MAX_DLQ_BODY:
        text, encoding = text[: MAX_DLQ_BODY // 4], encoding + "+truncated"
    return text or "-", encoding
