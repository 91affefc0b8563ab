"""The worker as a process on SQS: duplicates, a SIGKILL mid-batch, bad messages."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.conftest import BIN, Stack

pytestmark = pytest.mark.slow


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def customer_events(now: datetime) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []

    def add(cid: str, kind: str, days_ago: float, **fields: Any) -> None:
        events.append(
            {
                "event_id": f"{cid}-{len(events)}",
                "customer_id": cid,
                "type": kind,
                "occurred_at": iso(now - timedelta(days=days_ago)),
                **fields,
            }
        )

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
    json.dumps(
        {"event_id": "bad-1", "customer_id": "c-x", "type": "teleport", "occurred_at": "2026-11-27T00:00:00Z"}
    ),
    json.dumps(
        {
            "event_id": "bad-2",
            "customer_id": "c-x",
            "type": "session_rated",
            "rating": 9,
            "tutor_id": "t",
            "occurred_at": "2026-11-27T00:00:00Z",
        }
    ),
    # Poison that used to escape as RecursionError / ValueError / OverflowError / infinity and fail
    # the whole batch, or break the customer later: each costs its own record now.
    '{"event_id": "bad-3", "x": ' + "[" * 20_000 + "]" * 20_000 + "}",
    '{"event_id": "bad-4", "customer_id": "c-x", "type": "payment_succeeded", "occurred_at": "2026-11-27T00:00:00Z", '
    '"amount": ' + "9" * 5000 + "}",
    json.dumps(
        {
            "event_id": "bad-5",
            "customer_id": "c-x",
            "type": "login",
            "occurred_at": "9999-12-31T23:59:59-01:00",
        }
    ),
    '{"event_id": "bad-6", "customer_id": "c-x", "type": "payment_failed", "occurred_at": "2026-11-27T00:00:00Z", '
    '"amount": 1e400}',
    json.dumps(
        {
            "event_id": "bad-7",
            "customer_id": "c-spike",
            "type": "payment_succeeded",
            "amount": 1e17,
            "occurred_at": "2026-11-27T00:00:00Z",
        }
    ),
]


def bootstrap(stack: Stack) -> None:
    result = stack.cli("bootstrap", "--json")
    assert result.returncode == 0, result.stderr
    for row in map(json.loads, result.stdout.splitlines()):
        if row["setting"] and row["setting"] != "CHURN_TABLE_PREFIX":
            stack.env[row["setting"]] = row["value"]


def test_one_alert_id_despite_duplicates_a_kill_between_publish_and_mark_sent_and_poison(
    stack: Stack,
) -> None:
    """Every message twice, poison in the same batches, and the first worker killed at the one step
    that can duplicate an alert: after publishing it, before marking it sent. The second worker
    re-publishes that alert with the same alert_id (consumers and FIFO topics dedupe by it), sends
    nothing else twice, and dead-letters exactly the bad records."""
    bootstrap(stack)
    alerts_queue = stack.subscribe_alerts()
    bodies = [json.dumps(e) for e in customer_events(datetime.now(UTC))] + MALFORMED
    bodies = bodies * 2  # every message delivered twice
    random.Random(3).shuffle(bodies)
    sqs = stack.client("sqs")
    queue = stack.env["CHURN_SQS_QUEUE_URL"]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[
                {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
            ],
        )

    first = stack.start_worker(
        "worker-1", CHURN_FAULT_KILL_AT="after_publish", CHURN_ALERT_CLAIM_LEASE_SECONDS="5"
    )
    assert first.proc.wait(timeout=120) == 137  # killed right after publishing, before mark-sent
    first.wait_for(r"killed at fault point after_publish", timeout=5)

    second = stack.start_worker("worker-2", CHURN_ALERT_CLAIM_LEASE_SECONDS="5")
    stack.wait_until(lambda: stack.queue_depth(queue) == 0, timeout=240, what="the queue to drain")
    assert second.proc.poll() is None, "the worker must keep running after bad messages"
    seen: list[dict[str, Any]] = []

    def republished() -> bool:
        seen.extend(stack.drain(alerts_queue))
        return len(seen) >= 2

    stack.wait_until(republished, timeout=60, what="the re-published alert")
    time.sleep(6)  # past another claim lease: nothing more comes
    seen.extend(stack.drain(alerts_queue))
    spikes = [a for a in seen if a["type"] == "IB_CALL_SPIKE"]
    assert {a["customer_id"] for a in seen} == {"c-spike"}, seen
    assert len({a["alert_id"] for a in spikes}) == 1 and len(spikes) == 2  # the one possible duplicate
    assert spikes[0]["severity"] == "CRITICAL"
    assert spikes[0]["message"] == "Customer has made 2 calls in 14 days"

    dead = stack.drain(stack.env["CHURN_DLQ_URL"], attributes=True)
    codes = Counter(m["MessageAttributes"]["error_code"]["StringValue"] for m in dead)
    assert set(codes) == {"not_json", "unknown_type", "invalid_field"}
    bad_ids = {
        json.loads(m["Body"]).get("event_id")
        if m["Body"].startswith("{") and len(m["Body"]) < 2000
        else m["Body"][:20]
        for m in dead
    }
    assert {"bad-1", "bad-2", "bad-5", "bad-6", "bad-7"} <= bad_ids
    # Exactly the bad records, each sent twice: 16 source messages. A batch the kill interrupted had
    # quarantined some already without acknowledging them: those are quarantined again on
    # redelivery (at least once into the DLQ), under the same source_id attribute.
    sources = {m["MessageAttributes"]["source_id"]["StringValue"] for m in dead}
    assert len(sources) == 2 * len(MALFORMED)

    assert second.stop() == 0  # SIGTERM: a clean, prompt exit
    second.wait_for(r'"event": "worker stopped"', timeout=5)


def test_a_missing_queue_stops_the_worker_with_exit_1_and_one_line(stack: Stack) -> None:
    bootstrap(stack)
    env = dict(stack.env, CHURN_SQS_QUEUE_URL=stack.env["CHURN_SQS_QUEUE_URL"] + "-gone")
    result = subprocess.run(
        [str(BIN / "churn-worker"), "--config", str(stack.config), "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("churn-worker: error: queue ") and "NonExistentQueue" in last
    assert "Traceback" not in result.stderr
