"""Live outcomes on moto's DynamoDB and the in-memory twin (same scenarios): a churn confirms the
customer's alerts of the 30 days before it, alerts 30 days old without churn expire, each exactly
once however often either happens, a late churn turns an expiry over, the counters give precision
per type and arm without a Scan, and every record says which arm, model and features made it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from cli.worker import main
from features.due import MemoryDueIndex
from features.store import MemoryFeatureStore
from tests.fakes import NOW, FakeScorer, ListDlq, event
from worker.alerts.alert_outcomes import Outcome, format_stats
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig, assign_arm
from worker.alerts.ledger import (
    AlertLedger,
    DynamoDBAlertLedger,
    MemoryAlertLedger,
    alert_table_name,
    create_alert_table,
)
from worker.alerts.publisher import MemoryAlertPublisher
from worker.alerts.rules import Alert, AlertType, Prediction, route_alerts
from worker.pipeline import Pipeline
from worker.rescore import Rescorer

T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
COOLDOWN = timedelta(hours=72)
PREDICTION = Prediction.from_json(
    {
        "first_session_success_prob": 0.9,
        "predicted_session_velocity": 3.0,
        "churn_risk_14d": 0.7,
        "churn_risk_30d": 0.8,
        "supply_demand_scores": [0.0] * 20,
        "customer_health_score": 70.0,
        "model_version": "m-7",
    }
)


@pytest.fixture(params=["dynamodb", "memory"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[AlertLedger]:
    if request.param == "memory":
        yield MemoryAlertLedger()
        return
    request.getfixturevalue("aws_endpoint")
    name = alert_table_name(request.getfixturevalue("unique_prefix"))
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_alert_table(client, name)
        yield DynamoDBAlertLedger(client, name)


def alert(
    customer: str, at: datetime, kind: AlertType = AlertType.HIGH_CHURN_RISK, arm: str = "treatment"
) -> Alert:
    features = {"ib_call_count_14d": 3.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    routed = route_alerts(
        customer, features, PREDICTION, AlertsConfig(), at, model_version="m-7", feature_hash="fh-1"
    )
    (chosen,) = [a for a in routed if a.alert_type is kind]
    return chosen.model_copy(update={"arm": arm})


async def claim(ledger: AlertLedger, customer: str, at: datetime, **kwargs: Any) -> Alert:
    result = await ledger.claim(alert(customer, at, **kwargs), at, COOLDOWN)
    assert result.should_publish
    await ledger.mark_sent(result.alert.published_at(at))
    return result.alert


async def test_a_churn_confirms_the_alerts_of_the_30_days_before_it_once(ledger: AlertLedger) -> None:
    old = await claim(ledger, "c-1", T0)  # 40 days before the churn: not confirmed by it
    recent = [
        await claim(ledger, "c-1", T0 + 20 * DAY),
        await claim(ledger, "c-1", T0 + 30 * DAY),
        await claim(ledger, "c-1", T0 + 20 * DAY, kind=AlertType.IB_CALL_SPIKE),
    ]
    after = await claim(ledger, "c-1", T0 + 41 * DAY)  # claimed after the churn happened (a late churn event)
    other = await claim(ledger, "c-2", T0 + 30 * DAY)  # somebody else
    churned_at = T0 + 40 * DAY
    confirmed = await ledger.confirm_churn("c-1", churned_at)
    assert sorted((r.alert_type, r.as_of_us) for r in confirmed) == sorted(
        (a.alert_type.value, _us(a.as_of)) for a in recent
    )
    assert {r.outcome for r in confirmed} == {Outcome.CONFIRMED}
    assert await ledger.confirm_churn("c-1", churned_at) == []  # the redelivered churn: counted once
    del old, after, other

    # The 40-day-old one and the others are open; 30 days after each, they expire, once.
    assert [r.customer_id for r in await ledger.expire_outcomes(T0 + 30 * DAY, 100)] == ["c-1"]  # the old one
    expired = await ledger.expire_outcomes(T0 + 80 * DAY, 100)
    assert sorted(r.customer_id for r in expired) == ["c-1", "c-2"]
    assert await ledger.expire_outcomes(T0 + 90 * DAY, 100) == []
    stats = await ledger.outcome_stats(T0.date(), (T0 + 50 * DAY).date())
    by_type = stats.by_type()
    assert (by_type["HIGH_CHURN_RISK"].confirmed, by_type["HIGH_CHURN_RISK"].expired) == (2, 3)
    assert (by_type["IB_CALL_SPIKE"].confirmed, by_type["IB_CALL_SPIKE"].expired) == (1, 0)
    assert by_type["HIGH_CHURN_RISK"].precision == 0.4 and by_type["HIGH_CHURN_RISK"].open == 0


async def test_a_churn_learned_after_the_expiry_turns_it_over_and_the_counters_follow(
    ledger: AlertLedger,
) -> None:
    await claim(ledger, "c-1", T0)
    [expired] = await ledger.expire_outcomes(T0 + 31 * DAY, 10)
    assert expired.outcome is Outcome.EXPIRED
    [late] = await ledger.confirm_churn("c-1", T0 + 29 * DAY)  # it happened in time; its event came late
    assert late.outcome is Outcome.CONFIRMED and late.was is Outcome.EXPIRED
    assert await ledger.confirm_churn("c-1", T0 + 29 * DAY) == []
    [counts] = (await ledger.outcome_stats(T0.date(), T0.date())).by_type().values()
    assert (counts.confirmed, counts.expired, counts.open) == (1, 0, 0)


async def test_stats_count_open_alerts_and_split_the_arms(ledger: AlertLedger) -> None:
    for i in range(6):
        await claim(ledger, f"c-{i}", T0 + i * DAY, arm="control" if i % 2 else "treatment")
    await ledger.confirm_churn("c-0", T0 + 3 * DAY)
    await ledger.confirm_churn("c-1", T0 + 3 * DAY)
    await ledger.expire_outcomes(T0 + 33 * DAY, 100)  # c-2 .. (days 0..3, those not confirmed)
    stats = await ledger.outcome_stats(T0.date(), (T0 + 10 * DAY).date())
    total = stats.by_type()["HIGH_CHURN_RISK"]
    assert (total.alerts, total.confirmed, total.expired, total.open) == (6, 2, 2, 2)
    control = stats.by_type("control")["HIGH_CHURN_RISK"]
    assert (control.confirmed, control.expired, control.open) == (1, 1, 1)
    report = stats.as_json(today=(T0 + 33 * DAY).date())
    assert report["by_type"]["HIGH_CHURN_RISK"]["precision"] == 0.5 and "by_arm" in report
    assert "control arm" in format_stats(stats, (T0 + 33 * DAY).date())
    assert (await ledger.outcome_stats((T0 + 2 * DAY).date(), (T0 + 2 * DAY).date())).by_type()[
        "HIGH_CHURN_RISK"
    ].alerts == 1


async def test_alert_records_carry_arm_model_version_and_feature_hash(
    dynamodb: Any, unique_prefix: str
) -> None:
    name = alert_table_name(unique_prefix)
    await create_alert_table(dynamodb, name)
    ledger = DynamoDBAlertLedger(dynamodb, name)
    await claim(ledger, "c-1", T0, arm="control")
    items = (
        await dynamodb.query(
            TableName=name,
            KeyConditionExpression="customer_id = :c",
            ExpressionAttributeValues={":c": {"S": "c-1"}},
        )
    )["Items"]
    by_key = {item["alert_type"]["S"]: item for item in items}
    claim_item = by_key["HIGH_CHURN_RISK"]
    [record_key] = [key for key in by_key if key.startswith("#alert#")]
    for item in (claim_item, by_key[record_key]):
        assert (item["arm"]["S"], item["model_version"]["S"], item["feature_hash"]["S"]) == (
            "control",
            "m-7",
            "fh-1",
        )
    assert record_key.endswith("#HIGH_CHURN_RISK#control")
    records = [r async for r in ledger.outcomes.scan_records(0, _us(T0 + DAY))]
    assert [(r["customer_id"], r["type"], r["arm"], r["model_version"]) for r in records] == [
        ("c-1", "HIGH_CHURN_RISK", "control", "m-7")
    ]


async def test_the_pipeline_confirms_on_churn_and_the_sweeper_expires_and_reports_precision() -> None:
    ledger = MemoryAlertLedger()
    clock = [NOW]
    scorer = FakeScorer(churn_30d=0.9)  # HIGH_CHURN_RISK for everyone scored
    store = MemoryFeatureStore()
    flow = Pipeline(
        store=store,
        scorer=scorer,
        ledger=ledger,
        publisher=MemoryAlertPublisher(),
        dlq=ListDlq(),
        alerts=AlertsConfig(),
        retention=timedelta(days=35),
        clock=lambda: clock[0],
        experiment=ExperimentConfig(control_fraction=0.5, salt="s"),
    )
    await flow.process([event(f"c-{i}", "login", 0.1, i) for i in range(8)])
    assert len(ledger.history) == 8
    clock[0] = NOW + 2 * DAY  # a day after the alerts, c-0 and c-1 churn
    await flow.process([event("c-0", "customer_churned", -1, 100), event("c-1", "customer_churned", -1, 101)])
    assert flow.metrics.total("alerts_confirmed") == 2
    clock[0] = NOW + 31 * DAY
    rescorer = Rescorer(
        due=MemoryDueIndex(),
        store=store,
        pipeline=flow,
        interval=DAY,
        retention=timedelta(days=35),
        clock=lambda: clock[0],
    )
    await rescorer.step()
    assert flow.metrics.total("alerts_expired") == 6
    clock[0] = NOW + 40 * DAY  # the alerts' day is among the 30 settled days the gauge covers
    precision = await flow.refresh_live_precision(clock[0])
    assert precision == {"HIGH_CHURN_RISK": 0.25}
    assert flow.metrics.gauges['live_precision{type="HIGH_CHURN_RISK"}'] == 0.25
    arms = {
        assign_arm(f"c-{i}", "HIGH_CHURN_RISK", ExperimentConfig(control_fraction=0.5, salt="s"))
        for i in range(8)
    }
    assert {r.alert.arm for records in ledger.history.values() for r in records} == arms


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def test_alerts_stats_prints_the_ledgers_counts(
    dynamodb: Any, unique_prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = alert_table_name(unique_prefix)
    await create_alert_table(dynamodb, name)
    ledger = DynamoDBAlertLedger(dynamodb, name)
    for i in range(4):
        await claim(ledger, f"c-{i}", T0)
    await ledger.confirm_churn("c-0", T0 + 5 * DAY)
    await ledger.expire_outcomes(T0 + 31 * DAY, 100)
    monkeypatch.setenv("CHURN_TABLE_PREFIX", unique_prefix)
    args = ["alerts", "stats", "--since", "2026-09-20", "--until", "2026-10-10", "--json"]
    assert await asyncio.to_thread(main, args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["by_type"]["HIGH_CHURN_RISK"] == {
        "alerts": 4,
        "confirmed": 1,
        "expired": 3,
        "open": 0,
        "precision": 0.25,
    }
    assert await asyncio.to_thread(main, args[:-1]) == 0
    assert "HIGH_CHURN_RISK" in capsys.readouterr().out
    monkeypatch.setenv("CHURN_TABLE_PREFIX", unique_prefix + "none-")
    assert await asyncio.to_thread(main, args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "alerts" in err and "ResourceNotFoundException" in err


async def test_uplift_reads_the_ledgers_records_of_both_arms(
    dynamodb: Any,
    unique_prefix: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = alert_table_name(unique_prefix)
    await create_alert_table(dynamodb, name)
    ledger = DynamoDBAlertLedger(dynamodb, name)
    for i in range(8):
        await claim(ledger, f"c-{i}", T0, arm="control" if i < 4 else "treatment")
        await claim(
            ledger, f"c-{i}", T0 + 4 * DAY, arm="control" if i < 4 else "treatment"
        )  # a repeat: same pair
    outcomes = tmp_path / "outcomes.jsonl"  # 3 of 4 control customers churn, 1 of 4 treated ones
    outcomes.write_text(
        "".join(
            json.dumps({"customer_id": f"c-{i}", "churned_at": "2026-10-10T00:00:00Z"}) + "\n"
            for i in (0, 1, 2, 4)
        )
    )
    monkeypatch.setenv("CHURN_TABLE_PREFIX", unique_prefix)
    args = ["uplift", "--outcomes", str(outcomes), "--ledger", "--end", "2026-12-01T00:00:00Z", "--json"]
    assert await asyncio.to_thread(main, args) == 0
    report = json.loads(capsys.readouterr().out)["by_type"]["HIGH_CHURN_RISK"]
    assert report["treatment"] == {"pairs": 4, "churned": 1, "churn_rate": 0.25}
    assert report["control"] == {"pairs": 4, "churned": 3, "churn_rate": 0.75}
    assert report["difference"] == pytest.approx(-0.5)
    with pytest.raises(SystemExit) as usage:  # no alerts named: argparse says which options
        main(["uplift", "--outcomes", str(outcomes)])
    assert usage.value.code == 2 and "--alerts --ledger is required" in capsys.readouterr().err
