"""Every port of the worker in one place: what the pipeline and the sweeper need from the outside
world, as Protocols.

AWS adapters (SQS, Kinesis, SageMaker, SNS, DynamoDB) and in-memory twins implement these; the
pipeline (`worker.pipeline`) and the sweeper (`worker.rescore`) only ever see the protocols.

| port             | AWS adapter                                   | in-memory twin                 |
|------------------|-----------------------------------------------|--------------------------------|
| `EventSource`    | `sources.sqs.SqsSource`, `sources.kinesis.KinesisSource` | the backtest's source |
| `DeadLetterQueue`| `sources.sqs.SqsDeadLetterQueue`              | the backtest's / tests' lists  |
| `FeatureStore`   | `features.dynamodb.DynamoDBFeatureStore`      | `features.store.MemoryFeatureStore` |
| `DueIndex`       | `features.due_dynamodb.DynamoDBDueIndex`      | `features.due.MemoryDueIndex`  |
| `Scorer`         | `scoring.SageMakerScorer`                     | the backtest's in-process model |
| `AlertLedger`    | `alerts.dynamodb_ledger.DynamoDBAlertLedger`  | `alerts.ledger.MemoryAlertLedger` |
| `AlertPublisher` | `alerts.publisher.SnsAlertPublisher`          | `alerts.publisher.MemoryAlertPublisher` |
| `EventArchive`   | `archive.S3EventArchive`                      | `archive.MemoryEventArchive`   |
| `ShadowLog`      | `shadow_log.SnsShadowLog`, `shadow_log.S3ShadowLog` | `shadow_log.MemoryShadowLog` |

`FeatureStore` and `DueIndex` are defined next to the state they keep (`features/`, which does
not depend on the worker) and re-exported here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from features.due import DueIndex
from features.store import FeatureStore

if TYPE_CHECKING:
    from features.events import Event
    from worker.alerts.alert_outcomes import OutcomeStats, Resolution
    from worker.alerts.budgets import BudgetsConfig, BudgetSlot
    from worker.alerts.claims import Claim
    from worker.alerts.config import AlertsConfig
    from worker.alerts.rules import Alert

__all__ = [
    "AlertLedger",
    "AlertPublisher",
    "DeadLetterQueue",
    "Delivery",
    "DueIndex",
    "EventArchive",
    "EventSource",
    "FeatureStore",
    "Record",
    "Scorer",
    "Settlement",
    "ShadowLog",
]


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


class Scorer(Protocol):
    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        """One prediction per row of `features` ([customers, features], registry order)."""
        ...


class AlertPublisher(Protocol):
    async def publish(
        self, alerts: Sequence[Alert], still_ours: Callable[[Alert], bool] | None = None
    ) -> list[Alert]:
        """Send the alerts; returns them as published (with `created_at`), in order. Raises
        `AlertPublishError` carrying exactly what went out and what did not. `still_ours`, when
        given, is asked before any retry: an alert whose claim another worker took over is not
        sent again (and is neither published nor failed)."""
        ...


class EventArchive(Protocol):
    async def write(self, events: Sequence[Event]) -> None:
        """Durably store the events (duplicates allowed: removed by `event_id` where the archive is
        read); raises when it could not, and the caller leaves their records for redelivery."""
        ...


class ShadowLog(Protocol):
    """Where the shadow model's alerts go (`worker.shadow`): never the retention topic."""

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Log shadow alert records (best effort: the caller counts a failure and goes on)."""
        ...

    async def flush(self) -> None:
        """Write out whatever is buffered (on shutdown)."""
        ...


class AlertLedger(Protocol):
    """Cooldowns, churn and exactly-once claims: the rules are `worker.alerts.claims`'."""

    async def claim(
        self,
        alert: Alert,
        now: datetime,
        cooldown: timedelta,
        *,
        resolve_after: timedelta | None = None,
        budget: BudgetSlot | None = None,
    ) -> Claim: ...

    async def claim_all(
        self,
        alerts: Sequence[Alert],
        now: datetime,
        config: AlertsConfig,
        budgets: BudgetsConfig | None = None,
    ) -> list[Claim]:
        """One claim per alert, in order, each with its type's (and tier's) cooldown and lifecycle
        from `config`, and its budget from `budgets` (each budget's alerts by expected value)."""
        ...

    async def resolutions_due(self, now: datetime, limit: int) -> list[Claim]:
        """Up to `limit` open lifecycle alerts clear past their deadline, turned into their
        resolution messages (NEW claims): publish them and mark them sent."""
        ...

    async def resolution_candidates(self, now: datetime, limit: int) -> list[Alert]:
        """Up to `limit` open lifecycle alerts past their deadline, as stored (nothing changed yet)."""
        ...

    async def resolve(self, alert: Alert, now: datetime) -> Claim | None:
        """The resolution message of one candidate (a NEW claim), or None if it is no longer
        resolvable (a heartbeat came, another worker resolved it, the customer churned)."""
        ...

    async def mark_sent(self, alert: Alert) -> bool:
        """False if the claim is no longer this alert's (a later window replaced it)."""
        ...

    async def mark_all_sent(self, alerts: Sequence[Alert]) -> list[bool]: ...

    async def release(self, alerts: Sequence[Alert], now: datetime) -> None:
        """End the leases of these unsent claims now (their publish failed): the next sweep
        re-publishes them."""
        ...

    async def abandoned(self, now: datetime, limit: int) -> list[Claim]:
        """Up to `limit` unsent claims whose lease ran out, taken over (PENDING): publish them."""
        ...

    @property
    def lease_length(self) -> timedelta:
        """How long a claim is its holder's to publish."""
        ...

    async def renew(self, claim: Claim, now: datetime) -> Claim | None:
        """The claim with a fresh lease from `now`, or None if it is no longer its holder's."""
        ...

    async def keep_live(self, claims: Sequence[Claim], now: datetime) -> list[Claim]:
        """The publishable claims still held by their caller, each with at least half a lease ahead
        (renewed if need be); claims another worker took over meanwhile are left out."""
        ...

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        """The customer churned at `churned_at` (the event's time): no alerts until a return."""
        ...

    async def upkeep(self, now: datetime) -> None:
        """The ledger's own bookkeeping, once a sweeper step (a bounded piece of work; raises
        `AlertLedgerError` to be retried at a later step)."""
        ...

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        """The customer who churned at `churned_at` signed up again at `signed_up_at` (not earlier)."""
        ...

    # Live outcomes (`worker.alerts.alert_outcomes`): every claimed alert leaves a record that ends
    # confirmed (churn within 30 days) or expired (none), counted per alert day, type and arm.

    async def confirm_churn(self, customer_id: str, churned_at: datetime) -> list[Resolution]:
        """Confirm the customer's alerts of the 30 days before the churn; returns those confirmed now."""
        ...

    async def expire_outcomes(self, now: datetime, limit: int) -> list[Resolution]:
        """Expire up to `limit` alerts whose 30 days passed without a churn; returns them."""
        ...

    async def outcome_stats(self, since: date, until: date) -> OutcomeStats:
        """Confirmed, expired and open alerts of the UTC days `since` .. `until`, per type and arm;
        escalations and resolutions; the budgets' days (units given out, deferrals)."""
        ...

    async def open_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """The latest message (body, plus `sent`) of the alerts of those days whose outcome is
        still open, most at risk first."""
        ...

    async def deferred_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """The alerts deferred on those days (bodies, plus `deferred_on`), highest expected value first."""
        ...
