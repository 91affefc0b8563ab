"""Every one of the seed's 26 features for a small event log, with values worked out by hand.

The log is features/data/sample_events.jsonl (also the `churn-worker local` sample). as_of is
2026-11-27T12:00Z, so the 7-day window is Nov 21-27, the 14-day Nov 14-27, the 30-day Oct 29-Nov 27.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from features.eventfile import read_event_file
from features.events import check_event_time
from features.exceptions import EventParseError
from features.registry import SEED_FEATURE_NAMES, compute_features, features_as_dict
from features.store import MemoryFeatureStore
from tests.conftest import SAMPLE_EVENTS

AS_OF = datetime(2026, 11, 27, 12, tzinfo=UTC)

ALICE = {
    "session_count_7d": 1,  # a-07 Nov 23 (its duplicate line counts once)
    "session_frequency_7d": 1.0,  # 1 session / 1 week
    "avg_rating_7d": 4.0,  # a-08
    "cancellation_rate_7d": 0.5,  # 1 cancelled (a-09) / (1 + 1 completed)
    "ib_call_count_7d": 1,  # a-11 Nov 25; a-10 Nov 20 is 7 days back
    "session_count_14d": 2,  # a-05 Nov 16, a-07
    "session_frequency_14d": 1.0,  # 2 sessions / 2 weeks
    "avg_rating_14d": 3.5,  # (3 + 4) / 2
    "ib_call_count_14d": 2,  # a-10, a-11
    "negative_calls_14d": 1,  # a-10
    "session_count_30d": 3,  # a-03 Nov 2, a-05, a-07; a-02 Oct 26 is 32 days back
    "session_frequency_30d": 0.7,  # 3 / (30 / 7)
    "avg_rating_30d": 4.0,  # (5 + 3 + 4) / 3
    "ib_call_count_30d": 2,  # a-19 Oct 28 is 30 days back: outside
    "days_since_last_session": 3,  # Nov 23 15:00 -> Nov 27 12:00 = 3 d 21 h
    "days_since_last_login": 1,  # Nov 26 08:00 -> 1 d 4 h
    "days_since_last_payment": 6,  # Nov 21 00:00 -> 6 d 12 h
    "customer_tenure_days": 33,  # signed up Oct 25 09:00 -> 33 d 3 h
    "login_count_7d": 2,  # Nov 22, Nov 26
    "message_count_7d": 1,
    "payment_success_rate_30d": 2 / 3,  # Nov 1 and Nov 21 succeeded, Nov 20 failed
    "total_spend_lifetime": 241.0,  # 2 x 120.50
    "tutor_consistency": 2 / 3,  # t-1 has 2 of the 3 30-day sessions
    "primary_tutor_rating": 4.5,  # t-1 rated 5 and 4 in 30 days
    "subscription_tier": 2,  # standard at sign-up, premium on Nov 10
    "first_session_was_success": 1,  # a-02
}
BOB = {
    "session_count_7d": 0,
    "session_frequency_7d": 0.0,
    "avg_rating_7d": 0.0,  # no ratings
    "cancellation_rate_7d": 0.0,
    "ib_call_count_7d": 0,
    "session_count_14d": 0,
    "session_frequency_14d": 0.0,
    "avg_rating_14d": 0.0,
    "ib_call_count_14d": 0,
    "negative_calls_14d": 0,
    "session_count_30d": 1,  # Nov 3
    "session_frequency_30d": 7 / 30,
    "avg_rating_30d": 0.0,
    "ib_call_count_30d": 1,  # Nov 5 09:00+01:00
    "days_since_last_session": 24,  # Nov 3 12:00 -> Nov 27 12:00
    "days_since_last_login": 26,  # never (the Oct 1 login is past retention): since sign-up Nov 1 12:00
    "days_since_last_payment": 26,  # never succeeded: since sign-up
    "customer_tenure_days": 26,
    "login_count_7d": 0,
    "message_count_7d": 0,
    "payment_success_rate_30d": 0.0,  # one payment, failed
    "total_spend_lifetime": 0.0,
    "tutor_consistency": 1.0,  # one session, with t-9
    "primary_tutor_rating": 0.0,  # t-9 never rated
    "subscription_tier": 0,  # budget
    "first_session_was_success": 0,  # b-02 failed
}


def fold_sample() -> tuple[MemoryFeatureStore, list[str]]:
    store = MemoryFeatureStore()
    rejected = []
    events = []
    for _, item in read_event_file(SAMPLE_EVENTS):
        assert not isinstance(item, EventParseError), item
        reason = check_event_time(item, AS_OF, timedelta(days=35))
        if reason is None:
            events.append(item)
        else:
            rejected.append(f"{item.event_id}:{reason.error_code}")
    store.apply_sync(events, now=AS_OF)
    return store, rejected


def test_the_expected_values_cover_exactly_the_seed_features() -> None:
    assert list(ALICE) == list(SEED_FEATURE_NAMES)
    assert list(BOB) == list(SEED_FEATURE_NAMES)


@pytest.mark.parametrize(("customer", "expected"), [("c-alice", ALICE), ("c-bob", BOB)])
def test_seed_features_match_hand_computed_values(customer: str, expected: dict[str, float]) -> None:
    store, _ = fold_sample()
    state = asyncio.run(store.get([customer]))[customer]
    got = features_as_dict(compute_features(state, AS_OF))
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def test_the_expired_login_is_rejected_not_counted() -> None:
    _, rejected = fold_sample()
    assert rejected == ["b-05:too_old"]
