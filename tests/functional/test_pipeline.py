"""The pipeline with in-memory twins of every port: what a batch settles to, and which alerts go
out, under duplicates, an endpoint outage, bad events and a dead DLQ."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from features.store import MemoryFeatureStore
from tests.fakes import NOW, FakeScorer, ListDlq, event, record
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.pipeline import Pipeline
from worker.ports import Record


def spike_batch() -> list[Record]:
    return [
        event("c-1", "customer_signed_up", 10, 0, tier="premium"),
        event("c-1", "ib_call", 3, 1, sentiment="negative"),
        event("c-1", "ib_call", 1, 2, sentiment="neutral"),
    ]


@pytest.fixture
def parts() -> dict[str, Any]:
    return {
        "store": MemoryFeatureStore(),
        "scorer": FakeScorer(),
        "ledger": MemoryAlertLedger(),
        "publisher": MemoryAlertPublisher(),
        "dlq": ListDlq(),
    }


def pipeline(parts: dict[str, Any], config: AlertsConfig | None = None) -> Pipeline:
    return Pipeline(**parts, alerts=config or AlertsConfig(), retention=timedelta(days=35), clock=lambda: NOW)


async def test_two_calls_in_14_days_give_one_alert_however_often_the_batch_comes(
    parts: dict[str, Any],
) -> None:
    flow = pipeline(parts)
    for _ in range(3):
        settlement = await flow.process(spike_batch())
        assert len(settlement.done) == 3 and not settlement.failed
    bodies = parts["publisher"].bodies
    assert [(b["type"], b["customer_id"], b["severity"]) for b in bodies] == [
        ("IB_CALL_SPIKE", "c-1", "CRITICAL")
    ]
    assert bodies[0]["message"] == "Customer has made 2 calls in 14 days"
    assert flow.metrics.total("events_duplicate") == 6
    assert (
        parts["scorer"].calls == 3
    )  # redeliveries are still scored: a crash after the store write loses nothing


async def test_endpoint_down_sends_rule_only_alerts_and_acknowledges_nothing(parts: dict[str, Any]) -> None:
    parts["scorer"].down = True
    flow = pipeline(parts)
    settlement = await flow.process(spike_batch())
    assert not settlement.done and len(settlement.failed) == 3
    [body] = parts["publisher"].bodies
    assert body["type"] == "IB_CALL_SPIKE" and body["scoring"] == "rules_only"
    assert body["churn_risk"] is None
    parts["scorer"].down = False
    settlement = await flow.process(spike_batch())  # the redelivery, once the endpoint is back
    assert len(settlement.done) == 3
    assert len(parts["publisher"].bodies) == 1  # the spike is in its cooldown: not sent again


async def test_model_alerts_use_the_endpoint_scores(parts: dict[str, Any]) -> None:
    parts["scorer"].churn_30d = 0.9
    await pipeline(parts).process([event("c-2", "login", 1, 0)])
    [body] = parts["publisher"].bodies
    assert body["type"] == "HIGH_CHURN_RISK" and body["churn_probability"] == 0.9
    assert body["top_risk_factors"] == [{"feature": "ib_call_count_14d", "importance": 0.5}]


async def test_bad_events_are_quarantined_and_the_rest_goes_on(parts: dict[str, Any]) -> None:
    batch = [
        record("not json", 0),
        record({"event_id": "x", "type": "login"}, 1),
        event("c-3", "login", 1, 2),
        event("c-3", "login", 40, 3),
        event("c-3", "login", -1, 4),
    ]
    settlement = await pipeline(parts).process(batch)
    assert [r.handle for r in settlement.done] == ["h2"]
    assert sorted(code for _, code in parts["dlq"].items) == [
        "in_future",
        "missing_field",
        "not_json",
        "too_old",
    ]
    assert len(settlement.quarantined) == 4


async def test_a_bad_event_is_kept_when_the_dlq_is_down(parts: dict[str, Any]) -> None:
    parts["dlq"].down = True
    settlement = await pipeline(parts).process([record("not json", 0)])
    assert [r.handle for r in settlement.failed] == ["h0"] and not settlement.quarantined


async def test_a_churned_customer_gets_no_more_alerts(parts: dict[str, Any]) -> None:
    batch = [*spike_batch(), event("c-1", "customer_churned", 0.5, 9)]
    settlement = await pipeline(parts).process(batch)
    assert len(settlement.done) == 4
    assert parts["publisher"].bodies == []


async def test_a_customer_who_signs_up_again_after_churning_is_alerted_again(parts: dict[str, Any]) -> None:
    flow = pipeline(parts)
    await flow.process(
        [
            event("c-1", "customer_signed_up", 30, 0, tier="budget"),
            event("c-1", "customer_churned", 20, 1),
            event("c-1", "ib_call", 19, 2, sentiment="neutral"),
        ]
    )
    assert parts["publisher"].bodies == []
    await flow.process([event("c-1", "customer_signed_up", 5, 3, tier="premium"), *spike_batch()[1:]])
    assert [b["type"] for b in parts["publisher"].bodies] == ["IB_CALL_SPIKE"]


async def test_switches_and_thresholds_come_from_config(parts: dict[str, Any]) -> None:
    config = AlertsConfig.model_validate({"ib_call_spike": {"enabled": False}})
    await pipeline(parts, config).process(spike_batch())
    assert parts["publisher"].bodies == []
