"""Whole processes on moto and the local model server: a worker that archives every accepted event to
S3 while it works, holds half the alerting customers' alerts back as control (all of them in the
ledger with their arm, the treated ones alone on the retention topic), and keeps sending its live
alerts while its shadow endpoint hangs."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from features.s3events import list_event_objects
from tests.e2e.conftest import E2E_CONFIG, Process, Stack
from tests.e2e.test_rescore_worker import metrics, send
from tests.e2e.test_sqs_worker import bootstrap, iso
from worker.alerts.experiment import ExperimentConfig, assign_arm

pytestmark = pytest.mark.slow

EXPERIMENT = ExperimentConfig(control_fraction=0.5, salt="e2e-holdout")
SHADOW = "churn-shadow"


def spiking_customers(now: datetime, count: int, tag: str) -> list[dict[str, Any]]:
    """`count` customers with two inbound calls in 14 days each: an IB_CALL_SPIKE each."""
    events = []
    for i in range(count):
        cid = f"c-{tag}-{i:03d}"
        for n, (kind, days, extra) in enumerate(
            (
                ("customer_signed_up", 20, {"tier": "standard"}),
                ("ib_call", 3, {"sentiment": "negative"}),
                ("ib_call", 1, {"sentiment": "neutral"}),
            )
        ):
            events.append(
                {
                    "event_id": f"{cid}-{n}",
                    "customer_id": cid,
                    "type": kind,
                    "occurred_at": iso(now - timedelta(days=days)),
                    **extra,
                }
            )
    return events


def subscribe(stack: Stack, topic_arn: str) -> str:
    sqs, sns = stack.client("sqs"), stack.client("sns")
    url = sqs.create_queue(QueueName=f"sub-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(url)


def test_archive_and_a_half_held_out_experiment(stack: Stack) -> None:
    prefix = stack.env["CHURN_TABLE_PREFIX"]
    stack.env["CHURN_ARCHIVE_S3_URI"] = f"s3://{prefix}archive/events/"
    stack.env["CHURN_CONTROL_TOPIC_ARN"] = stack.client("sns").create_topic(Name=f"{prefix}control")[
        "TopicArn"
    ]
    stack.config.write_text(
        E2E_CONFIG + f'[experiment]\ncontrol_fraction = 0.5\nsalt = "{EXPERIMENT.salt}"\n'
    )
    bootstrap(stack)  # creates the archive bucket too
    retention, control = stack.subscribe_alerts(), subscribe(stack, stack.env["CHURN_CONTROL_TOPIC_ARN"])
    events = spiking_customers(datetime.now(UTC), 40, "ab")
    send(stack, events)
    stack.start_worker("worker-ab")
    stack.wait_until(lambda: stack.queue_depth(stack.env["CHURN_SQS_QUEUE_URL"]) == 0, what="the events")

    customers = sorted({e["customer_id"] for e in events})
    arm = {c: assign_arm(c, "IB_CALL_SPIKE", EXPERIMENT) for c in customers}
    treated = sorted(c for c in customers if arm[c] == "treatment")
    assert 12 <= len(treated) <= 28  # about half
    got: dict[str, list[dict[str, Any]]] = {"retention": [], "control": []}

    def all_alerts_in() -> bool:
        for name, queue in (("retention", retention), ("control", control)):
            got[name] += stack.drain(queue, attributes=True)
        return len(got["retention"]) + len(got["control"]) >= len(customers)

    stack.wait_until(all_alerts_in, what="an alert per customer on the retention or control topic")
    bodies = {name: [json.loads(m["Body"]) for m in messages] for name, messages in got.items()}
    assert sorted(b["customer_id"] for b in bodies["retention"]) == treated
    assert sorted(b["customer_id"] for b in bodies["control"]) == sorted(set(customers) - set(treated))
    for name, messages in got.items():
        for message, body in zip(messages, bodies[name], strict=True):
            expected = "treatment" if name == "retention" else "control"
            assert body["arm"] == message["MessageAttributes"]["arm"]["StringValue"] == expected
            assert body["model_version"] and body["feature_hash"] and body["scoring"] == "model"

    ddb = stack.client("dynamodb")
    for cid in customers:  # every alert in the ledger, with its arm, sent, and its outcome record
        items = ddb.query(
            TableName=f"{prefix}alerts",
            KeyConditionExpression="customer_id = :c",
            ExpressionAttributeValues={":c": {"S": cid}},
        )["Items"]
        by_key = {item["alert_type"]["S"]: item for item in items}
        claim = by_key["IB_CALL_SPIKE"]
        assert claim["arm"]["S"] == arm[cid] and claim["status"]["S"] == "sent"
        [record] = [k for k in by_key if k.startswith("#alert#")]
        assert record.endswith(f"#IB_CALL_SPIKE#{arm[cid]}") and by_key[record]["model_version"]["S"]

    s3 = stack.client("s3")
    archived = [
        json.loads(line)
        for obj in list_event_objects(stack.env["CHURN_ARCHIVE_S3_URI"], client=s3)
        for line in gzip.decompress(obj.open_binary().read()).splitlines()
    ]
    assert {e["event_id"] for e in archived} == {e["event_id"] for e in events}  # every accepted event
    assert all(
        obj.key.split("/")[1].startswith("date=")
        for obj in list_event_objects(stack.env["CHURN_ARCHIVE_S3_URI"], client=s3)
    )


class ShadowProxy:
    """In front of the model server: the live endpoint's calls pass through; the shadow endpoint's
    hang (the connection is accepted, no answer comes) until `up` is set."""

    def __init__(self, model_url: str) -> None:
        self.model_url = model_url
        self.up = threading.Event()
        self.hanging = 0
        self.shadow_calls = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if f"/endpoints/{SHADOW}/" in self.path:
                    with proxy._lock:
                        proxy.shadow_calls += 1
                        proxy.hanging += 1
                    proxy.up.wait()
                    with proxy._lock:
                        proxy.hanging -= 1
                request = urllib.request.Request(
                    proxy.model_url + self.path,
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, answer = response.status, response.read()
                except OSError:
                    return  # the client gave up on us meanwhile
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.up.set()
        self.server.shutdown()


@pytest.fixture
def shadow_proxy(model_process: str) -> Iterator[ShadowProxy]:
    proxy = ShadowProxy(model_process)
    yield proxy
    proxy.close()


def counter(worker: Process, name: str, **labels: str) -> float:
    key = name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "")
    return float(metrics(worker)["counters"].get(key, 0))


def test_a_hanging_shadow_endpoint_costs_the_live_path_nothing(
    stack: Stack, shadow_proxy: ShadowProxy
) -> None:
    prefix = stack.env["CHURN_TABLE_PREFIX"]
    stack.env.update(
        CHURN_ARCHIVE_S3_URI=f"s3://{prefix}archive/events/",
        CHURN_SHADOW_ENDPOINT_NAME=SHADOW,
        CHURN_SHADOW_TIMEOUT_SECONDS="60",
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=shadow_proxy.url,
    )
    bootstrap(stack)
    retention = stack.subscribe_alerts()
    first = spiking_customers(datetime.now(UTC), 20, "down")
    send(stack, first)
    worker = stack.start_worker("worker-shadow")
    alerts: list[dict[str, Any]] = []

    def live_alerts_in() -> bool:
        alerts.extend(stack.drain(retention))
        return len(alerts) >= 20

    stack.wait_until(live_alerts_in, what="every live alert while the shadow hangs")
    # Every live alert is out and the records acknowledged while shadow calls still wait for an answer.
    assert shadow_proxy.hanging >= 1 and not shadow_proxy.up.is_set()
    stack.wait_until(
        lambda: stack.queue_depth(stack.env["CHURN_SQS_QUEUE_URL"]) == 0, what="acknowledgements"
    )
    assert sorted(a["customer_id"] for a in alerts) == sorted({e["customer_id"] for e in first})
    assert counter(worker, "shadow_batches", result="scored") == 0

    shadow_proxy.up.set()  # the shadow endpoint comes back: its scores and alerts flow to the shadow log
    second = spiking_customers(datetime.now(UTC), 5, "up")
    send(stack, second)
    stack.wait_until(lambda: counter(worker, "shadow_batches", result="scored") >= 1, what="a shadow scoring")
    stack.wait_until(
        lambda: stack.queue_depth(stack.env["CHURN_SQS_QUEUE_URL"]) == 0, what="the second batch"
    )
    assert counter(worker, "shadow_decisions", agreement="both", type="IB_CALL_SPIKE") >= 1
    assert worker.stop() == 0  # SIGTERM: the shadow log is flushed on the way out
    shadow_uri = f"s3://{prefix}archive/shadow/"
    records = [
        json.loads(line)
        for obj in list_event_objects(shadow_uri, client=stack.client("s3"))
        for line in gzip.decompress(obj.open_binary().read()).splitlines()
    ]
    assert records and all(r["shadow"] is True and r["type"] == "IB_CALL_SPIKE" for r in records)
    assert {r["customer_id"] for r in records} <= {e["customer_id"] for e in first + second}
    assert all(r["model_version"] and r["feature_hash"] and r["live_alerted"] for r in records)
