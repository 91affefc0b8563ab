"""Whole processes: a live worker re-scores quiet customers with no events sent, skips churned
ones, repeats no alert, loses nobody when killed mid-sweep; and an endpoint outage costs neither
events nor rule-only alerts, and everyone is scored once it is back."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import BIN, Process, Stack, base_env
from tests.e2e.test_sqs_worker import bootstrap, iso

pytestmark = pytest.mark.slow


def send(stack: Stack, events: list[dict[str, Any]]) -> None:
    sqs = stack.client("sqs")
    for start in range(0, len(events), 10):
        sqs.send_message_batch(
            QueueUrl=stack.env["CHURN_SQS_QUEUE_URL"],
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(e)} for i, e in enumerate(events[start : start + 10])
            ],
        )


def customers(now: datetime) -> list[dict[str, Any]]:
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
    add("c-spike", "ib_call", 3, sentiment="negative")
    add("c-spike", "ib_call", 1, sentiment="neutral")
    add("c-quiet", "customer_signed_up", 20, tier="premium")
    add("c-quiet", "login", 6)
    add("c-gone", "customer_signed_up", 20, tier="budget")
    add("c-gone", "customer_churned", 2)
    return events


def metrics(worker: Process) -> dict[str, Any]:
    port = int(worker.wait_for(r'"health_port": (\d+)').group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics.json", timeout=5) as response:
        return dict(json.load(response))


def rescored(worker: Process) -> float:
    return float(metrics(worker)["counters"].get("customers_rescored", 0))


def due_times(stack: Stack) -> dict[str, int | None]:
    table = stack.client("dynamodb")
    out: dict[str, int | None] = {}
    for cid in ("c-spike", "c-quiet", "c-gone"):
        item = table.get_item(
            TableName=stack.env["CHURN_TABLE_PREFIX"] + "features",
            Key={"customer_id": {"S": cid}, "bucket": {"S": "profile"}},
        )["Item"]
        out[cid] = int(item["due_us"]["N"]) if "due_us" in item else None
    return out


def test_a_live_worker_rescores_quiet_customers_skips_churned_ones_and_survives_a_kill_mid_sweep(
    stack: Stack,
) -> None:
    bootstrap(stack)
    alerts_queue = stack.subscribe_alerts()
    rescoring = {
        "CHURN_RESCORE_INTERVAL_HOURS": "0.002",
        "CHURN_RESCORE_TICK_SECONDS": "0.5",
        "CHURN_RESCORE_LEASE_SECONDS": "3",
    }  # every 7.2 s; a claim lease of 3 s
    send(stack, customers(datetime.now(UTC)))
    worker = stack.start_worker("worker-1", **rescoring)
    stack.wait_until(lambda: stack.queue_depth(stack.env["CHURN_SQS_QUEUE_URL"]) == 0, what="the events")
    assert due_times(stack)["c-gone"] is None  # churned: never in the index
    stack.wait_until(lambda: rescored(worker) >= 6, timeout=120, what="three rounds of re-scoring")
    first = due_times(stack)
    stack.wait_until(lambda: rescored(worker) >= 8, timeout=60, what="a fourth round")
    moved = due_times(stack)
    assert moved["c-gone"] is None
    assert moved["c-spike"] > first["c-spike"] and moved["c-quiet"] > first["c-quiet"]  # type: ignore[operator]
    assert worker.stop() == 0

    # A worker killed right after claiming due customers: their leases end, nobody is lost.
    killed = stack.start_worker("worker-killed", CHURN_FAULT_KILL_AT="mid_sweep", **rescoring)
    assert killed.proc.wait(timeout=60) == 137
    killed_at = time.time()
    survivor = stack.start_worker("worker-2", **rescoring)
    stack.wait_until(
        lambda: (
            rescored(survivor) >= 2
            and all((due or 0) / 1e6 > killed_at for cid, due in due_times(stack).items() if cid != "c-gone")
        ),
        timeout=60,
        what="the killed worker's customers re-scored",
    )
    survivor.stop()

    alerts = stack.drain(alerts_queue)
    assert [(a["customer_id"], a["type"], a["trigger"]) for a in alerts] == [
        ("c-spike", "IB_CALL_SPIKE", "event")
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_endpoint_outage_keeps_events_and_rule_only_alerts_flowing_and_everyone_is_scored_after(
    stack: Stack, tiny_bundle: Path
) -> None:
    port = free_port()  # nothing listens here yet: the endpoint is down
    stack.env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = f"http://127.0.0.1:{port}"
    bootstrap(stack)
    alerts_queue = stack.subscribe_alerts()
    events = customers(datetime.now(UTC))
    send(
        stack,
        [
            *events,
            {
                "event_id": "bad",
                "customer_id": "c-x",
                "type": "teleport",
                "occurred_at": iso(datetime.now(UTC)),
            },
        ],
    )
    worker = stack.start_worker(
        "worker",
        CHURN_SCORING_MAX_ATTEMPTS="2",
        CHURN_RESCORE_TICK_SECONDS="1",
        CHURN_SCORING_CIRCUIT_OPEN_SECONDS="5",
    )
    alerts: list[dict[str, Any]] = []
    stack.wait_until(
        lambda: alerts.extend(stack.drain(alerts_queue)) or bool(alerts),
        timeout=60,
        what="the rule-only alert during the outage, within a minute",
    )
    assert [(a["customer_id"], a["type"], a["scoring"]) for a in alerts] == [
        ("c-spike", "IB_CALL_SPIKE", "rules_only")
    ]
    stack.wait_until(
        lambda: stack.queue_depth(stack.env["CHURN_SQS_QUEUE_URL"]) == 0,
        timeout=60,
        what="every event acknowledged while the endpoint is down",
    )
    dead = stack.drain(stack.env["CHURN_DLQ_URL"], attributes=True)
    assert [m["MessageAttributes"]["error_code"]["StringValue"] for m in dead] == ["unknown_type"]
    assert rescored(worker) == 0

    endpoint = Process(
        [str(BIN / "churn-model"), "serve", "--bundle", str(tiny_bundle), "--port", str(port)],
        base_env(),
        "endpoint",
    )
    try:
        endpoint.wait_for(r"listening on", timeout=120)
        # The circuit half-opens within 5 s; the sweeper then scores the customers marked due.
        stack.wait_until(lambda: rescored(worker) >= 2, timeout=120, what="the due customers scored")
    finally:
        endpoint.stop()
    assert worker.proc.poll() is None
    assert stack.drain(alerts_queue) == []  # the spike's cooldown holds; the model rules are off here
