"""The A/B holdout in the live path, with in-memory twins: every alert gets its arm, control alerts
are claimed and recorded like treatment ones (same cooldowns) but never reach the retention topic,
only the control topic when there is one; unsent claims of either arm are finished by the sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from features.store import MemoryFeatureStore
from tests.fakes import NOW, FakeScorer, ListDlq, event
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig, assign_arm
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.pipeline import Pipeline

EXPERIMENT = ExperimentConfig(control_fraction=0.5, salt="live-test")
CUSTOMERS = [f"c-{i}" for i in range(40)]


def spikes() -> list[Any]:
    return [
        event(c, "ib_call", days, 10 * i + n, sentiment="negative")
        for i, c in enumerate(CUSTOMERS)
        for n, days in enumerate((3, 1))
    ]


def flow(parts: dict[str, Any], **extra: Any) -> Pipeline:
    return Pipeline(
        **parts,
        alerts=AlertsConfig(),
        retention=timedelta(days=35),
        clock=lambda: NOW,
        experiment=EXPERIMENT,
        **extra,
    )


@pytest.fixture
def parts() -> dict[str, Any]:
    return {
        "store": MemoryFeatureStore(),
        "scorer": FakeScorer(),
        "ledger": MemoryAlertLedger(),
        "publisher": MemoryAlertPublisher(),
        "dlq": ListDlq(),
    }


@pytest.mark.parametrize("with_control_topic", [False, True])
async def test_control_alerts_are_recorded_like_treatment_ones_but_never_reach_retention(
    parts: dict[str, Any], with_control_topic: bool
) -> None:
    control_topic = MemoryAlertPublisher()
    pipeline = flow(parts, control_publisher=control_topic if with_control_topic else None)
    for _ in range(2):  # the redelivery changes nothing: same arms, same cooldowns
        settlement = await pipeline.process(spikes())
        assert len(settlement.done) == 2 * len(CUSTOMERS) and not settlement.failed
    arm = {c: assign_arm(c, "IB_CALL_SPIKE", EXPERIMENT) for c in CUSTOMERS}
    treated = sorted(c for c in CUSTOMERS if arm[c] == "treatment")
    assert 12 <= len(treated) <= 28  # about half
    retention = parts["publisher"].messages
    assert sorted(m.body["customer_id"] for m in retention) == treated
    assert {m.body["arm"] for m in retention} == {m.attributes["arm"] for m in retention} == {"treatment"}
    ledger: MemoryAlertLedger = parts["ledger"]
    recorded = {cid: record for (cid, kind), record in ledger.records.items() if kind == "IB_CALL_SPIKE"}
    assert sorted(recorded) == sorted(CUSTOMERS) and all(r.sent for r in recorded.values())
    assert {cid: r.alert.arm for cid, r in recorded.items()} == arm
    audit = sorted(m.body["customer_id"] for m in control_topic.messages)
    assert audit == (sorted(set(CUSTOMERS) - set(treated)) if with_control_topic else [])
    assert all(m.body["arm"] == m.attributes["arm"] == "control" for m in control_topic.messages)
    assert pipeline.metrics.total("alerts_withheld") == len(CUSTOMERS) - len(treated)
    assert pipeline.metrics.total("alerts_published") == len(treated)


async def test_without_an_experiment_every_alert_is_treatment(parts: dict[str, Any]) -> None:
    pipeline = Pipeline(**parts, alerts=AlertsConfig(), retention=timedelta(days=35), clock=lambda: NOW)
    await pipeline.process(spikes())
    assert len(parts["publisher"].messages) == len(CUSTOMERS)
    assert {m.body["arm"] for m in parts["publisher"].messages} == {"treatment"}


class DownPublisher(MemoryAlertPublisher):
    """A topic that refuses everything while `down`."""

    down: bool = True

    async def publish(self, alerts: Any, still_ours: Any = None) -> Any:
        if self.down:
            from worker.alerts.exceptions import AlertPublishError

            raise AlertPublishError("topic down", published=[], failed=list(alerts))
        return await super().publish(alerts)


async def test_a_control_alert_the_control_topic_refused_is_sent_there_by_the_sweep(
    parts: dict[str, Any],
) -> None:
    control_topic = DownPublisher()
    pipeline = flow(parts, control_publisher=control_topic)
    await pipeline.process(spikes())
    assert control_topic.messages == []
    control_topic.down = False
    republished = await pipeline.republish_abandoned(NOW + timedelta(minutes=5), 100)
    assert republished == len(control_topic.messages) > 0
    assert {m.body["arm"] for m in control_topic.messages} == {"control"}
    assert all(m.body["arm"] == "treatment" for m in parts["publisher"].messages)
