"""Publishing alerts: the SNS adapter of the alert sink and its in-memory twin.

`publish(alerts)` stamps each alert's `created_at`, sends the JSON bodies (docs/contracts.md,
Alerts) with String message attributes `alert_type`, `severity`, `customer_tier` and `arm`
(`Alert.attributes`), and returns the alerts that went out. SNS `PublishBatch` takes 10 entries a
call; entries it reports as `Failed` are sent again a few times with jittered backoff (sender
faults, which cannot succeed, are not), and so is a call that got no answer at all (a dropped
connection, a timeout: `BotoCoreError`, `OSError`). What still fails raises AlertPublishError
naming the alert ids and carrying exactly what did go out, whatever went wrong in which chunk, so
the caller marks those sent and nothing else.

A FIFO topic (ARN ending in `.fifo`) gets `MessageGroupId = customer_id` (one customer's alerts
in order) and `MessageDeduplicationId = message_id` (SNS drops a re-publish of the same message):
the alert id for an alert, `<alert_id>:escalated` / `<alert_id>:resolved` for its later messages,
which share its alert id. Every message also has a one-line `Subject` (e-mail subscriptions show
it): severity, type, customer and what changed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from plumbing.retry import Failure, backoff, classify, error_text, fatal_error
from worker.alerts.exceptions import AlertPublishError
from worker.alerts.rules import Alert
from worker.exceptions import FatalAwsError
from worker.ports import AlertPublisher

if TYPE_CHECKING:
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sns.type_defs import MessageAttributeValueTypeDef, PublishBatchRequestEntryTypeDef

__all__ = ["AlertPublisher", "MemoryAlertPublisher", "SnsAlertPublisher", "create_alert_topic"]

BATCH_SIZE = 10  # SNS PublishBatch's limit
MAX_ATTEMPTS = 4
BACKOFF_BASE_SECONDS = 0.1


def utc_now() -> datetime:
    return datetime.now(UTC)


def is_fifo(topic_arn: str) -> bool:
    return topic_arn.endswith(".fifo")


def _message_attributes(alert: Alert) -> dict[str, MessageAttributeValueTypeDef]:
    return {name: {"DataType": "String", "StringValue": value} for name, value in alert.attributes().items()}


def _unique(alerts: Sequence[Alert]) -> list[Alert]:
    """One entry per message: a batch may not carry the same message twice."""
    seen: dict[str, Alert] = {}
    for alert in alerts:
        seen.setdefault(alert.message_id, alert)
    return list(seen.values())


class SnsAlertPublisher:
    """Publishes to one SNS topic; `client` is an open aiobotocore SNS client."""

    def __init__(
        self,
        client: SNSClient,
        topic_arn: str,
        clock: Callable[[], datetime] = utc_now,
        backoff_base: float = BACKOFF_BASE_SECONDS,
    ) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._fifo = is_fifo(topic_arn)
        self._clock = clock
        self._backoff_base = backoff_base

    async def publish(
        self, alerts: Sequence[Alert], still_ours: Callable[[Alert], bool] | None = None
    ) -> list[Alert]:
        stamped = [alert.published_at(self._clock()) for alert in _unique(alerts)]
        chunks = [stamped[i : i + BATCH_SIZE] for i in range(0, len(stamped), BATCH_SIZE)]
        outcomes = await asyncio.gather(
            *(self._publish_chunk(chunk, still_ours) for chunk in chunks), return_exceptions=True
        )
        results: list[tuple[list[Alert], list[tuple[Alert, str]]]] = []
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            if isinstance(
                outcome, BaseException
            ):  # a bug or a fatal error in one chunk: the others' results stand
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                results.append(([], [(alert, error_text(outcome)) for alert in chunk]))
            else:
                results.append(outcome)
        # A fatal error (no such topic, access denied) is the cause of the AlertPublishError: the
        # caller marks what went out, then stops the worker.
        fatal = next((o for o in outcomes if isinstance(o, FatalAwsError)), None)
        order = {alert.message_id: i for i, alert in enumerate(stamped)}
        published = sorted(
            (alert for sent, _ in results for alert in sent), key=lambda a: order[a.message_id]
        )
        failed = [(alert, reason) for _, errors in results for alert, reason in errors]
        if failed:
            detail = ", ".join(f"{alert.alert_id} ({reason})" for alert, reason in failed)
            raise AlertPublishError(
                f"{len(failed)} of {len(stamped)} alerts not published to {self._topic_arn}: {detail}",
                published=published,
                failed=[alert for alert, _ in failed],
            ) from fatal
        return published

    def _entry(self, entry_id: str, alert: Alert) -> PublishBatchRequestEntryTypeDef:
        entry: PublishBatchRequestEntryTypeDef = {
            "Id": entry_id,
            "Message": json.dumps(alert.body()),
            "MessageAttributes": _message_attributes(alert),
            "Subject": alert.subject(),
        }
        if self._fifo:
            entry["MessageGroupId"] = alert.customer_id
            entry["MessageDeduplicationId"] = alert.message_id
        return entry

    async def _publish_chunk(
        self, chunk: list[Alert], still_ours: Callable[[Alert], bool] | None = None
    ) -> tuple[list[Alert], list[tuple[Alert, str]]]:
        """(published, [(failed alert, reason)]) for up to BATCH_SIZE alerts; an alert no longer
        `still_ours` before a retry is dropped from both."""
        pending = {f"a{i}": alert for i, alert in enumerate(chunk)}
        published: list[Alert] = []
        failed: list[tuple[Alert, str]] = []  # sender faults: sending again cannot help
        reasons: dict[str, str] = {}
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                await backoff(attempt - 1, self._backoff_base)
                if still_ours is not None:  # a claim taken over meanwhile is its new holder's to send
                    pending = {i: alert for i, alert in pending.items() if still_ours(alert)}
                    if not pending:
                        break
            try:
                response = await self._client.publish_batch(
                    TopicArn=self._topic_arn,
                    PublishBatchRequestEntries=[self._entry(i, alert) for i, alert in pending.items()],
                )
            except ClientError as exc:
                # botocore already retried throttling and 5xx; anything else will not get better here.
                if classify(exc) is Failure.FATAL:
                    raise fatal_error(exc, f"alert topic {self._topic_arn}") from exc
                return published, failed + [(alert, error_text(exc)) for alert in pending.values()]
            except (BotoCoreError, OSError, TimeoutError) as exc:
                # No answer: maybe published, maybe not. Send again (the same alert ids: a FIFO topic
                # drops a repeat, other consumers dedupe by alert_id); the last failure is reported.
                for entry_id in pending:
                    reasons[entry_id] = error_text(exc)
                continue
            for ok in response.get("Successful", []):
                if ok["Id"] in pending:
                    published.append(pending.pop(ok["Id"]))
            for failure in response.get("Failed", []):
                if failure["Id"] not in pending:
                    continue
                reasons[failure["Id"]] = f"{failure.get('Code', 'Error')}: {failure.get('Message', '')}"
                if failure.get("SenderFault"):
                    failed.append((pending.pop(failure["Id"]), reasons[failure["Id"]]))
            if not pending:
                break
        return published, failed + [(alert, reasons.get(i, "no answer")) for i, alert in pending.items()]


@dataclass(frozen=True)
class PublishedMessage:
    body: dict[str, Any]
    attributes: dict[str, str]
    group_id: str | None = None
    deduplication_id: str | None = None
    subject: str | None = None


@dataclass
class MemoryAlertPublisher:
    """The in-memory twin: records what would have been published (backtests and tests).

    `fifo=True` behaves like a FIFO topic's deduplication: a second publish of an alert id is
    accepted and dropped, as SNS does within its deduplication interval."""

    fifo: bool = False
    clock: Callable[[], datetime] = utc_now
    messages: list[PublishedMessage] = field(default_factory=list)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [message.body for message in self.messages]

    async def publish(
        self, alerts: Sequence[Alert], still_ours: Callable[[Alert], bool] | None = None
    ) -> list[Alert]:
        stamped = [alert.published_at(self.clock()) for alert in _unique(alerts)]
        seen = {m.deduplication_id for m in self.messages} if self.fifo else set()
        for alert in stamped:
            if alert.message_id in seen:
                continue
            self.messages.append(
                PublishedMessage(
                    body=alert.body(),
                    attributes=alert.attributes(),
                    group_id=alert.customer_id if self.fifo else None,
                    deduplication_id=alert.message_id if self.fifo else None,
                    subject=alert.subject(),
                )
            )
        return stamped


async def create_alert_topic(client: SNSClient, name: str) -> str:
    """Create the topic if missing (SNS's CreateTopic is idempotent) and return its ARN.
    A name ending in `.fifo` makes a FIFO topic, deduplicating by the MessageDeduplicationId we send."""
    attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if is_fifo(name) else {}
    response = await client.create_topic(Name=name, Attributes=attributes)
    arn: str = response["TopicArn"]
    return arn
