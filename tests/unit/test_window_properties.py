"""Properties of the window maths: idempotent by event_id, order-free, exact after inactivity."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import SUBJECTS, Event, validate_event
from features.registry import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    SEED_FEATURE_NAMES,
    compute_features,
    compute_features_batch,
)
from features.state import PAGE_CAPACITY, CustomerState, apply_event
from features.store import MemoryFeatureStore
from features.windows import WindowBatch, window_batch
from tests.unit.windows_reference import reference_window_batch

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
KINDS = [
    "session_completed",
    "session_rated",
    "session_cancelled",
    "ib_call",
    "login",
    "message_sent",
    "payment_succeeded",
    "payment_failed",
    "subscription_changed",
    "customer_signed_up",
    "session_booked",
]


@st.composite
def events(draw: st.DrawFn, customers: tuple[str, ...] = ("c-1", "c-2")) -> Event:
    kind = draw(st.sampled_from(KINDS))
    seconds_back = draw(st.integers(0, 34 * 86_400))
    data: dict[str, object] = {
        "event_id": f"e-{draw(st.integers(0, 10**9))}",
        "customer_id": draw(st.sampled_from(customers)),
        "type": kind,
        "occurred_at": (NOW - timedelta(seconds=seconds_back)).isoformat(),
    }
    tutor = f"t-{draw(st.integers(0, 3))}"
    subject = draw(st.sampled_from(SUBJECTS[:4]))
    extra: dict[str, dict[str, object]] = {
        "session_completed": {
            "subject": subject,
            "tutor_id": tutor,
            "duration_minutes": draw(st.floats(0, 600, allow_nan=False)),
            "first_session": draw(st.booleans()),
            "success": draw(st.booleans()),
        },
        "session_rated": {"rating": draw(st.floats(1, 5, allow_nan=False)), "tutor_id": tutor},
        "session_cancelled": {
            "subject": subject,
            "cancelled_by": draw(st.sampled_from(["customer", "tutor"])),
        },
        "ib_call": {"sentiment": draw(st.sampled_from(["negative", "neutral", "positive"]))},
        "payment_succeeded": {"amount": draw(st.floats(0, 1000, allow_nan=False))},
        "payment_failed": {"amount": draw(st.floats(0, 1000, allow_nan=False))},
        "subscription_changed": {"tier": draw(st.sampled_from(["budget", "standard", "premium"]))},
        "customer_signed_up": {"tier": draw(st.sampled_from(["budget", "standard", "premium"]))},
        "session_booked": {"subject": subject, "tutor_id": tutor},
    }
    return validate_event({**data, **extra.get(kind, {})})


def features_of(event_list: list[Event], as_of: datetime = NOW) -> dict[str, np.ndarray]:
    store = MemoryFeatureStore()
    store.apply_sync(event_list, now=NOW)
    return {cid: compute_features(state, as_of) for cid, state in store._states.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=1, max_size=40), st.randoms(use_true_random=False), st.data())
def test_any_order_and_any_duplication_give_identical_features(base, rnd, data) -> None:  # type: ignore[no-untyped-def]
    # One event per event_id: a redelivered event is the same event.
    unique = list({e.event_id: e for e in base}.values())
    duplicated = unique + [data.draw(st.sampled_from(unique)) for _ in range(data.draw(st.integers(0, 20)))]
    rnd.shuffle(duplicated)
    expected = features_of(unique)
    got = features_of(duplicated)
    assert got.keys() == expected.keys()
    for cid in expected:
        assert np.array_equal(got[cid], expected[cid]), cid


@settings(max_examples=30, deadline=None)
@given(st.lists(events(), min_size=1, max_size=30), st.integers(1, 5))
def test_applying_in_several_batches_equals_one_batch(base, pieces) -> None:  # type: ignore[no-untyped-def]
    unique = list({e.event_id: e for e in base}.values())
    store = MemoryFeatureStore()
    for i in range(pieces):
        store.apply_sync(unique[i::pieces], now=NOW)
    store.apply_sync(unique, now=NOW)  # and a full redelivery on top
    expected = features_of(unique)
    for cid, state in store._states.items():
        assert np.array_equal(compute_features(state, NOW), expected[cid])


def test_a_customer_who_goes_quiet_keeps_drifting_towards_churn() -> None:
    store = MemoryFeatureStore()
    store.apply_sync(
        [
            validate_event(
                {
                    "event_id": "s",
                    "customer_id": "c",
                    "type": "customer_signed_up",
                    "occurred_at": "2026-11-01T00:00:00Z",
                    "tier": "standard",
                }
            ),
            validate_event(
                {
                    "event_id": "x",
                    "customer_id": "c",
                    "type": "session_completed",
                    "occurred_at": "2026-11-22T10:00:00Z",
                    "subject": "algebra",
                    "tutor_id": "t",
                    "duration_minutes": 60,
                }
            ),
        ],
        now=NOW,
    )
    state = store._states["c"]
    since = FEATURE_INDEX["days_since_last_session"]
    for days_later, count_7d, count_30d in [(0, 1, 1), (10, 0, 1), (40, 0, 0)]:
        vector = compute_features(state, NOW + timedelta(days=days_later))
        assert vector[since] == 5 + days_later
        assert vector[FEATURE_INDEX["session_count_7d"]] == count_7d
        assert vector[FEATURE_INDEX["session_count_30d"]] == count_30d
        assert vector[FEATURE_INDEX["customer_tenure_days"]] == 26 + days_later


def test_a_late_event_lands_in_the_window_of_its_event_time() -> None:
    on_time = validate_event(
        {"event_id": "a", "customer_id": "c", "type": "login", "occurred_at": "2026-11-26T10:00:00Z"}
    )
    late = validate_event(
        {"event_id": "b", "customer_id": "c", "type": "login", "occurred_at": "2026-11-10T10:00:00Z"}
    )
    vector = features_of([on_time, late])["c"]
    assert vector[FEATURE_INDEX["login_count_7d"]] == 1
    assert vector[FEATURE_INDEX["login_count_30d"]] == 2
    assert vector[FEATURE_INDEX["days_since_last_login"]] == 1  # the late event does not make it more recent


def test_ten_thousand_events_in_one_day_spread_over_bounded_pages() -> None:
    state = CustomerState("c")
    for i in range(10_000):
        apply_event(
            state,
            validate_event(
                {
                    "event_id": f"e{i}",
                    "customer_id": "c",
                    "type": "login",
                    "occurred_at": "2026-11-26T10:00:00Z",
                }
            ),
        )
    assert all(len(page.event_digests) <= PAGE_CAPACITY for page in state.pages.values())
    assert len(state.pages) == 10_000 // PAGE_CAPACITY
    assert compute_features(state, NOW)[FEATURE_INDEX["login_count_7d"]] == 10_000
    # a redelivery of an event kept on the first page is still recognised from the last page's day
    assert (
        apply_event(
            state,
            validate_event(
                {"event_id": "e0", "customer_id": "c", "type": "login", "occurred_at": "2026-11-26T10:00:00Z"}
            ),
        )
        is None
    )


def test_registry_has_the_seed_names_first_and_about_150_features() -> None:
    assert SEED_FEATURE_NAMES[:5] == (
        "session_count_7d",
        "session_frequency_7d",
        "avg_rating_7d",
        "cancellation_rate_7d",
        "ib_call_count_7d",
    )
    assert SEED_FEATURE_NAMES[-3:] == (
        "primary_tutor_rating",
        "subscription_tier",
        "first_session_was_success",
    )
    assert 140 <= len(FEATURE_NAMES) <= 160
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert all(f"subject_sessions_30d_{s}" in FEATURE_INDEX for s in SUBJECTS)


@settings(max_examples=20, deadline=None)
@given(st.lists(events(customers=("c-1", "c-2", "c-3", "c-4")), min_size=1, max_size=60))
def test_a_batch_of_customers_gets_the_same_vectors_as_one_at_a_time(base) -> None:  # type: ignore[no-untyped-def]
    store = MemoryFeatureStore()
    store.apply_sync(base, now=NOW)
    states = list(store._states.values())
    matrix = compute_features_batch(states, NOW)
    for row, state in enumerate(states):
        assert np.array_equal(matrix[row], compute_features(state, NOW))


def test_a_view_of_the_past_ignores_later_events() -> None:
    logins = [
        validate_event({"event_id": f"l{i}", "customer_id": "c", "type": "login", "occurred_at": when})
        for i, when in enumerate(["2026-11-20T10:00:00Z", "2026-11-25T10:00:00Z"])
    ]
    store = MemoryFeatureStore()
    store.apply_sync(logins, now=NOW)
    state = store._states["c"]
    past = compute_features(state, datetime(2026, 11, 22, 12, tzinfo=UTC))
    assert past[FEATURE_INDEX["days_since_last_login"]] == 2  # Nov 20, not the later Nov 25
    assert past[FEATURE_INDEX["login_count_7d"]] == 1
    assert compute_features(state, NOW)[FEATURE_INDEX["days_since_last_login"]] == 2  # Nov 25 -> Nov 27


def _assert_same_windows(got: WindowBatch, expected: WindowBatch) -> None:
    for name in ("counts", "active_days", "session_days", "login_days", "last_us", "lifetime"):
        mine, theirs = getattr(got, name), getattr(expected, name)
        assert mine.keys() == theirs.keys(), name
        for key in theirs:
            assert np.array_equal(mine[key], theirs[key], equal_nan=True), (name, key)
    for name in (
        "start_us",
        "tier",
        "first_session_success",
        "has_first_session",
        "primary_tutor",
        "distinct_tutors",
    ):
        assert np.array_equal(getattr(got, name), getattr(expected, name)), name


@settings(max_examples=80, deadline=None)
@given(
    st.lists(events(customers=("c-1", "c-2", "c-3")), min_size=1, max_size=80),
    st.integers(1, 6),
    st.lists(st.integers(-40, 12), min_size=1, max_size=3),
    st.sampled_from([3, PAGE_CAPACITY]),
    st.sampled_from([timedelta(days=8), timedelta(days=35)]),
)
def test_cached_day_sums_equal_summing_every_page(base, pieces, shifts, capacity, retention) -> None:  # type: ignore[no-untyped-def]
    """The running sums each state caches, updated batch after batch (late events, pruned days, busy
    days of several pages, views of the past and of the future), give exactly what summing every
    page from scratch gives."""
    store = MemoryFeatureStore(retention)
    order = sorted(base, key=lambda e: e.occurred_at)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("features.state.PAGE_CAPACITY", capacity)  # small pages: busy days span several
        for i in range(pieces):
            chunk = order[i::pieces]  # every piece mixes old and new events: late arrivals
            now = max(e.occurred_at for e in chunk) if chunk else NOW
            store.apply_sync(chunk, now=now)
            states = list(store._states.values())
            for days in shifts:
                as_of = now + timedelta(days=days, hours=days * 5)
                _assert_same_windows(window_batch(states, as_of), reference_window_batch(states, as_of))
        fresh = [copy.deepcopy(state) for state in store._states.values()]
        for state in fresh:
            state.window_cache = None  # the cache rebuilt from the pages gives the same too
        _assert_same_windows(window_batch(fresh, NOW), reference_window_batch(fresh, NOW))
