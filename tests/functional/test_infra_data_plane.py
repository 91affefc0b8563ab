"""infra/data-plane.yaml deployed into moto's CloudFormation, and the worker run on its outputs alone.

No `churn-worker bootstrap`: every table, queue, stream and topic the worker touches comes from the
template, and every setting from the stack's outputs (infra/stack_env.py), so a template that names
a table differently from the worker, forgets the lease table or the redrive policy, fails here.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.stack_env import settings_env
from model.server import LocalEndpoint
from worker.runtime import run_worker
from worker.settings import Settings

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "data-plane.yaml"


def deploy(prefix: str, **parameters: str) -> dict[str, str]:
    """Create the stack and return its outputs as {OutputKey: OutputValue}."""
    cfn = boto3.client("cloudformation", region_name="us-east-1")
    name = f"{prefix}data".replace("_", "-")
    params = [{"ParameterKey": "TablePrefix", "ParameterValue": prefix}] + [
        {"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()
    ]
    cfn.create_stack(StackName=name, TemplateBody=TEMPLATE.read_text(), Parameters=params)
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def spike_events(customer: str, now: datetime) -> list[dict[str, Any]]:
    """Two inbound calls within 14 days: IB_CALL_SPIKE, which needs no model score."""
    rows = [
        ("customer_signed_up", 9, {"tier": "standard"}),
        ("ib_call", 3, {"sentiment": "negative"}),
        ("ib_call", 1, {"sentiment": "neutral"}),
    ]
    return [
        {
            "event_id": f"{customer}-{i}",
            "customer_id": customer,
            "type": kind,
            "occurred_at": iso(now - timedelta(days=days_ago)),
            **extra,
        }
        for i, (kind, days_ago, extra) in enumerate(rows)
    ]


def subscribe(topic_arn: str) -> str:
    sqs, sns = boto3.client("sqs", region_name="us-east-1"), boto3.client("sns", region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"sub-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return str(url)


async def receive(queue_url: str, want: int, within: float = 60) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name="us-east-1")
    got: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + within
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        response = await asyncio.to_thread(
            sqs.receive_message,
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
        )
        for message in response.get("Messages", []):
            got.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return got


def worker_env(monkeypatch: pytest.MonkeyPatch, outputs: dict[str, str], endpoint: LocalEndpoint) -> Settings:
    """Settings from the stack's outputs only, plus test-speed knobs that have nothing to do with where
    the resources are."""
    for name, value in settings_env({"OutputKey": k, "OutputValue": v} for k, v in outputs.items()).items():
        monkeypatch.setenv(name, value)
    for name, value in {
        "CHURN_HEALTH_PORT": "0",
        "CHURN_SQS_WAIT_SECONDS": "1",
        "CHURN_SQS_POLLERS": "1",
        "CHURN_KINESIS_POLL_SECONDS": "0.2",
        "CHURN_KINESIS_SHARDS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", endpoint.url)
    return Settings()


async def run_until_alerted(
    settings: Settings, send: Any, topic_arn: str, want_dlq: str
) -> tuple[list[Any], list[Any]]:
    alerts_queue = subscribe(topic_arn)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        await asyncio.to_thread(send)
        alerts = await receive(alerts_queue, want=1)
        dead = await receive(want_dlq, want=1)
        await asyncio.sleep(0.5)  # one more EMF line (when on) after the last record was counted
    finally:
        stop.set()
        assert await asyncio.wait_for(worker, 60) == 0
    return alerts, dead


async def test_sqs_stack_outputs_alone_run_the_worker(
    aws_endpoint: str,
    unique_prefix: str,
    tiny_endpoint: LocalEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outputs = deploy(unique_prefix)
    monkeypatch.setenv("CHURN_EMF_INTERVAL_SECONDS", "0.2")  # as the task definition sets 60
    assert {"QueueUrl", "DeadLetterQueueUrl", "AlertsTopicArn", "TablePrefix"} <= set(outputs)
    assert "StreamName" not in outputs
    settings = worker_env(monkeypatch, outputs, tiny_endpoint)
    assert settings.source == "sqs" and settings.table_prefix == unique_prefix

    sqs = boto3.client("sqs", region_name="us-east-1")
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["RedrivePolicy"])[
            "Attributes"
        ]["RedrivePolicy"]
    )
    assert redrive["deadLetterTargetArn"].endswith(f":{unique_prefix}events-dlq")

    def send() -> None:
        bodies = [json.dumps(e) for e in spike_events("c-spike", datetime.now(UTC))] + ["not json at all"]
        sqs.send_message_batch(
            QueueUrl=outputs["QueueUrl"],
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)],
        )

    alerts, dead = await run_until_alerted(
        settings, send, outputs["AlertsTopicArn"], outputs["DeadLetterQueueUrl"]
    )
    spikes = [json.loads(m["Body"]) for m in alerts if json.loads(m["Body"])["type"] == "IB_CALL_SPIKE"]
    assert [a["customer_id"] for a in spikes] == ["c-spike"]
    assert [m["MessageAttributes"]["error_code"]["StringValue"] for m in dead] == ["not_json"]
    # The CloudWatch metrics infra/alarms.yaml alarms on, as EMF lines on stdout (worker/emf.py).
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert emf and all(line["TablePrefix"] == unique_prefix for line in emf)
    assert any(line["WorkerReady"] == 1.0 for line in emf)
    assert sum(line["EventsIn"] for line in emf) >= 4 and sum(line["EventsQuarantined"] for line in emf) >= 1


async def test_kinesis_stack_outputs_alone_run_the_worker(
    aws_endpoint: str, unique_prefix: str, tiny_endpoint: LocalEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = deploy(unique_prefix, Source="kinesis", KinesisShards="1")
    assert {"StreamName", "DeadLetterQueueUrl", "AlertsTopicArn", "TablePrefix"} <= set(outputs)
    assert "QueueUrl" not in outputs
    settings = worker_env(monkeypatch, outputs, tiny_endpoint)
    assert settings.source == "kinesis"
    kinesis = boto3.client("kinesis", region_name="us-east-1")

    def send() -> None:
        events = spike_events("c-stream", datetime.now(UTC))
        records = [{"Data": json.dumps(e).encode(), "PartitionKey": e["customer_id"]} for e in events]
        records.append({"Data": b"\xff not json", "PartitionKey": "c-bad"})
        kinesis.put_records(StreamName=outputs["StreamName"], Records=records)

    alerts, dead = await run_until_alerted(
        settings, send, outputs["AlertsTopicArn"], outputs["DeadLetterQueueUrl"]
    )
    spikes = [json.loads(m["Body"]) for m in alerts if json.loads(m["Body"])["type"] == "IB_CALL_SPIKE"]
    assert [a["customer_id"] for a in spikes] == ["c-stream"]
    assert [m["MessageAttributes"]["error_code"]["StringValue"] for m in dead] == ["not_json"]
    leases = boto3.client("dynamodb", region_name="us-east-1").scan(TableName=f"{unique_prefix}leases")[
        "Items"
    ]
    assert leases, "the worker checkpoints into the template's lease table"


def test_fifo_topic_variant(aws_endpoint: str, unique_prefix: str) -> None:
    outputs = deploy(unique_prefix, TopicType="fifo")
    assert outputs["AlertsTopicArn"].endswith(f":{unique_prefix}alerts.fifo")
    attributes = boto3.client("sns", region_name="us-east-1").get_topic_attributes(
        TopicArn=outputs["AlertsTopicArn"]
    )["Attributes"]
    assert attributes.get("FifoTopic") == "true"
