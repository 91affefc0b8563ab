"""The worker as processes on Kinesis: duplicates and a SIGKILL, and two workers sharing a 4-shard
stream without losing or doubling anything."""

from __future__ import annotations

import json
import random
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from features.dynamodb import state_from_items, table_name
from tests.e2e.conftest import Stack
from tests.e2e.test_sqs_worker import MALFORMED, customer_events

pytestmark = pytest.mark.slow

KINESIS_ENV = {
    "CHURN_SOURCE": "kinesis",
    "CHURN_KINESIS_SHARDS": "4",
    "CHURN_KINESIS_LEASE_SECONDS": "3",
    "CHURN_KINESIS_POLL_SECONDS": "0.2",
}


def bootstrap(stack: Stack) -> str:
    stack.env.update(KINESIS_ENV)
    result = stack.cli("bootstrap", "--json")
    assert result.returncode == 0, result.stderr
    for row in map(json.loads, result.stdout.splitlines()):
        if row["setting"] and row["setting"] != "CHURN_TABLE_PREFIX":
            stack.env[row["setting"]] = row["value"]
    return stack.env["CHURN_KINESIS_STREAM"]


def put(stack: Stack, stream: str, bodies: list[tuple[str, str]]) -> None:
    kinesis = stack.client("kinesis")
    for start in range(0, len(bodies), 100):
        chunk = bodies[start : start + 100]
        response = kinesis.put_records(
            StreamName=stream, Records=[{"Data": body.encode(), "PartitionKey": key} for key, body in chunk]
        )
        assert response["FailedRecordCount"] == 0


def stored_counts(stack: Stack, customer: str) -> Counter[str]:
    items = stack.client("dynamodb").query(
        TableName=table_name(stack.env["CHURN_TABLE_PREFIX"]),
        KeyConditionExpression="customer_id = :c",
        ExpressionAttributeValues={":c": {"S": customer}},
        ConsistentRead=True,
    )["Items"]
    state = state_from_items(customer, items)
    total: Counter[str] = Counter()
    for page in state.pages.values():
        total.update({k: v for k, v in page.counts.items() if k.startswith("n.") and k.count(".") == 1})
    return total


def test_one_ib_call_spike_on_kinesis_despite_duplicates_and_a_sigkill(stack: Stack) -> None:
    stream = bootstrap(stack)
    alerts_queue = stack.subscribe_alerts()
    events = customer_events(datetime.now(UTC))
    records = [(e["customer_id"], json.dumps(e)) for e in events] + [("c-bad", body) for body in MALFORMED]
    put(stack, stream, records + records)  # every record twice

    first = stack.start_worker("worker-1")
    first.wait_for(r'"event": "alert published"', timeout=90)
    first.signal(signal.SIGKILL)
    first.proc.wait(timeout=10)
    stack.start_worker("worker-2")

    expected = Counter(f"n.{e['type']}" for e in events if e["customer_id"] == "c-healthy")
    stack.wait_until(
        lambda: stored_counts(stack, "c-healthy") == expected, what="every event of c-healthy stored"
    )
    stack.wait_until(
        lambda: stack.queue_depth(stack.env["CHURN_DLQ_URL"]) >= 3, what="bad records in the DLQ"
    )
    alerts = stack.drain(alerts_queue)
    spikes = [a for a in alerts if a["type"] == "IB_CALL_SPIKE"]
    assert [a["customer_id"] for a in spikes] == ["c-spike"], alerts
    assert not [a for a in alerts if a["customer_id"] == "c-healthy"]
    assert stored_counts(stack, "c-spike")["n.ib_call"] == 2  # delivered twice, counted once


def test_two_workers_split_four_shards_and_lose_or_double_nothing(stack: Stack) -> None:
    stream = bootstrap(stack)
    now = datetime.now(UTC)
    rnd = random.Random(5)
    sent: dict[str, Counter[str]] = {}
    records: list[tuple[str, str]] = []
    for c in range(40):
        cid = f"c-{c:03d}"
        sent[cid] = Counter()
        for n in range(6):
            kind = rnd.choice(["login", "message_sent"])
            event: dict[str, Any] = {
                "event_id": f"{cid}-{n}",
                "customer_id": cid,
                "type": kind,
                "occurred_at": (now - timedelta(hours=rnd.uniform(1, 200))).isoformat(),
            }
            sent[cid][f"n.{kind}"] += 1
            records.append((cid, json.dumps(event)))
    first = stack.start_worker("worker-a")
    second = stack.start_worker("worker-b")
    put(stack, stream, records)

    leases = stack.client("dynamodb")
    lease_table = f"{stack.env['CHURN_TABLE_PREFIX']}leases"

    def owners() -> Counter[str]:
        items = leases.scan(TableName=lease_table, ConsistentRead=True)["Items"]
        return Counter(
            i["owner"]["S"] for i in items if "owner" in i and not i["shard_id"]["S"].startswith("worker#")
        )

    stack.wait_until(lambda: sorted(owners().values()) == [2, 2], what="the shards split 2/2")
    stack.wait_until(
        lambda: all(stored_counts(stack, cid) == counts for cid, counts in sent.items()),
        timeout=120,
        what="every event stored exactly once",
    )
    assert first.proc.poll() is None and second.proc.poll() is None
