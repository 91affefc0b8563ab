"""The shadow model beside the live pipeline: scored in the background from the same features, its
alerts through the same rules to the shadow log, never the retention topic or the ledger; a shadow
that hangs or fails costs the live path nothing (its alerts are out while the shadow still
waits). The shadow log's adapters on moto: S3 under `shadow/`, or an SNS topic."""

from __future__ import annotations

import asyncio
import gzip
import json
from datetime import timedelta
from typing import Any

import boto3
import numpy as np
import pytest
from aiobotocore.session import get_session

from cli.worker import main
from features.registry import FEATURE_HASH
from features.s3events import list_event_objects
from features.store import MemoryFeatureStore
from tests.fakes import NOW, FakeScorer, ListDlq, event
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig, assign_arm
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.exceptions import ScoringUnavailableError
from worker.pipeline import Pipeline
from worker.shadow import MAX_IN_FLIGHT, ShadowBatch, ShadowScoring
from worker.shadow_log import MemoryShadowLog, S3ShadowLog, SnsShadowLog, shadow_uri

EXPERIMENT = ExperimentConfig(control_fraction=0.5, salt="shadow-test")


class HangingScorer:
    """A shadow endpoint that takes the request and never answers."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        await self.release.wait()
        raise ScoringUnavailableError("shadow: connection reset")


class DownScorer:
    def __init__(self) -> None:
        self.calls = 0

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        raise ScoringUnavailableError("endpoint shadow: 503 ServiceUnavailable")


def batches() -> list[list[Any]]:
    """Customers c-0..c-5 with two inbound calls each (IB_CALL_SPIKE from either model), one batch each."""
    return [
        [event(f"c-{i}", "ib_call", days, 10 * i + n, sentiment="negative") for n, days in enumerate((3, 1))]
        for i in range(6)
    ]


def pipeline(
    shadow: ShadowScoring, live_risk: float = 0.1
) -> tuple[Pipeline, MemoryAlertPublisher, MemoryAlertLedger]:
    publisher, ledger = MemoryAlertPublisher(), MemoryAlertLedger()
    flow = Pipeline(
        store=MemoryFeatureStore(),
        scorer=FakeScorer(churn_30d=live_risk),
        ledger=ledger,
        publisher=publisher,
        dlq=ListDlq(),
        alerts=AlertsConfig(),
        retention=timedelta(days=35),
        clock=lambda: NOW,
        experiment=EXPERIMENT,
        shadow=shadow,
    )
    return flow, publisher, ledger


def shadow_scoring(scorer: Any, log: Any, **kwargs: Any) -> ShadowScoring:
    return ShadowScoring(
        scorer,
        log,
        AlertsConfig(),
        EXPERIMENT,
        timeout=kwargs.pop("timeout", 30.0),
        clock=lambda: NOW,
        **kwargs,
    )


async def test_a_hanging_shadow_never_holds_the_live_path_or_its_alerts() -> None:
    hanging = HangingScorer()
    shadow = shadow_scoring(hanging, MemoryShadowLog())
    flow, publisher, _ = pipeline(shadow)
    shadow.metrics = flow.metrics
    for batch in batches():
        settlement = await flow.process(batch)
        assert len(settlement.done) == 2 and not settlement.failed
    # Every live alert went out while the shadow calls were still waiting for an answer.
    assert sorted(m.body["customer_id"] for m in publisher.messages) == sorted(
        c for c in (f"c-{i}" for i in range(6)) if assign_arm(c, "IB_CALL_SPIKE", EXPERIMENT) == "treatment"
    )
    assert shadow.in_flight == MAX_IN_FLIGHT and hanging.calls == MAX_IN_FLIGHT
    assert flow.metrics.counters[("shadow_batches", (("result", "dropped"),))] == 6 - MAX_IN_FLIGHT
    await shadow.close(grace=0.05)  # shutdown: the hung calls are cancelled
    assert shadow.in_flight == 0


async def test_a_shadow_that_times_out_or_fails_opens_its_own_circuit() -> None:
    hanging = HangingScorer()
    shadow = shadow_scoring(hanging, MemoryShadowLog(), timeout=0.01)
    flow, publisher, _ = pipeline(shadow)
    shadow.metrics = flow.metrics
    for batch in batches()[:3]:
        await flow.process(batch)
        await asyncio.sleep(0.05)  # the shadow's timeout passes
    assert flow.metrics.counters[("shadow_batches", (("result", "timeout"),))] == 3
    assert shadow.breaker.is_open  # three failures in a row: no more calls for a while
    await flow.process(batches()[3])
    assert (
        hanging.calls == 3 and flow.metrics.counters[("shadow_batches", (("result", "circuit_open"),))] == 1
    )

    down = DownScorer()
    shadow = shadow_scoring(down, MemoryShadowLog())
    flow, publisher, _ = pipeline(shadow)
    for batch in batches():
        await flow.process(batch)
        await asyncio.sleep(0)
    await shadow.close(grace=1)
    assert down.calls == 3 and shadow.breaker.is_open
    assert len(publisher.messages) == sum(
        assign_arm(f"c-{i}", "IB_CALL_SPIKE", EXPERIMENT) == "treatment" for i in range(6)
    )


async def test_shadow_alerts_go_through_the_same_rules_to_the_shadow_log_only() -> None:
    candidate = FakeScorer(churn_30d=0.9)  # the candidate also sees HIGH_CHURN_RISK everywhere
    log = MemoryShadowLog()
    shadow = shadow_scoring(candidate, log)
    flow, publisher, ledger = pipeline(shadow)
    shadow.metrics = flow.metrics
    for batch in batches() + batches():  # and everything again: the shadow's cooldowns hold too
        await flow.process(batch)
    await shadow.close(grace=5)
    live_alerts = {(m.body["customer_id"], m.body["type"]) for m in publisher.messages}
    assert {kind for _, kind in live_alerts} == {"IB_CALL_SPIKE"}  # the live model: no churn risk
    assert {kind for (_, kind) in ledger.records} == {"IB_CALL_SPIKE"}  # the shadow claims nothing
    assert sorted((r["customer_id"], r["type"]) for r in log.records) == sorted(
        (f"c-{i}", kind) for i in range(6) for kind in ("IB_CALL_SPIKE", "HIGH_CHURN_RISK")
    )
    for record in log.records:
        assert record["shadow"] is True and record["model_version"] == "test-model"
        assert record["feature_hash"] == FEATURE_HASH and record["live_model_version"] == "test-model"
        assert record["live_alerted"] == (record["type"] == "IB_CALL_SPIKE")
        assert record["arm"] == assign_arm(record["customer_id"], record["type"], EXPERIMENT)
    counters = flow.metrics.counters
    assert counters[("shadow_decisions", (("agreement", "both"), ("type", "IB_CALL_SPIKE")))] == 12
    assert counters[("shadow_decisions", (("agreement", "shadow_only"), ("type", "HIGH_CHURN_RISK")))] == 12
    assert flow.metrics.quantiles("shadow_latency_ms")["count"] == 12


async def test_the_shadow_log_in_s3_and_on_a_topic(aws_endpoint: str, unique_prefix: str) -> None:
    bucket = f"{unique_prefix}archive"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name=f"{unique_prefix}shadow")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"{unique_prefix}shadow-sub")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    records = []
    for customer in ("c-1", "c-2"):
        log = MemoryShadowLog()
        scoring = shadow_scoring(FakeScorer(churn_30d=0.9), log)
        scoring.submit(
            ShadowBatch(np.zeros((1, 150)), [customer], ["premium"], NOW, "event", [set()], "live-1")
        )
        await scoring.close(grace=5)
        records += log.records
    assert len(records) == 2
    session = get_session()
    async with (
        session.create_client("s3", region_name="us-east-1") as s3_client,
        session.create_client("sns", region_name="us-east-1") as sns_client,
    ):
        s3_log = S3ShadowLog(s3_client, shadow_uri(f"s3://{bucket}/events/"), "worker-1")
        await s3_log.write(records)
        assert s3_log.objects_written == 0  # buffered
        await s3_log.flush()
        await SnsShadowLog(sns_client, topic).write(records)
    [written] = list_event_objects(f"s3://{bucket}/shadow/", client=s3)
    assert written.key.startswith("shadow/date=2026-11-27/worker-1-")
    assert [
        json.loads(line)["customer_id"] for line in gzip.decompress(written.open_binary().read()).splitlines()
    ] == ["c-1", "c-2"]
    messages = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
    )["Messages"]
    assert sorted(json.loads(m["Body"])["customer_id"] for m in messages) == ["c-1", "c-2"]
    assert {m["MessageAttributes"]["shadow"]["StringValue"] for m in messages} == {"true"}


def _body(customer: str, kind: str, day: int, shadow: bool = False, arm: str = "treatment") -> dict[str, Any]:
    body = {
        "alert_id": f"{customer}-{kind}-{day}",
        "type": kind,
        "customer_id": customer,
        "severity": "HIGH",
        "as_of": f"2026-10-{day:02d}T12:00:00Z",
        "arm": arm,
        "model_version": "shadow-2" if shadow else "live-1",
    }
    return {**body, "shadow": True, "live_model_version": "live-1"} if shadow else body


def test_shadow_report_compares_both_models_with_outcomes(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    live = [
        _body("c-1", "HIGH_CHURN_RISK", 2),
        _body("c-2", "HIGH_CHURN_RISK", 2),
        _body("c-3", "HIGH_CHURN_RISK", 3),
        _body("c-9", "HIGH_CHURN_RISK", 1),
    ]  # c-9: before the shadow started, left out
    shadow = [
        _body("c-1", "HIGH_CHURN_RISK", 2, True),
        _body("c-4", "HIGH_CHURN_RISK", 3, True),
        _body("c-1", "HIGH_CHURN_RISK", 5, True),
        _body("c-5", "IB_CALL_SPIKE", 4, True, arm="control"),
    ]
    outcomes = [
        ("c-1", "2026-10-20T00:00:00Z"),
        ("c-4", "2026-10-10T00:00:00Z"),
        ("c-6", "2026-10-15T00:00:00Z"),
        ("c-2", None),
        ("c-3", None),
    ]
    for name, rows in (("live.jsonl", live), ("shadow.jsonl", shadow)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "o.jsonl").write_text(
        "".join(json.dumps({"customer_id": c, "churned_at": t}) + "\n" for c, t in outcomes)
    )
    args = [
        "shadow",
        "report",
        "--outcomes",
        str(tmp_path / "o.jsonl"),
        "--shadow",
        str(tmp_path / "shadow.jsonl"),
        "--live",
        str(tmp_path / "live.jsonl"),
        "--end",
        "2026-12-01T00:00:00Z",
    ]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    risk = report["by_type"]["HIGH_CHURN_RISK"]
    # live: c-1 (churned), c-2, c-3 (stayed); shadow: c-1, c-4 (both churned); churners in the period: c-1, c-4, c-6
    assert risk["live"] == {
        "customers_alerted": 3,
        "customers_confirmed": 1,
        "precision": 0.3333,
        "recall": 0.3333,
    }
    assert risk["shadow"] == {
        "customers_alerted": 2,
        "customers_confirmed": 2,
        "precision": 1.0,
        "recall": 0.6667,
    }
    assert risk["agreement"] == 0.25  # c-1 of c-1..c-4
    assert report["model_versions"] == {"live": ["live-1"], "shadow": ["shadow-2"]}
    assert main([*args, "--arm", "control", "--json"]) == 0
    control = json.loads(capsys.readouterr().out)["by_type"]
    assert (
        set(control) == {"IB_CALL_SPIKE", "ALL"}
        and control["IB_CALL_SPIKE"]["live"]["customers_alerted"] == 0
    )
    assert main(args) == 0
    assert "shadow-2" in capsys.readouterr().out
    assert (
        main([*args[:-6], "--live", str(tmp_path / "live.jsonl")]) == 2
    )  # no shadow log, no archive configured
    assert "--shadow" in capsys.readouterr().err
