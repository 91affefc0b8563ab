"""The worker as a process on SQS: duplicates, a SIGKILL mid-batch, bad messages."""

from __future__ import annotations

import json
import random
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.slow


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def customer_events(now: datetime) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def add(cid: str, kind: str, days_ago: float, **fields: Any) -> None:
        events.append({"event_id": f"{cid}-{len(events)}", "customer_id": cid, "type": kind,
                       "occurred_at": iso(now - timedelta(days=days_ago)), **fields})  # fmt: skip

    add("c-spike", "customer_signed_up", 10, tier="standard")
    add("c-spike", "login", 2)
    add("c-spike", "ib_call", 3, sentiment="negative")
    add("c-spike", "ib_call", 1, sentiment="neutral")
    add("c-healthy", "customer_signed_up", 20, tier="premium")
    for day in range(19, 0, -2):
        add("c-healthy", "session_completed", day, subject="algebra", tutor_id="t-1", duration_minutes=60)
        add("c-healthy", "session_rated", day - 0.1, rating=5, tutor_id="t-1")
        add("c-healthy", "login", day + 0.5)
    add("c-healthy", "payment_succeeded", 5, amount=99.0)
    return events


MALFORMED = [
    "this is not json",
    json.dumps({"event_id": "bad-1", "customer_id": "c-x", "type": "teleport", "occurred_at": "2026-11-27T00:00:00Z"}),
    json.dumps({"event_id": "bad-2", "customer_id": "c-x", "type": "session_rated", "rating": 9, "tutor_id": "t",
                "occurred_at": "2026-11-27T00:00:00Z"}),
]


def bootstrap(stack: Stack) -> None:
    result = stack.cli("bootstrap", "--json")
    assert result.returncode == 0, result.stderr
    for row in map(json.loads, result.stdout.splitlines()):
        if row["setting"] and row["setting"] != "CHURN_TABLE_PREFIX":
            stack.env[row["setting"]] = row["value"]


def test_one_ib_call_spike_alert_despite_duplicates_a_sigkill_and_bad_messages(stack: Stack) -> None:
    bootstrap(stack)
    alerts_queue = stack.subscribe_alerts()
    bodies = [json.dumps(e) for e in customer_events(datetime.now(UTC))] + MALFORMED
    bodies = bodies * 2  # every message delivered twice
    random.Random(3).shuffle(bodies)
    sqs = stack.client("sqs")
    queue = stack.env["CHURN_SQS_QUEUE_URL"]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=queue, Entries=[
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])])  # fmt: skip

    first = stack.start_worker("worker-1")
    first.wait_for(r'"event": "alert published"', timeout=90)
    first.signal(signal.SIGKILL)  # mid-batch: published, maybe not marked sent, not deleted
    first.proc.wait(timeout=10)

    second = stack.start_worker("worker-2")
    stack.wait_until(lambda: stack.queue_depth(queue) == 0, timeout=240, what="the queue to drain")
    assert second.proc.poll() is None, "the worker must keep running after bad messages"

    alerts = stack.drain(alerts_queue)
    spikes = [a for a in alerts if a["type"] == "IB_CALL_SPIKE"]
    assert [a["customer_id"] for a in spikes] == ["c-spike"], alerts
    assert spikes[0]["severity"] == "CRITICAL"
    assert spikes[0]["message"] == "Customer has made 2 calls in 14 days"
    assert not [a for a in alerts if a["customer_id"] == "c-healthy"]

    dead = stack.drain(stack.env["CHURN_DLQ_URL"], attributes=True)
    codes = Counter(m["MessageAttributes"]["error_code"]["StringValue"] for m in dead)
    # each bad message was sent twice; one quarantined just before the SIGKILL may be there once more
    assert set(codes) == {"not_json", "unknown_type", "invalid_field"}
    assert all(count >= 2 for count in codes.values()) and sum(codes.values()) <= 6 + 10

    assert second.stop() == 0  # SIGTERM: a clean, prompt exit
    second.wait_for(r'"event": "worker stopped"', timeout=5)
