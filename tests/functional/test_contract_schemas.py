"""The published JSON Schemas (docs/schemas/) against what the product really reads and writes.

- event.schema.json: every event `churn-model simulate` writes, the second generator's events and the
  hand-checked sample log are valid; a set of broken events is refused by the schema and by the
  worker's own validation alike (so the schema is neither vacuous nor stricter than the worker on
  these cases).
- alert.schema.json: the alert bodies of a real backtest (the live pipeline in process, a real if tiny
  model) and of the pipeline with in-memory twins (model alerts, rule-only alerts during an outage,
  both experiment arms, a FIFO topic) are valid, and the SNS message attributes retention teams
  filter on match each body. So are the bodies of one alert's life (`lifecycle_bodies`: opened with
  what changed and a budget, escalated, resolved) and of a rules-only alert and a first scoring,
  built by the alert code itself (`route_alerts`, `Alert`, `worker.alerts.lifecycle`); broken
  variants of them are refused. tests/functional/test_chat_consumer.py renders the same bodies.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cli.model import main as churn_model
from features.events import parse_event, validate_event
from features.exceptions import EventParseError
from features.registry import FEATURE_NAMES
from features.store import MemoryFeatureStore
from jobs.backtest.runner import BacktestOptions, run_backtest
from jobs.backtest.scorer import InProcessScorer
from model.altsim import generate
from model.bundle import load_bundle
from model.server import LocalPredictor
from model.simulator import simulate, write_simulation
from tests.conftest import SAMPLE_EVENTS
from tests.fakes import NOW, FakeScorer, ListDlq, event
from worker.alerts.budgets import VALUE_FEATURE, expected_value
from worker.alerts.changes import LABELS, summary
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.lifecycle import escalation_of, resolution_of
from worker.alerts.publisher import MemoryAlertPublisher
from worker.alerts.rules import Alert, AlertType, BudgetTag, Change, Prediction, route_alerts
from worker.pipeline import Pipeline

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return schema


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


EVENT = validator(load("event"))  # the event, or the event in an SNS or EventBridge envelope
BARE_EVENT = validator({**load("event"), "anyOf": [{"$ref": "#/$defs/event"}]})  # the event alone
ALERT = validator(load("alert"))


def problems(schema: Draft202012Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in schema.iter_errors(instance)
    ]


def assert_valid(schema: Draft202012Validator, instances: list[dict[str, Any]]) -> None:
    assert instances
    for instance in instances:
        assert not problems(schema, instance), (instance, problems(schema, instance))


def event_problems(obj: Any) -> list[str]:
    """A bare event must be one; an SNS envelope's Message (JSON text, which a schema cannot look
    into) must hold one too."""
    if isinstance(obj, dict) and obj.get("Type") == "Notification":
        return problems(EVENT, obj) + problems(BARE_EVENT, json.loads(obj["Message"]))
    if isinstance(obj, dict) and "detail" in obj:
        return problems(EVENT, obj)
    return problems(BARE_EVENT, obj)


def assert_valid_events(events: list[dict[str, Any]]) -> None:
    assert events
    for e in events:
        assert not event_problems(e), (e, event_problems(e))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- events ----------------------------------------------------------------------------------------


def test_every_event_churn_model_simulate_writes_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    assert (
        churn_model(["simulate", "--customers", "40", "--days", "30", "--seed", "5", "--out", str(out)]) == 0
    )
    events = read_jsonl(out)
    assert_valid_events(events)
    assert len({e["type"] for e in events}) >= 10  # most types, so most per-type branches are exercised


def test_the_second_generators_events_are_valid() -> None:
    events = generate(customers=30, days=30, seed=1).events
    assert_valid_events(events)
    assert "subscription_changed" in {e["type"] for e in events}


def test_the_hand_checked_sample_log_is_valid() -> None:
    lines = SAMPLE_EVENTS.read_text().splitlines()
    assert_valid_events([json.loads(line) for line in lines])
    assert any('"Type":"Notification"' in line for line in lines)  # an envelope among them
    for line in lines:
        parse_event(line)  # and the worker agrees


def test_the_event_inside_an_envelope_is_the_same_contract() -> None:
    inner = {"event_id": "e-1", "customer_id": "c-1", "type": "login", "occurred_at": "2026-11-27T12:00:00Z"}
    for envelope in ({"Type": "Notification", "Message": json.dumps(inner)}, {"detail": inner}):
        assert parse_event(json.dumps(envelope)).event_id == "e-1"
        assert not event_problems(envelope)
    assert event_problems({"detail": {**inner, "type": "teleported"}})
    assert event_problems({"Type": "Notification", "Message": json.dumps({**inner, "customer_id": ""})})


VALID = {
    "event_id": "e-1",
    "customer_id": "c-1",
    "type": "session_completed",
    "occurred_at": "2026-11-27T12:00:00+01:00",
    "subject": "algebra",
    "tutor_id": "t-1",
    "duration_minutes": 45,
    "first_session": True,
    "success": True,
    "some_future_field": "ignored",
}


DROP = object()  # a field to leave out


def changed(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in {**VALID, **fields}.items() if v is not DROP}


INVALID = {
    "missing event_id": changed(event_id=DROP),
    "missing occurred_at": changed(occurred_at=DROP),
    "unknown type": changed(type="teleported"),
    "event_id with a space": changed(event_id="e 1"),
    "customer_id too long": changed(customer_id="c" * 65),
    "occurred_at without an offset": changed(occurred_at="2026-11-27T12:00:00"),
    "occurred_at not a time": changed(occurred_at="yesterday"),
    "occurred_at a number": changed(occurred_at=1764244800),
    "duration as a string": changed(duration_minutes="45"),
    "duration over 600 minutes": changed(duration_minutes=601),
    "duration missing": changed(duration_minutes=DROP),
    "first_session not a boolean": changed(first_session="true"),
    "unknown subject": changed(subject="astrology"),
    "rating above 5": changed(type="session_rated", rating=6),
    "rating a boolean": changed(type="session_rated", rating=True),
    "sign-up without a tier": changed(type="customer_signed_up"),
    "unknown tier": changed(type="subscription_changed", tier="gold"),
    "cancelled by someone else": changed(type="session_cancelled", cancelled_by="parent"),
    "unknown call sentiment": changed(type="ib_call", sentiment="angry"),
    "negative payment": changed(type="payment_failed", amount=-1),
    "payment over the business limit": changed(type="payment_succeeded", amount=100_001),
    "not an object": ["e-1", "c-1"],
}


def test_a_valid_event_is_valid_for_both() -> None:
    assert not event_problems(VALID)
    validate_event(VALID)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_a_broken_event_is_refused_by_the_schema_and_by_the_worker(case: str) -> None:
    bad = INVALID[case]
    assert problems(EVENT, bad), f"the schema accepts {case}"
    with pytest.raises(EventParseError):
        validate_event(bad)


# -- alerts ----------------------------------------------------------------------------------------


async def test_a_backtests_alert_bodies_are_valid(tiny_bundle: Path, tmp_path: Path) -> None:
    """The live `Pipeline` in process on a simulated log, scored by a real (tiny) model bundle."""
    paths = write_simulation(simulate(customers=30, days=20, seed=8), tmp_path / "sim.jsonl")
    scorer = InProcessScorer(LocalPredictor(load_bundle(tiny_bundle)))
    await run_backtest(paths["events"], scorer, tmp_path / "alerts.jsonl", BacktestOptions(progress=False))
    bodies = read_jsonl(tmp_path / "alerts.jsonl")
    assert_valid(ALERT, bodies)
    assert {b["scoring"] for b in bodies} == {"model"}
    assert {b["trigger"] for b in bodies} == {"event", "rescore"}
    assert len({b["type"] for b in bodies}) >= 2


def spikes(customers: list[str]) -> list[Any]:
    records = []
    for i, cid in enumerate(customers):
        records.append(event(cid, "customer_signed_up", 10, 10 * i, tier="premium"))
        records += [
            event(cid, "ib_call", days, 10 * i + n, sentiment="negative") for n, days in ((1, 3), (2, 1))
        ]
    return records


def assert_attributes_match(messages: list[Any], fifo: bool) -> None:
    for message in messages:
        body = message.body
        assert message.attributes == {
            "alert_type": body["type"],
            "severity": body["severity"],
            "customer_tier": "premium",
            "arm": body["arm"],
        }
        if fifo:
            assert (message.group_id, message.deduplication_id) == (body["customer_id"], body["alert_id"])


@pytest.mark.parametrize("endpoint_down", [False, True])
async def test_the_pipelines_published_bodies_are_valid_with_matching_attributes(endpoint_down: bool) -> None:
    """Both arms of an experiment, model alerts and rule-only alerts (endpoint down), a FIFO topic."""
    scorer = FakeScorer(churn_30d=0.9)
    scorer.down = endpoint_down
    retention = MemoryAlertPublisher(fifo=True)
    control = MemoryAlertPublisher()
    pipeline = Pipeline(
        store=MemoryFeatureStore(),
        scorer=scorer,
        ledger=MemoryAlertLedger(),
        publisher=retention,
        dlq=ListDlq(),
        alerts=AlertsConfig(),
        retention=timedelta(days=35),
        clock=lambda: NOW,
        experiment=ExperimentConfig(control_fraction=0.5, salt="schema-test"),
        control_publisher=control,
    )
    await pipeline.process(spikes([f"c-{i}" for i in range(12)]))

    assert_valid(ALERT, retention.bodies + control.bodies)
    assert {b["arm"] for b in retention.bodies} == {"treatment"}
    assert {b["arm"] for b in control.bodies} == {"control"}
    scoring = {b["scoring"] for b in retention.bodies + control.bodies}
    assert scoring == ({"rules_only"} if endpoint_down else {"model"})
    if not endpoint_down:
        assert {"IB_CALL_SPIKE", "HIGH_CHURN_RISK"} <= {b["type"] for b in retention.bodies}
    assert_attributes_match(retention.messages, fifo=True)
    assert_attributes_match(control.messages, fifo=False)


def test_the_alert_schema_is_not_vacuous() -> None:
    body: dict[str, Any] = {
        "alert_id": "0" * 64,
        "type": "IB_CALL_SPIKE",
        "severity": "CRITICAL",
        "customer_id": "c-1",
        "created_at": "2026-11-27T12:00:00Z",
        "as_of": "2026-11-27T11:59:58Z",
        "model_version": None,
        "message": "Customer has made 2 calls in 14 days",
        "recommendation": "Assign retention specialist within 24 hours",
        "expected_impact": "Reduce churn probability by 40%",
        "churn_risk": None,
        "churn_probability": None,
        "score": None,
        "top_risk_factors": None,
        "predictions": None,
        "scoring": "rules_only",
        "trigger": "event",
        "arm": "treatment",
        "feature_hash": "abc",
        "status": "open",
        "changes": [],
        "previous_score_at": None,
        "previous_churn_probability": None,
        "what_changed": None,
        "budget": None,
        "opened_at": "2026-11-27T11:59:58Z",
        "resolved_at": None,
        "a_later_field": {"is": "allowed"},
    }
    assert not problems(ALERT, body)
    for broken in (
        {**body, "severity": "HIGH"},  # IB_CALL_SPIKE is CRITICAL
        {**body, "type": "HIGH_CHURN_RISK", "severity": "HIGH"},  # only IB_CALL_SPIKE fires without the model
        {**body, "churn_risk": 0.5},  # a rules_only alert carries no model output
        {**body, "scoring": "model"},  # ... and a model alert carries them
        {**body, "arm": "holdout"},
        {**body, "alert_id": "not-a-sha256"},
        {k: v for k, v in body.items() if k != "trigger"},
    ):
        assert problems(ALERT, broken), broken


# -- one alert's life: status, what changed, budget --------------------------------------------------

CUSTOMER = "c-000008"
# Rules with an escalation threshold and a resolution period, so escalations and resolutions exist.
LIFECYCLE_RULES = AlertsConfig.model_validate(
    {
        "ib_call_spike": {"escalate_at_calls_14d": 4, "resolve_after_hours": 48},
        "high_churn_risk": {"escalate_above": 0.8, "resolve_after_hours": 48},
    }
)
PREVIOUS_SCORE_AT = datetime(2026, 11, 20, 9, 14, 2, tzinfo=UTC)
PAID_30D = 120.0


def prediction(churn_30d: float) -> Prediction:
    return Prediction.from_json(
        {
            "first_session_success_prob": 0.9,
            "predicted_session_velocity": 2.0,
            "churn_risk_14d": round(churn_30d * 0.6, 4),
            "churn_risk_30d": churn_30d,
            "supply_demand_scores": [0.0] * 20,
            "customer_health_score": round(100 * (1 - churn_30d), 2),
            "feature_importance": [
                {"feature": "session_count_7d", "importance": 0.21},
                {"feature": "ib_call_count_14d", "importance": 0.12},
                {"feature": "days_since_last_login", "importance": 0.04},
            ],
            "model_version": "2026-11-20-ab12cd",
        }
    )


def routed(alert_type: AlertType, as_of: datetime, churn_30d: float | None, **values: float) -> Alert:
    """The alert of `alert_type` the rules route for these features (and this 30-day risk, or no model)."""
    features = {name: 0.0 for name in FEATURE_NAMES} | {VALUE_FEATURE: PAID_30D} | values
    alerts = route_alerts(
        CUSTOMER,
        features,
        None if churn_30d is None else prediction(churn_30d),
        LIFECYCLE_RULES,
        as_of,
        "premium",
        feature_hash="4ac3311fccb2d245",
    )
    [alert] = [a for a in alerts if a.alert_type is alert_type]
    p = alert.predictions
    return alert.model_copy(
        update={"expected_value": expected_value(p.churn_risk_30d if p else None, features)}
    )


def explained(
    alert: Alert, since: datetime, moved: list[tuple[str, float, float, float | None]], before: float | None
) -> Alert:
    """`alert` with what changed since `since`, as `worker.alerts.changes.explain` fills it in."""
    changes = tuple(
        Change(feature=f, label=LABELS[f], previous=old, current=new, share=share)
        for f, old, new, share in moved
    )
    after = alert.predictions.churn_risk_30d if alert.predictions and before is not None else None
    return alert.model_copy(
        update={
            "changes": changes,
            "previous_score_at": since,
            "previous_churn_probability": before,
            "what_changed": summary(since, alert.as_of, changes, before, after),
        }
    )


def budgeted(alert: Alert) -> Alert:
    tag = BudgetTag(name="retention", day="2026-11-27", max_per_day=40, expected_value=alert.expected_value)
    return alert.model_copy(update={"budget": tag})


def lifecycle_bodies() -> dict[str, dict[str, Any]]:
    """Real alert bodies, by the alert code itself: one HIGH_CHURN_RISK alert's three messages
    (`open` with what changed and a budget, `escalated` six hours later, `resolved` three days
    later), a rules-only IB_CALL_SPIKE (changes without shares), and a first scoring (no changes)."""
    opened = explained(
        routed(AlertType.HIGH_CHURN_RISK, NOW, 0.68),
        PREVIOUS_SCORE_AT,
        [
            ("session_count_7d", 4, 0, 0.552),
            ("ib_call_count_14d", 0, 2, 0.301),
            ("days_since_last_login", 1, 6, -0.098),
        ],
        before=0.312,
    )
    opened = budgeted(opened).with_window(NOW).published_at(NOW + timedelta(milliseconds=300))

    later = NOW + timedelta(hours=6)
    current = explained(
        routed(AlertType.HIGH_CHURN_RISK, later, 0.86),
        NOW,
        [("days_since_last_login", 6, 6.25, 0.7), ("session_count_14d", 3, 2, 0.3)],
        before=0.68,
    )
    assert current.escalating
    escalated = escalation_of(opened, current, later).published_at(later + timedelta(milliseconds=250))
    cleared = later + timedelta(days=3)
    resolved = resolution_of(escalated, cleared, last_firing=later).published_at(cleared)

    spike = explained(
        routed(AlertType.IB_CALL_SPIKE, NOW, None, ib_call_count_14d=3),
        PREVIOUS_SCORE_AT,
        [("ib_call_count_14d", 0, 3, None), ("negative_calls_14d", 0, 2, None)],
        before=None,
    )
    first = routed(AlertType.HEALTH_SCORE_CRITICAL, NOW, 0.68)
    return {
        "open": opened.body(),
        "escalated": escalated.body(),
        "resolved": resolved.body(),
        "rules_only": spike.with_window(NOW).published_at(NOW).body(),
        "first_scoring": first.with_window(NOW).published_at(NOW).body(),
    }


def documented_alert() -> dict[str, Any]:
    """The full alert example of docs/contracts.md, Alerts."""
    text = (SCHEMAS.parent / "contracts.md").read_text()
    match = re.search(r"A full example, as published:\n\n```json\n(.*?)\n```", text, re.S)
    assert match, "docs/contracts.md has no full alert example"
    example: dict[str, Any] = json.loads(match.group(1))
    return example


def test_the_documented_example_is_a_valid_body_with_every_field() -> None:
    example = documented_alert()
    assert_valid(ALERT, [example])
    assert set(example) == set(lifecycle_bodies()["open"])  # every field the worker sends, nothing else


def test_an_alerts_life_and_what_changed_are_valid_bodies() -> None:
    bodies = lifecycle_bodies()
    assert_valid(ALERT, list(bodies.values()))
    opened, escalated, resolved = bodies["open"], bodies["escalated"], bodies["resolved"]

    # One alert, three messages: the same id, opening and budget; the status says which message.
    assert [b["status"] for b in (opened, escalated, resolved)] == ["open", "escalated", "resolved"]
    assert {b["alert_id"] for b in (opened, escalated, resolved)} == {opened["alert_id"]}
    assert {b["opened_at"] for b in (opened, escalated, resolved)} == {"2026-11-27T12:00:00Z"}
    assert opened["budget"] == escalated["budget"] == resolved["budget"]
    assert opened["budget"] == {
        "name": "retention",
        "day": "2026-11-27",
        "max_per_day": 40,
        "expected_value": pytest.approx(0.68 * PAID_30D),
    }
    assert opened["resolved_at"] is None and escalated["resolved_at"] is None
    assert resolved["resolved_at"] == "2026-11-30T18:00:00Z"
    assert escalated["message"].startswith("Escalated: ") and resolved["message"].startswith("Resolved: ")

    # What changed: the one line a person reads, and its parts.
    assert opened["what_changed"] == (
        "churn risk 31% -> 68% since 20 Nov: completed sessions in the last 7 days 4 -> 0; "
        "inbound support calls in the last 14 days 0 -> 2; days since the latest login 1 -> 6"
    )
    assert opened["previous_score_at"] == "2026-11-20T09:14:02Z"
    assert opened["previous_churn_probability"] == 0.312
    assert [c["share"] for c in opened["changes"]] == [0.552, 0.301, -0.098]
    assert escalated["what_changed"].startswith("churn risk 68% -> 86% since 12:00 UTC: ")

    # Without the model: values compared, no shares, no previous probability.
    spike = bodies["rules_only"]
    assert spike["scoring"] == "rules_only" and spike["previous_churn_probability"] is None
    assert [c["share"] for c in spike["changes"]] == [None, None]
    assert spike["what_changed"] == (
        "since 20 Nov: inbound support calls in the last 14 days 0 -> 3; "
        "inbound calls with negative sentiment in the last 14 days 0 -> 2"
    )
    # A first scoring: nothing to compare with.
    first = bodies["first_scoring"]
    assert (first["changes"], first["previous_score_at"], first["what_changed"], first["budget"]) == (
        [],
        None,
        None,
        None,
    )


def test_the_alert_schema_checks_the_new_fields() -> None:
    bodies = lifecycle_bodies()
    opened, resolved, spike = bodies["open"], bodies["resolved"], bodies["rules_only"]
    change = opened["changes"][0]
    for broken in (
        {**opened, "status": "closed"},
        {**opened, "changes": None},
        {**opened, "changes": [{k: v for k, v in change.items() if k != "current"}]},
        {**opened, "changes": [{**change, "share": 1.5}]},
        {**opened, "changes": [{**change, "previous": "4"}]},
        {**opened, "changes": [change] * 4},  # at most three
        {**opened, "previous_score_at": "20 Nov"},
        {**opened, "previous_churn_probability": 31.2},
        {**opened, "budget": {"name": "retention"}},
        {**opened, "budget": {**opened["budget"], "day": "27/11/2026"}},
        {**opened, "budget": {**opened["budget"], "max_per_day": 40.5}},
        {**opened, "opened_at": None},
        {**resolved, "resolved_at": None},  # a resolution says when
        {**spike, "changes": [{**spike["changes"][0], "share": 0.5}]},  # no model, no share
        {**spike, "previous_churn_probability": 0.3},
    ):
        assert problems(ALERT, broken), broken
    # A body published before these fields existed (an archive, a consumer's store) still validates:
    # the worker always sends them, the schema does not require them.
    older = {k: v for k, v in opened.items() if k not in NEW_FIELDS}
    assert not problems(ALERT, older)


NEW_FIELDS = (
    "status",
    "changes",
    "previous_score_at",
    "previous_churn_probability",
    "what_changed",
    "budget",
    "opened_at",
    "resolved_at",
)
