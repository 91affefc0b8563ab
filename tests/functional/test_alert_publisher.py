"""Publishing alerts to SNS (moto, verified through a raw-delivery SQS subscription), partial
batch failures (a scripted client: moto never fails an entry), and the in-memory twin."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import AlertPublishError
from worker.alerts.publisher import MAX_ATTEMPTS, MemoryAlertPublisher, SnsAlertPublisher, create_alert_topic
from worker.alerts.rules import Alert, Prediction, route_alerts

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
PUBLISHED_AT = datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)


def clock() -> datetime:
    return PUBLISHED_AT


def alerts(n: int, scored: bool = True) -> list[Alert]:
    """n customers, each with an IB_CALL_SPIKE (and, scored, a HIGH_CHURN_RISK): windows stamped."""
    prediction = Prediction.from_json(
        {
            "first_session_success_prob": 0.9,
            "predicted_session_velocity": 2.0,
            "churn_risk_14d": 0.68,
            "churn_risk_30d": 0.82,
            "supply_demand_scores": [0.0] * 20,
            "customer_health_score": 70,
            "feature_importance": [{"feature": "ib_call_count_14d", "importance": 0.45}],
            "model_version": "m-1",
        }
    )
    features = {"ib_call_count_14d": 2.0, "session_frequency_30d": 1.0, "has_first_session": 1.0}
    out: list[Alert] = []
    for i in range(n):
        tier = ["budget", "premium", None][i % 3]
        routed = route_alerts(f"c-{i}", features, prediction if scored else None, AlertsConfig(), T0, tier)
        out += [alert.with_window(T0) for alert in routed]
    return out


async def subscribed_queue(sns: Any, sqs: Any, topic_arn: str, name: str) -> str:
    fifo = topic_arn.endswith(".fifo")
    url: str = (await sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {}))[
        "QueueUrl"
    ]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    await sns.subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    return url


async def drain(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        response = await sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
        )
        batch = response.get("Messages", [])
        messages += batch
        if batch:
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
            await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        if len(messages) >= expected and not batch:
            break
    return messages


async def test_standard_topic_gets_bodies_and_filterable_attributes(
    sns_sqs: tuple[Any, Any], unique_prefix: str
) -> None:
    sns, sqs = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts")
    url = await subscribed_queue(sns, sqs, topic, f"{unique_prefix}tail")
    batch = alerts(6)  # 12 alerts: two PublishBatch calls
    published = await SnsAlertPublisher(sns, topic, clock=clock).publish(batch)

    assert [a.alert_id for a in published] == [a.alert_id for a in batch]
    assert all(a.created_at == PUBLISHED_AT for a in published)
    messages = await drain(sqs, url, len(batch))
    assert len(messages) == 12
    by_id = {json.loads(m["Body"])["alert_id"]: m for m in messages}
    for alert in published:
        message = by_id[alert.alert_id]
        assert json.loads(message["Body"]) == alert.body()
        assert json.loads(message["Body"])["created_at"] == "2026-11-27T12:00:05Z"
        attributes = {k: (v["DataType"], v["StringValue"]) for k, v in message["MessageAttributes"].items()}
        assert attributes == {
            "alert_type": ("String", alert.alert_type.value),
            "severity": ("String", alert.severity.value),
            "customer_tier": ("String", alert.customer_tier or "unknown"),
            "arm": ("String", "treatment"),
        }
        assert "MessageGroupId" not in message.get("Attributes", {})


async def test_fifo_topic_groups_by_customer_and_deduplicates_by_alert_id(
    sns_sqs: tuple[Any, Any], unique_prefix: str
) -> None:
    sns, sqs = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts.fifo")
    attributes = (await sns.get_topic_attributes(TopicArn=topic))["Attributes"]
    assert attributes["FifoTopic"] == "true"
    url = await subscribed_queue(sns, sqs, topic, f"{unique_prefix}tail.fifo")
    batch = alerts(2)
    published = await SnsAlertPublisher(sns, topic, clock=clock).publish(batch)
    messages = await drain(sqs, url, len(batch))
    assert len(messages) == len(published) == 4
    for message in messages:
        body = json.loads(message["Body"])
        assert message["Attributes"]["MessageGroupId"] == body["customer_id"]
        assert message["Attributes"]["MessageDeduplicationId"] == body["alert_id"]


async def test_create_alert_topic_is_idempotent(sns_sqs: tuple[Any, Any], unique_prefix: str) -> None:
    sns, _ = sns_sqs
    for name in (f"{unique_prefix}alerts", f"{unique_prefix}alerts.fifo"):
        assert await create_alert_topic(sns, name) == await create_alert_topic(sns, name)


class ScriptedSns:
    """PublishBatch that fails the entries a script says, per call; records every request."""

    def __init__(self, fail: list[dict[int, bool]], error: ClientError | None = None) -> None:
        self.fail = fail  # per call: {entry position in the *first* request: sender fault?}
        self.error = error
        self.calls: list[list[dict[str, Any]]] = []
        self.ids: dict[str, int] = {}

    async def publish_batch(
        self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        if not self.calls:
            self.ids = {e["Id"]: i for i, e in enumerate(PublishBatchRequestEntries)}
        failing = self.fail[len(self.calls)] if len(self.calls) < len(self.fail) else {}
        self.calls.append(PublishBatchRequestEntries)
        ok, failed = [], []
        for entry in PublishBatchRequestEntries:
            position = self.ids.get(entry["Id"], -1)
            if position in failing:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "Code": "InternalError",
                        "Message": "try again",
                        "SenderFault": failing[position],
                    }
                )
            else:
                ok.append({"Id": entry["Id"], "MessageId": f"m-{entry['Id']}"})
        return {"Successful": ok, "Failed": failed}


async def test_failed_entries_are_retried_until_they_go_out() -> None:
    sns = ScriptedSns(fail=[{1: False, 3: False}, {3: False}])
    batch = alerts(2)
    published = await SnsAlertPublisher(sns, "arn:aws:sns:us-east-1:1:t", backoff_base=0).publish(batch)
    assert [a.alert_id for a in published] == [a.alert_id for a in batch]  # all, in order
    assert [len(call) for call in sns.calls] == [4, 2, 1]


async def test_entries_that_keep_failing_raise_naming_the_alerts() -> None:
    sns = ScriptedSns(fail=[{0: False}] * MAX_ATTEMPTS)
    batch = alerts(2)
    with pytest.raises(AlertPublishError, match=batch[0].alert_id) as caught:
        await SnsAlertPublisher(sns, "arn:aws:sns:us-east-1:1:t", backoff_base=0).publish(batch)
    assert len(sns.calls) == MAX_ATTEMPTS
    assert [a.alert_id for a in caught.value.failed] == [batch[0].alert_id]
    assert [a.alert_id for a in caught.value.published] == [a.alert_id for a in batch[1:]]
    assert "InternalError" in str(caught.value)


async def test_sender_faults_are_not_retried() -> None:
    sns = ScriptedSns(fail=[{0: True}])
    batch = alerts(1)
    with pytest.raises(AlertPublishError) as caught:
        await SnsAlertPublisher(sns, "arn:aws:sns:us-east-1:1:t", backoff_base=0).publish(batch)
    assert len(sns.calls) == 1
    assert [a.alert_id for a in caught.value.failed] == [batch[0].alert_id]


async def test_a_refused_request_fails_the_whole_chunk() -> None:
    error = ClientError({"Error": {"Code": "NotFound", "Message": "Topic does not exist"}}, "PublishBatch")
    with pytest.raises(AlertPublishError, match="NotFound") as caught:
        await SnsAlertPublisher(ScriptedSns([], error), "arn:aws:sns:us-east-1:1:t").publish(alerts(1))
    assert caught.value.published == [] and len(caught.value.failed) == 2


async def test_memory_twin_records_bodies_and_attributes() -> None:
    publisher = MemoryAlertPublisher(clock=clock)
    batch = alerts(1, scored=False)
    published = await publisher.publish(batch)
    assert publisher.bodies == [a.body() for a in published]
    assert publisher.bodies[0]["scoring"] == "rules_only"
    assert publisher.messages[0].attributes["customer_tier"] == "budget"


async def test_memory_twin_fifo_drops_a_republished_alert() -> None:
    publisher = MemoryAlertPublisher(fifo=True, clock=clock)
    batch = alerts(1)
    await publisher.publish(batch)
    await publisher.publish(batch)  # a re-publish after a crash: same ids
    assert len(publisher.messages) == 2
    later = [a.with_window(T0 + timedelta(days=7)) for a in batch]
    await publisher.publish(later)
    assert len(publisher.messages) == 4


class DropsConnections:
    """A real client on moto whose publish_batch loses its connection for chosen chunks (after
    sending, or before: the publisher cannot tell), as a network fault would."""

    def __init__(self, client: Any, failing_chunks: set[int], times: int) -> None:
        self._client = client
        self._failing = failing_chunks
        self._times = times
        self._calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def publish_batch(self, **kwargs: Any) -> Any:
        from botocore.exceptions import EndpointConnectionError

        first = json.loads(kwargs["PublishBatchRequestEntries"][0]["Message"])["customer_id"]
        chunk = int(first.split("-")[1]) // 5  # 10 alerts (5 customers) per chunk
        self._calls[first] = self._calls.get(first, 0) + 1
        if chunk in self._failing and self._calls[first] <= self._times:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return await self._client.publish_batch(**kwargs)


async def test_a_publish_with_no_answer_is_retried_and_otherwise_reports_exactly_what_went_out(
    sns_sqs: tuple[Any, Any], unique_prefix: str
) -> None:
    sns, sqs = sns_sqs
    topic = await create_alert_topic(sns, f"{unique_prefix}alerts")
    url = await subscribed_queue(sns, sqs, topic, f"{unique_prefix}drop")
    batch = alerts(15)  # 30 alerts, 3 chunks
    flaky = SnsAlertPublisher(DropsConnections(sns, {1}, times=1), topic, clock=clock, backoff_base=0.001)  # type: ignore[arg-type]
    assert len(await flaky.publish(batch)) == 30  # one dropped connection: sent again, all out
    down = SnsAlertPublisher(
        DropsConnections(sns, {2}, times=MAX_ATTEMPTS), topic, clock=clock, backoff_base=0.001
    )  # type: ignore[arg-type]
    with pytest.raises(AlertPublishError) as caught:
        await down.publish(batch)
    assert len(caught.value.published) == 20 and len(caught.value.failed) == 10
    assert {a.customer_id for a in caught.value.failed} == {f"c-{i}" for i in range(10, 15)}
    assert "EndpointConnectionError" in str(caught.value)
    messages = await drain(sqs, url, 50)
    assert len(messages) == 50  # 30 + the 20 the second call did publish
