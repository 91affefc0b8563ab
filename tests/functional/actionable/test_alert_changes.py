"""What changed (worker/alerts/changes.py) through the live pipeline on moto, and what it costs in
DynamoDB requests.

What must hold:
- every alert says what moved the churn risk since the customer's previous scoring: the inputs with
  their previous and current values and their shares, `previous_score_at`, the previous churn
  risk and one readable line; a first scoring has none;
- the previous scoring is the one before this batch's events (same-day events included), or the
  previous re-scoring;
- it adds no DynamoDB request to the event path (the previous instant rides on the profile Put and
  the sweeper's completion, which happen anyway), and an explanation that fails costs its shares only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from tests.fakes import Clock
from tests.functional.actionable.alert_workers import (
    DAY,
    T0,
    MakeWorker,
    at,
    calls,
)
from worker.alerts.config import AlertsConfig
from worker.exceptions import ScoringUnavailableError

RISK = AlertsConfig(
    health_score_critical={"enabled": False},
    first_session_risk={"enabled": False},
    session_velocity_drop={"enabled": False},
)


def sessions(cid: str, when: Any, n: int, first: int = 1) -> list[Any]:
    return [
        at(
            cid,
            "session_completed",
            when + timedelta(hours=i),
            first + i,
            subject="algebra",
            tutor_id="t-1",
            duration_minutes=45,
        )
        for i in range(n)
    ]


class DownExplainer:
    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        raise ScoringUnavailableError("explainer: 503")


async def test_an_alert_says_what_moved_its_score_since_the_previous_scoring(make_worker: MakeWorker) -> None:
    clock = Clock(T0)
    worker = await make_worker(clock, alerts=RISK)
    # First scoring: four sessions six days ago, a login today. No alert, nothing to compare with.
    history = [at("c-1", "customer_signed_up", T0 - 20 * DAY, 0, tier="standard")]
    history += sessions("c-1", T0 - 6 * DAY - timedelta(hours=4), 4)  # the last 6 days and 1 hour ago
    history.append(at("c-1", "login", T0 - timedelta(hours=1), 9))
    await worker.pipeline.process(history)
    assert worker.bodies == []

    # Two days later two inbound calls: the risk crosses 0.6 (FeatureScorer: 0.05 + 0.2 x calls + 0.02 x
    # days since the last session).
    clock.now = T0 + 2 * DAY
    await worker.pipeline.process(calls("c-1", clock(), 2))
    bodies = {b["type"]: b for b in worker.bodies}
    assert set(bodies) == {"IB_CALL_SPIKE", "HIGH_CHURN_RISK"}
    for body in bodies.values():
        assert body["previous_score_at"] == "2026-11-27T12:00:00Z"
        assert body["previous_churn_probability"] == 0.17  # 0.05 + 0.02 x 6 days
        assert body["churn_probability"] == 0.61
        changes = {c["feature"]: c for c in body["changes"]}
        assert list(changes) == [
            "ib_call_count_14d",
            "days_since_last_session",
        ]  # by effect; the rest moved nothing
        calls14 = changes["ib_call_count_14d"]
        assert (calls14["previous"], calls14["current"]) == (0.0, 2.0)
        assert calls14["share"] == 0.909  # 0.4 of the 0.44 the changed inputs explain
        assert changes["days_since_last_session"]["share"] == 0.091
        assert body["what_changed"] == (
            "churn risk 17% -> 61% since 27 Nov: inbound support calls in the last 14 days 0 -> 2; "
            "days since the latest completed session 6 -> 8"
        )


async def test_a_first_scoring_has_no_changes_and_a_failed_explanation_keeps_the_values(
    make_worker: MakeWorker,
) -> None:
    clock = Clock(T0)
    worker = await make_worker(clock)
    await worker.pipeline.process(
        [at("c-1", "customer_signed_up", T0 - 3 * DAY, 0, tier="budget"), *calls("c-1", T0, 2)]
    )
    (first,) = worker.bodies
    assert (first["changes"], first["previous_score_at"], first["what_changed"]) == ([], None, None)

    worker.pipeline._explainer = DownExplainer()
    clock.advance(timedelta(hours=2))
    await worker.pipeline.process([at("c-2", "customer_signed_up", T0 - 3 * DAY, 0, tier="budget")])
    clock.advance(timedelta(hours=2))
    await worker.pipeline.process(calls("c-2", clock(), 2))
    second = worker.bodies[-1]
    assert second["customer_id"] == "c-2"
    (change,) = [c for c in second["changes"] if c["feature"] == "ib_call_count_14d"]
    assert (change["previous"], change["current"], change["share"]) == (0.0, 2.0, None)
    assert second["previous_churn_probability"] is None
    assert second["what_changed"].startswith(
        "since 14:00 UTC: inbound support calls in the last 14 days 0 -> 2"
    )


async def test_what_changed_adds_no_dynamodb_request_to_the_event_path(make_worker: MakeWorker) -> None:
    """Per batch without an alert: one BatchGetItem and one BatchExecuteStatement of conditional
    writes for up to 25 customers (each customer's write is its profile alone), as without the
    feature; per alert: its share of the batch's claims TransactWriteItems and of its sent marks'
    BatchExecuteStatement, as without it."""
    clock = Clock(T0)
    worker = await make_worker(clock, alerts=RISK)
    customers = [f"c-{i}" for i in range(20)]
    await worker.pipeline.process(
        [at(cid, "customer_signed_up", T0 - 20 * DAY, 0, tier="standard") for cid in customers]
    )
    for day in (1, 2):
        clock.now = T0 + day * DAY
        worker.requests.clear()
        batch = [at(cid, "login", clock() - timedelta(minutes=5), 10 + day) for cid in customers]
        await worker.pipeline.process(batch)
        assert worker.bodies == []
        assert dict(worker.requests) == {"BatchGetItem": 1, "BatchExecuteStatement": 1}, worker.requests

    clock.now = T0 + 3 * DAY
    worker.requests.clear()
    await worker.pipeline.process(calls("c-0", clock(), 2))
    alerts = len(worker.bodies)
    assert alerts == 2 and all(b["what_changed"] for b in worker.bodies)
    # The batch's read and write (c-0's profile), then its two claims together and their sent marks
    # (and, at this ledger's first claim, the table's format: whether churns are stamped).
    assert dict(worker.requests) == {
        "BatchGetItem": 1,
        "BatchExecuteStatement": 2,
        "TransactWriteItems": 1,
        "GetItem": 1,
    }
