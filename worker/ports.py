"""The pipeline's ports: what it needs from the outside world, as Protocols.

AWS adapters (SQS, Kinesis, SageMaker, SNS, DynamoDB) and in-memory twins implement these; the
pipeline (`worker.pipeline`) only ever sees the protocols. The feature-store port is
`features.store.FeatureStore`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Record:
    """One message as a source delivered it: the raw body and the handle to settle it with."""

    body: bytes
    handle: Any  # SQS receipt handle, Kinesis sequence number (a ~56-digit string), ...
    source_id: str  # SQS MessageId, or "<shard>:<sequence>": for logs and DLQ attributes
    enqueued_at: float | None = None  # epoch seconds the source accepted it, for event-to-alert latency
    receive_count: int = 1  # deliveries so far, including this one (SQS ApproximateReceiveCount)


@dataclass
class Settlement:
    """What became of each record of a delivery once the pipeline is done with it."""

    done: list[Record] = field(default_factory=list)  # effects durable: delete / checkpoint past it
    quarantined: list[Record] = field(default_factory=list)  # bad input, already in the DLQ: drop it
    failed: list[Record] = field(default_factory=list)  # transient failure: deliver again later


class Delivery(Protocol):
    """A batch of records from one source poll (one SQS receive, one Kinesis GetRecords)."""

    records: Sequence[Record]

    async def settle(self, settlement: Settlement) -> None:
        """Acknowledge done + quarantined records; leave failed ones for redelivery."""
        ...


class EventSource(Protocol):
    def deliveries(self) -> AsyncIterator[Delivery]:
        """Batches until `stop()` is called; in-flight deliveries are settled by the caller."""
        ...

    async def stop(self) -> None:
        """Stop polling (SIGTERM). Deliveries already handed out may still be settled."""
        ...


class DeadLetterQueue(Protocol):
    async def quarantine(self, record: Record, error_code: str, error_detail: str) -> None:
        """Park a bad record with `error_code` / `error_detail` message attributes."""
        ...
