"""`churn-worker alerts tail` against moto: prints what is published, honours its filters, and
leaves no subscription or queue behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime
from typing import Any

import pytest

from cli.commands.alerts_tail import run_alerts_tail
from tests.fakes import wait_until
from worker.alerts.config import AlertsConfig
from worker.alerts.publisher import SnsAlertPublisher, create_alert_topic
from worker.alerts.rules import Alert, Prediction, route_alerts
from worker.exceptions import UsageError
from worker.settings import Settings

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)


def two_alerts(customer: str) -> list[Alert]:
    """An IB_CALL_SPIKE (CRITICAL) and a HIGH_CHURN_RISK (HIGH) for one customer."""
    prediction = Prediction.from_json(
        {
            "first_session_success_prob": 0.9,
            "predicted_session_velocity": 2.0,
            "churn_risk_14d": 0.68,
            "churn_risk_30d": 0.82,
            "supply_demand_scores": [0.0] * 20,
            "customer_health_score": 70,
        }
    )
    features = {"ib_call_count_14d": 2.0, "session_frequency_30d": 1.0, "has_first_session": 1.0}
    return route_alerts(customer, features, prediction, AlertsConfig(), T0, "premium")


async def tail_while_publishing(
    sns_sqs: tuple[Any, Any],
    topic: str,
    alerts: list[Alert],
    capsys: pytest.CaptureFixture[str],
    lines: int,
    alert_type: str | None = None,
    severity: str | None = None,
    as_json: bool = False,
) -> tuple[int, list[str]]:
    """Run the tail, publish `alerts`, and stop it as `docker stop` would (SIGTERM) once it printed
    `lines` lines and its queue is empty: everything the topic delivered to it was read and printed.
    Its exit code and what it printed."""
    sns, sqs = sns_sqs
    task = asyncio.create_task(
        run_alerts_tail(Settings(alerts_topic_arn=topic), alert_type, severity, as_json, 120)
    )
    subscriptions: list[dict[str, Any]] = []

    async def subscribed() -> bool:
        subscriptions[:] = (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"]
        return bool(subscriptions) or task.done()

    await wait_until(subscribed, what="the tail's subscription")
    if task.done():
        return await task, []
    queue = (await sqs.get_queue_url(QueueName=subscriptions[0]["Endpoint"].rsplit(":", 1)[1]))["QueueUrl"]
    await SnsAlertPublisher(sns, topic).publish(alerts)
    printed: list[str] = []

    async def read_and_printed() -> bool:
        printed.extend(capsys.readouterr().out.splitlines())
        if len(printed) < lines or task.done():
            return task.done()
        attributes = await sqs.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return sum(int(n) for n in attributes["Attributes"].values()) == 0

    await wait_until(read_and_printed, within=30, what=f"{lines} alert lines from the tail")
    if not task.done():
        # The tail handles SIGTERM itself (the loop's handler): without one it would end this process.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGTERM)
    code = await asyncio.wait_for(task, 30)
    printed.extend(capsys.readouterr().out.splitlines())
    return code, printed


async def test_tail_prints_alerts_and_cleans_up(
    sns_sqs: tuple[Any, Any], unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sns, sqs = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts")
    alerts = two_alerts(f"{unique_prefix}c-1")
    code, out = await tail_while_publishing(sns_sqs, topic, alerts, capsys, lines=2)
    assert code == 0
    assert len(out) == 2
    assert sorted(line.split()[1:3] for line in out) == [
        ["CRITICAL", "IB_CALL_SPIKE"],
        ["HIGH", "HIGH_CHURN_RISK"],
    ]
    assert any(f"{unique_prefix}c-1  Customer has made 2 calls in 14 days" in line for line in out)
    assert (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"] == []
    queues = (await sqs.list_queues(QueueNamePrefix="churn-alerts-tail-")).get("QueueUrls", [])
    assert queues == []


async def test_tail_filters_by_type_and_prints_json(
    sns_sqs: tuple[Any, Any], unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sns, _ = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts")
    alerts = two_alerts(f"{unique_prefix}c-2")
    code, lines = await tail_while_publishing(
        sns_sqs, topic, alerts, capsys, lines=1, alert_type="high_churn_risk", as_json=True
    )
    assert code == 0
    bodies = [json.loads(line) for line in lines]
    assert [b["type"] for b in bodies] == ["HIGH_CHURN_RISK"]
    assert bodies[0]["alert_id"] == alerts[1].alert_id
    assert (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"] == []


async def test_tail_filters_by_severity_on_a_fifo_topic(
    sns_sqs: tuple[Any, Any], unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sns, _ = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts.fifo")
    alerts = two_alerts(f"{unique_prefix}c-3")
    code, out = await tail_while_publishing(sns_sqs, topic, alerts, capsys, lines=1, severity="CRITICAL")
    assert code == 0
    assert [line.split()[2] for line in out] == ["IB_CALL_SPIKE"]
    assert (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"] == []


async def test_cancelling_the_tail_still_cleans_up(sns_sqs: tuple[Any, Any], unique_prefix: str) -> None:
    sns, _ = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts")
    task = asyncio.create_task(run_alerts_tail(Settings(alerts_topic_arn=topic), None, None, False, None))

    async def subscribed() -> bool:
        return bool((await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"])

    await wait_until(subscribed, what="the tail's subscription")
    task.cancel()  # what Ctrl-C does to asyncio.run's main task
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await sns.list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"] == []


async def test_missing_topic_setting_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="CHURN_ALERTS_TOPIC_ARN"):
        await run_alerts_tail(Settings(), None, None, False, 1)


async def test_unknown_type_or_severity_is_a_usage_error() -> None:
    settings = Settings(alerts_topic_arn="arn:aws:sns:us-east-1:123456789012:x")
    with pytest.raises(UsageError, match="--type 'NOPE'"):
        await run_alerts_tail(settings, "NOPE", None, False, 1)
    with pytest.raises(UsageError, match="--severity 'LOW'"):
        await run_alerts_tail(settings, None, "LOW", False, 1)


async def test_a_topic_that_does_not_exist_is_a_usage_error(sns_sqs: tuple[Any, Any]) -> None:
    settings = Settings(alerts_topic_arn="arn:aws:sns:us-east-1:123456789012:no-such-topic")
    with pytest.raises(UsageError, match="does not exist"):
        await run_alerts_tail(settings, None, None, False, 1)
