"""The delivery guarantees of issue 10, each named after what it protects, on the pipeline with
in-memory twins of every port (the DynamoDB and SNS sides have their own tests on moto)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import structlog

from features.due import MemoryDueIndex
from features.registry import compute_features
from features.state import to_us
from features.store import MemoryFeatureStore
from tests.fakes import NOW, Clock, FakeScorer, ListDlq, event, record
from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import AlertLedgerError, AlertPublishError
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.alerts.rules import Alert, route_alerts
from worker.logs import configure_logging
from worker.pipeline import Pipeline
from worker.ports import Record
from worker.rescore import Rescorer
from worker.runtime import _handle
from worker.settings import Settings

RETENTION = timedelta(days=35)


def spike(cid: str = "c-1", start: int = 0) -> list[Record]:
    return [
        event(cid, "customer_signed_up", 10, start, tier="premium"),
        event(cid, "ib_call", 3, start + 1, sentiment="negative"),
        event(cid, "ib_call", 1, start + 2, sentiment="neutral"),
    ]


def build(clock: Clock | None = None, **parts: Any) -> tuple[Pipeline, dict[str, Any]]:
    clock = clock or Clock()
    due = parts.pop("due", MemoryDueIndex())
    defaults: dict[str, Any] = {
        "store": MemoryFeatureStore(RETENTION, due=due),
        "scorer": FakeScorer(),
        "ledger": MemoryAlertLedger(),
        "publisher": MemoryAlertPublisher(clock=clock),
        "dlq": ListDlq(),
    }
    defaults.update(parts)
    pipeline = Pipeline(**defaults, alerts=AlertsConfig(), retention=RETENTION, due=due, clock=clock)
    return pipeline, {**defaults, "due": due, "clock": clock}


POISON = {
    "deep_nesting": ('{"event_id": "p1", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "not_json"),
    "huge_integer": (
        '{"event_id": "p2", "customer_id": "c-1", "type": "payment_succeeded", '
        '"occurred_at": "2026-11-27T00:00:00Z", "amount": ' + "9" * 5000 + "}",
        "not_json",
    ),
    "year_9999_overflows": (
        json.dumps(
            {
                "event_id": "p3",
                "customer_id": "c-1",
                "type": "login",
                "occurred_at": "9999-12-31T23:59:59-01:00",
            }
        ),
        "invalid_field",
    ),
    "year_1_overflows": (
        json.dumps(
            {
                "event_id": "p4",
                "customer_id": "c-1",
                "type": "login",
                "occurred_at": "0001-01-01T00:00:00+01:00",
            }
        ),
        "invalid_field",
    ),
    "infinity": (
        '{"event_id": "p5", "customer_id": "c-1", "type": "payment_failed", '
        '"occurred_at": "2026-11-27T00:00:00Z", "amount": 1e400}',
        "invalid_field",
    ),
    "amount_beyond_business": (
        json.dumps(
            {
                "event_id": "p6",
                "customer_id": "c-1",
                "type": "payment_succeeded",
                "occurred_at": "2026-11-27T00:00:00Z",
                "amount": 1e17,
            }
        ),
        "invalid_field",
    ),
    "nan_rating": (
        '{"event_id": "p7", "customer_id": "c-1", "type": "session_rated", "tutor_id": "t", '
        '"occurred_at": "2026-11-27T00:00:00Z", "rating": NaN}',
        "invalid_field",
    ),
    "sns_envelope_deep": (
        json.dumps({"Type": "Notification", "Message": "[" * 50_000 + "]" * 50_000}),
        "not_json",
    ),
    "invalid_utf8": ("\udcff", "not_json"),
}


@pytest.mark.parametrize("name", sorted(POISON))
async def test_one_bad_record_costs_one_record_never_its_batch(name: str) -> None:
    body, code = POISON[name]
    pipeline, parts = build()
    poison = Record(body=body.encode("utf-8", "surrogateescape"), handle="poison", source_id="m-poison")
    settlement = await pipeline.process([*spike(), poison])
    assert [r.handle for r in settlement.quarantined] == ["poison"]
    assert sorted(r.handle for r in settlement.done) == ["h0", "h1", "h2"] and not settlement.failed
    assert [c for _, c in parts["dlq"].items] == [code]
    assert [b["type"] for b in parts["publisher"].bodies] == ["IB_CALL_SPIKE"]


async def test_values_that_pass_validation_never_break_their_customer_later() -> None:
    """Every numeric field at its business maximum, as often as a page holds: the int64 window
    sums and every feature stay finite, today and as the windows slide."""
    pipeline, parts = build()
    batch = [event("c-big", "customer_signed_up", 20, 0, tier="premium")]
    for n in range(1, 1500):
        kind = ("payment_succeeded", "payment_failed", "session_completed", "session_rated")[n % 4]
        fields: dict[str, Any] = {
            "payment_succeeded": {"amount": 100_000.0},
            "payment_failed": {"amount": 100_000.0},
            "session_completed": {"subject": "algebra", "tutor_id": "t-1", "duration_minutes": 600},
            "session_rated": {"rating": 5, "tutor_id": "t-1"},
        }[kind]
        batch.append(event("c-big", kind, 1 + n % 3, n, **fields))
    settlement = await pipeline.process(batch)
    assert len(settlement.done) == len(batch)
    state = (await parts["store"].get(["c-big"]))["c-big"]
    for days in (0, 10, 29):
        assert np.isfinite(compute_features(state, NOW + timedelta(days=days))).all()
    settlement = await pipeline.process([event("c-big", "login", 0.5, 9999)])  # later batches still work
    assert len(settlement.done) == 1


async def test_churn_and_sign_up_at_the_same_instant_do_not_wedge_the_customer() -> None:
    pipeline, parts = build()
    churned_at = 5
    await pipeline.process(
        [
            event("c-1", "customer_signed_up", 20, 0, tier="budget"),
            event("c-1", "customer_churned", churned_at, 1),
        ]
    )
    assert parts["ledger"].churned["c-1"][1] is None  # recorded as churned
    # The sign-up at the churn's very instant arrives later: the customer is back (ties go to the sign-up).
    again = [
        event("c-1", "customer_signed_up", churned_at, 2, tier="premium"),
        event("c-1", "ib_call", 3, 3, sentiment="negative"),
        event("c-1", "ib_call", 1, 4, sentiment="neutral"),
    ]
    for _ in range(2):  # and a redelivery does not raise either
        settlement = await pipeline.process(again)
        assert len(settlement.done) == 3 and not settlement.failed
    assert [b["type"] for b in parts["publisher"].bodies] == ["IB_CALL_SPIKE"]


async def test_events_minutes_ahead_across_utc_midnight_count_in_the_windows() -> None:
    clock = Clock(datetime(2026, 11, 27, 23, 58, tzinfo=UTC))
    pipeline, parts = build(clock)
    ahead = "2026-11-28T00:02:00Z"  # 4 minutes ahead: accepted, and on tomorrow's page
    batch = [
        record(
            {
                "event_id": f"f{n}",
                "customer_id": "c-1",
                "type": "ib_call",
                "sentiment": "neutral",
                "occurred_at": ahead,
            },
            n,
        )
        for n in range(2)
    ]
    settlement = await pipeline.process(batch)
    assert len(settlement.done) == 2
    [body] = parts["publisher"].bodies
    assert body["type"] == "IB_CALL_SPIKE" and body["as_of"] == ahead


async def test_a_long_endpoint_outage_acknowledges_stored_events_and_scores_them_when_it_is_back() -> None:
    clock = Clock()
    scorer = FakeScorer(churn_30d=0.9)
    scorer.down = True
    pipeline, parts = build(clock, scorer=scorer)
    settlement = await pipeline.process(spike())
    assert len(settlement.done) == 3 and not settlement.failed  # durable in the store: acknowledged
    [rule_only] = parts["publisher"].bodies  # the rule that needs no model still alerts
    assert (rule_only["type"], rule_only["scoring"]) == ("IB_CALL_SPIKE", "rules_only")
    assert parts["due"].entries["c-1"][0] == to_us(clock.now)  # due now
    rescorer = Rescorer(
        due=parts["due"],
        store=parts["store"],
        pipeline=pipeline,
        interval=timedelta(hours=24),
        retention=RETENTION,
        clock=clock,
        endpoint_available=lambda: not scorer.down,
    )
    clock.now += timedelta(minutes=30)
    assert (
        await rescorer.step() is False and len(parts["publisher"].bodies) == 1
    )  # still down: nobody claimed
    scorer.down = False
    await rescorer.step()
    bodies = parts["publisher"].bodies
    assert [(b["type"], b["trigger"], b["scoring"]) for b in bodies[1:]] == [
        ("HIGH_CHURN_RISK", "rescore", "model")
    ]
    assert parts["due"].entries["c-1"][0] == to_us(clock.now + timedelta(hours=24))  # next one in an interval


async def test_an_endpoint_answer_outside_the_contract_costs_that_customer_only() -> None:
    class Answers(FakeScorer):
        async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
            rows = await super().score(features)
            rows[0]["churn_risk_30d"] = 1.0000001  # rounding: clipped, and it alerts
            rows[1]["churn_risk_30d"] = 1.5  # broken: this customer gets rule-only alerts
            return rows

    pipeline, parts = build(scorer=Answers())
    settlement = await pipeline.process([*spike("c-1"), *spike("c-2", 10)])
    assert len(settlement.done) == 6 and not settlement.failed
    types = sorted((b["customer_id"], b["type"], b["scoring"]) for b in parts["publisher"].bodies)
    assert types == [
        ("c-1", "HIGH_CHURN_RISK", "model"),
        ("c-1", "IB_CALL_SPIKE", "model"),
        ("c-2", "IB_CALL_SPIKE", "rules_only"),
    ]
    assert pipeline.metrics.total("scoring_failures") == 1


class FlakyPublisher(MemoryAlertPublisher):
    """Publishes the first alert of a call, fails the rest (as a dropped connection would), once."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.failures = 1

    async def publish(self, alerts: Sequence[Alert], still_ours: Any = None) -> list[Alert]:
        if self.failures and len(alerts) > 1:
            self.failures -= 1
            published = await super().publish(alerts[:1])
            raise AlertPublishError("connection reset", published=published, failed=list(alerts[1:]))
        return await super().publish(alerts)


async def test_a_failed_publish_marks_what_went_out_and_the_sweep_sends_the_rest_once() -> None:
    clock = Clock()
    pipeline, parts = build(clock, publisher=FlakyPublisher(clock), scorer=FakeScorer(churn_30d=0.9))
    settlement = await pipeline.process(spike())
    assert len(settlement.done) == 3  # the claims are durable: nothing to redeliver
    assert [b["type"] for b in parts["publisher"].bodies] == ["IB_CALL_SPIKE"]
    assert await pipeline.republish_abandoned(clock.now, 10) == 1  # released at once, not after the lease
    assert await pipeline.republish_abandoned(clock.now + timedelta(hours=1), 10) == 0
    bodies = parts["publisher"].bodies
    assert sorted(b["type"] for b in bodies) == ["HIGH_CHURN_RISK", "IB_CALL_SPIKE"]
    assert len({b["alert_id"] for b in bodies}) == 2


async def test_a_claimed_alert_is_published_even_when_no_redelivery_routes_it_again() -> None:
    """A worker claimed an alert and died before publishing it; the events were acknowledged by
    then, or their redelivery no longer routes it. The claim itself gets it out."""
    clock = Clock()
    ledger = MemoryAlertLedger()
    features = {"ib_call_count_14d": 2.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts("c-1", features, None, AlertsConfig(), NOW, "premium")
    claim = await ledger.claim(alert, clock.now, timedelta(hours=168))  # ... and the worker dies here
    live, parts = build(clock, ledger=ledger)
    assert await live.republish_abandoned(clock.now + timedelta(seconds=30), 10) == 0  # its lease holds
    assert await live.republish_abandoned(clock.now + timedelta(minutes=3), 10) == 1
    [body] = parts["publisher"].bodies
    assert body["alert_id"] == claim.alert.alert_id
    assert await live.republish_abandoned(clock.now + timedelta(minutes=10), 10) == 0  # sent: never again


async def test_a_claim_made_after_long_retries_is_not_born_expired() -> None:
    clock = Clock()

    class SlowScorer(FakeScorer):
        async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
            clock.now += timedelta(minutes=10)  # retries and back-off far longer than the 2-minute lease
            return await super().score(features)

    ledger = MemoryAlertLedger()
    pipeline, _ = build(clock, scorer=SlowScorer(), ledger=ledger)
    await pipeline.process(spike())
    [record_] = ledger.records.values()
    assert record_.lease_until > clock.now  # a lease from the claim's own time, still running


class BrokenLedger(MemoryAlertLedger):
    async def claim_all(self, *args: Any, **kwargs: Any) -> Any:
        raise AlertLedgerError("alerts table: throttled past the retries")


class BrokenDue(MemoryDueIndex):
    async def mark_due(self, *args: Any, **kwargs: Any) -> None:
        raise OSError("connection reset")


async def test_records_are_acknowledged_only_once_claims_and_due_marks_are_durable() -> None:
    pipeline, _ = build(ledger=BrokenLedger())
    metrics_before = pipeline.metrics.total("batches_failed")
    delivery = _Delivery(spike())
    await _handle([delivery], pipeline, pipeline.metrics)  # the runtime's handler
    assert delivery.settled is not None and not delivery.settled.done and len(delivery.settled.failed) == 3
    assert pipeline.metrics.total("batches_failed") == metrics_before + 1

    scorer = FakeScorer()
    scorer.down = True
    pipeline, _ = build(scorer=scorer, due=BrokenDue())
    settlement = await pipeline.process(spike())
    assert not settlement.done and len(settlement.failed) == 3  # not scored and not marked due: comes back


class _Delivery:
    def __init__(self, records: list[Record]) -> None:
        self.records = records
        self.settled: Any = None

    async def settle(self, settlement: Any) -> None:
        self.settled = settlement


async def test_no_raw_event_body_reaches_the_logs_at_any_level(capsys: pytest.CaptureFixture[str]) -> None:
    marker = "SECRET-BODY-7f3a"
    configure_logging(debug=True, json_logs=False)
    try:
        pipeline, _ = build(ledger=BrokenLedger())
        spiking = [json.loads(r.body) for r in spike()]
        bodies = [
            *(json.dumps({**e, "note": marker}) for e in spiking),
            f"not json {marker}",
            json.dumps(
                {"event_id": "x", "customer_id": "c-1", "type": marker, "occurred_at": "2026-11-27T00:00:00Z"}
            ),
            json.dumps({"event_id": "y", "customer_id": "c-1", "type": "login", "occurred_at": f"{marker}Z"}),
            json.dumps(
                {
                    "event_id": "z",
                    "customer_id": "c-1",
                    "type": "ib_call",
                    "sentiment": "neutral",
                    "occurred_at": "2026-11-27T00:00:00Z",
                    "note": marker,
                }
            ),
        ]
        records = [Record(body=b.encode(), handle=f"h{i}", source_id=f"m{i}") for i, b in enumerate(bodies)]
        await _handle([_Delivery(records)], pipeline, pipeline.metrics)  # logs a traceback: the ledger fails
        working, _ = build()
        for i, b in enumerate(bodies):  # one at a time too: every quarantine and alert line
            await working.process([Record(body=b.encode(), handle=f"r{i}", source_id=f"r{i}")])
    finally:
        structlog.reset_defaults()
    output = capsys.readouterr()
    assert "Traceback" in output.err  # the failure was logged, with its traceback ...
    assert marker not in output.err + output.out  # ... and nothing of any body


def test_the_metrics_server_listens_on_loopback_unless_configured() -> None:
    assert Settings().health_host == "127.0.0.1"
    assert Settings(health_host="0.0.0.0").health_host == "0.0.0.0"


def test_memory_for_latencies_is_bounded() -> None:
    from worker.metrics import Metrics
    from worker.scoring import LATENCY_SAMPLES, SageMakerScorer

    scorer = SageMakerScorer(client=None, endpoint_name="e")  # type: ignore[arg-type]
    for n in range(LATENCY_SAMPLES * 5):
        scorer.latencies_ms.append(float(n))
    assert len(scorer.latencies_ms) == LATENCY_SAMPLES
    metrics = Metrics()
    for n in range(100_000):
        metrics.observe("scoring_latency_ms", float(n))
    assert metrics.quantiles("scoring_latency_ms")["count"] <= 2048
