"""Label definitions (features/labels.py) on hand-made customers: censoring, re-sign-up, first
sessions, velocity, health, supply/demand; every label looks strictly after its instant."""

from __future__ import annotations

import numpy as np
import pytest

from features.churn_outcomes import ChurnTimes, Outcomes
from features.labels import (
    CustomerFacts,
    EngagementReference,
    LabelContext,
    MarketActivity,
    customer_labels,
    health_scores,
)
from features.state import DAY_US

DAY0 = 20_500  # a UTC day number


def end_of(day: int) -> int:
    return (DAY0 + day + 1) * DAY_US - 1


def at(day: float) -> int:
    return int((DAY0 + day) * DAY_US)


def facts(*events: tuple[str, float] | tuple[str, float, bool, bool | None], eid: str = "e") -> CustomerFacts:
    out = CustomerFacts()
    for n, event in enumerate(events):
        kind, day = event[0], event[1]
        first = bool(event[2]) if len(event) > 2 else False
        success = event[3] if len(event) > 3 else None
        out.add(f"{eid}{n}", kind, at(day), first, success)
    return out


def labels(
    f: CustomerFacts, days: list[int], end_day: float, flag: bool = True, churns: list[float] = ()
) -> dict[str, np.ndarray]:
    times = np.asarray(sorted(at(d) for d in churns), dtype=np.int64)
    return customer_labels(f, times, np.array([end_of(d) for d in days]), LabelContext(at(end_day), flag))


def test_churn_within_the_horizon_is_positive_and_a_horizon_past_the_data_is_censored() -> None:
    f = facts(("customer_signed_up", 0), ("login", 1))
    out = labels(f, [0, 9, 20, 45], end_day=60, churns=[40.5])
    # instants at the end of days 0, 9, 20, 45; the churn is 39.5, 30.5, 19.5 days after the first three
    # (day 20: within 30 not 14); day 45 is after it: no next churn, 45 + 14 <= 60 known, 45 + 30 > 60 censored
    assert out["churn_risk_14d"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert out["churn_risk_30d"][:3].tolist() == [0.0, 0.0, 1.0]
    assert np.isnan(out["churn_risk_30d"][3])  # never "stayed" for want of data


def test_a_horizon_past_the_end_is_censored_even_when_the_churn_came_inside_it() -> None:
    # the churn on day 55 is known, but the stayers of day 50 are not: keeping the churners alone
    # would make every label of the data's last 30 days a 1
    out = labels(facts(("login", 0)), [28, 50], end_day=60, churns=[55])
    assert out["churn_risk_14d"][0] == 0.0 and out["churn_risk_30d"][0] == 1.0  # day 28: both inside
    assert np.isnan(out["churn_risk_14d"][1]) and np.isnan(out["churn_risk_30d"][1])  # day 50
    assert np.isnan(out["session_velocity"][1])


def test_a_customer_who_came_back_is_labelled_by_each_churn_in_turn() -> None:
    f = facts(("customer_signed_up", 0), ("customer_churned", 10), ("customer_signed_up", 20), ("login", 21))
    churn = ChurnTimes.join(None, {"c": f.churns})  # the outcomes file says null: the customer is back
    out = customer_labels(f, churn.of("c"), np.array([end_of(2), end_of(25)]), LabelContext(at(70), True))
    assert out["churn_risk_14d"].tolist() == [1.0, 0.0]  # the first churn counts; after coming back none


def test_churn_times_join_outcomes_and_events() -> None:
    from pathlib import Path

    outcomes = Outcomes({"c1": at(30)}, None, Path("o.jsonl"), frozenset({"c1", "c2"}))
    churn = ChurnTimes.join(outcomes, {"c1": [at(30), at(5)], "c2": [at(7)]})
    assert churn.of("c1").tolist() == [at(5), at(30)]  # each instant once, sorted
    nxt = churn.next_after(
        ["c1", "c2", "c3"], np.array([0, 0, 1, 2]), np.array([at(6), at(31), at(1), at(1)])
    )
    assert nxt.tolist()[:3] == [at(30), np.iinfo(np.int64).max, at(7)]


def test_first_session_is_labelled_only_before_it_and_within_30_days() -> None:
    f = facts(("customer_signed_up", 0), ("session_completed", 20, True, False), ("session_completed", 27))
    out = labels(f, [-15, 0, 10, 19, 20, 30], end_day=80)
    fss = out["first_session_success"]
    assert np.isnan(fss[0])  # 35 days before it: too far ahead to be this instant's question
    assert fss[1:4].tolist() == [0.0, 0.0, 0.0]  # success false, as the event says
    assert np.isnan(fss[4]) and np.isnan(fss[5])  # from the first session on: no longer a question


def test_without_a_first_session_in_the_data_the_label_is_censored_not_a_failure() -> None:
    out = labels(facts(("customer_signed_up", 0), ("login", 5)), [0, 10], end_day=80)
    assert np.isnan(out["first_session_success"]).all()


def test_a_log_without_the_flag_takes_the_first_completion_and_infers_success_from_a_follow_up() -> None:
    followed = facts(("customer_signed_up", 0), ("session_completed", 5), ("session_completed", 12))
    alone = facts(("customer_signed_up", 0), ("session_completed", 5))
    recent = facts(("customer_signed_up", 0), ("session_completed", 75))
    assert labels(followed, [1], end_day=80, flag=False)["first_session_success"][0] == 1.0
    assert labels(alone, [1], end_day=80, flag=False)["first_session_success"][0] == 0.0
    assert np.isnan(
        labels(recent, [50], end_day=80, flag=False)["first_session_success"][0]
    )  # follow-up not yet known
    # in a log that uses the flag, an unflagged completion is not a first session
    assert np.isnan(labels(alone, [1], end_day=80, flag=True)["first_session_success"][0])


def test_velocity_counts_completed_sessions_after_the_instant_per_week() -> None:
    f = facts(
        ("session_completed", 3),
        ("session_completed", 5.5),
        ("session_completed", 9),
        ("session_completed", 30),
    )
    out = labels(f, [3, 40, 50], end_day=60)
    assert out["session_velocity"][0] == pytest.approx(
        2 / 2
    )  # day 5.5 and 9 (day 3's own session is not after)
    assert out["session_velocity"][1] == 0.0
    assert np.isnan(out["session_velocity"][2])  # 50 + 14 > 60, no churn: unknown


def test_a_duplicate_completed_session_counts_once() -> None:
    f = CustomerFacts()
    assert f.add("s1", "session_completed", at(5))
    assert not f.add("s1", "session_completed", at(5))
    assert labels(f, [0], end_day=60)["session_velocity"][0] == pytest.approx(0.5)


def test_health_is_half_retention_half_engagement_percentile() -> None:
    reference = EngagementReference()
    reference.add(np.array([0.0, 10.0, 10.0, 20.0]))
    score = health_scores(np.array([0.0, 0.0, 1.0, np.nan]), np.array([20.0, 0.0, 10.0, 5.0]), reference)
    # percentiles (mid-rank): 20 -> (3 + 0.5) / 4; 0 -> 0.5 / 4; 10 -> (1 + 1) / 4
    assert score[:3] == pytest.approx([50 + 50 * 3.5 / 4, 50 + 50 * 0.5 / 4, 0 + 50 * 2 / 4])
    assert np.isnan(score[3])


def test_engaged_days_look_only_at_the_next_30_days() -> None:
    f = facts(
        ("login", 0.5),
        ("login", 1.2),
        ("message_sent", 1.9),
        ("ib_call", 2),
        ("login", 30.5),
        ("login", 31.5),
    )
    out = labels(f, [0], end_day=60)
    assert (
        out["engaged_days_30d"][0] == 2.0
    )  # days 1 and 30: a call is not engagement, day 0 is the instant's own, day 31 is past


def test_supply_demand_is_the_change_in_bookings_per_tutor_and_masked_without_data() -> None:
    market = MarketActivity()
    for day in range(0, 28):  # four weeks: 4 bookings a day with 2 tutors (14 per tutor per week)
        for k in range(4):
            market.add("session_booked", at(day) + k, "algebra", f"t{k % 2}")
    for day in range(28, 35):  # the week after: 6 a day, same 2 tutors (21 per tutor): +50%
        for k in range(6):
            market.add("session_booked", at(day) + k, "algebra", f"t{k % 2}")
    market.add("session_booked", at(30), "music", "t9")  # one booking: too little to say anything
    out = market.supply_demand([DAY0 + 27], DAY0, DAY0 + 40)
    assert out[0, 0] == pytest.approx(5.0)  # +50% in steps of 10%, clipped at 5
    assert np.isnan(out[0, 18])  # music
    assert np.isnan(
        market.supply_demand([DAY0 + 10], DAY0, DAY0 + 40)
    ).all()  # four weeks back leave the data
