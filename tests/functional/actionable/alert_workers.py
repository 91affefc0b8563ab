"""Helpers for the tests of alerts people act on (budgets, what changed, the lifecycle, the report,
per-tier tuning): events on a clock the test drives, and a FIFO topic read through a queue. The
workers themselves are conftest.py's `make_worker` fixture."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes import Clock, record
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import DynamoDBAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.pipeline import Pipeline
from worker.ports import AlertPublisher, Record
from worker.rescore import Rescorer

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
DAY = timedelta(days=1)
RETENTION = timedelta(days=35)
ONLY_CALLS = AlertsConfig(
    high_churn_risk={"enabled": False},
    health_score_critical={"enabled": False},
    first_session_risk={"enabled": False},
    session_velocity_drop={"enabled": False},
)


def at(cid: str, kind: str, when: datetime, n: int, **fields: Any) -> Record:
    """An event of `cid` at `when` (its id `<cid>-<n>`)."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return record(
        {"event_id": f"{cid}-{n}", "customer_id": cid, "type": kind, "occurred_at": stamp, **fields}, n
    )


def customer(cid: str, now: datetime, paid: float, tier: str = "premium") -> list[Record]:
    """Signed up ten days ago, paid `paid` USD three days ago (their budget value), logged in yesterday."""
    return [
        at(cid, "customer_signed_up", now - 10 * DAY, 0, tier=tier),
        at(cid, "payment_succeeded", now - 3 * DAY, 1, amount=paid),
        at(cid, "login", now - DAY, 2),
    ]


def calls(cid: str, now: datetime, n: int, first: int = 10) -> list[Record]:
    """`n` negative inbound calls in the hour before `now`."""
    return [
        at(cid, "ib_call", now - timedelta(minutes=50 - 10 * i), first + i, sentiment="negative")
        for i in range(n)
    ]


@dataclass
class Worker:
    pipeline: Pipeline
    rescorer: Rescorer
    ledger: DynamoDBAlertLedger
    publisher: AlertPublisher
    clock: Clock
    requests: Counter[str] = field(default_factory=Counter)  # DynamoDB operations this worker sent

    @property
    def bodies(self) -> list[dict[str, Any]]:
        assert isinstance(self.publisher, MemoryAlertPublisher)
        return self.publisher.bodies


MakeWorker = Callable[..., Awaitable[Worker]]


async def topic_with_queue(sns: Any, sqs: Any, name: str) -> tuple[str, str]:
    """A FIFO topic (deduplicating by MessageDeduplicationId) and a raw-delivery FIFO queue on it."""
    topic = (await sns.create_topic(Name=f"{name}.fifo", Attributes={"FifoTopic": "true"}))["TopicArn"]
    url = (await sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"}))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    await sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return topic, url


async def received(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message on the queue now (bodies), deleted as read."""
    bodies: list[dict[str, Any]] = []
    while True:
        response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        batch = response.get("Messages", [])
        if not batch:
            return bodies
        bodies += [json.loads(m["Body"]) for m in batch]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
