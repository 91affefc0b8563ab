"""The feature matrix of several customers, each at its own instant (their previous scorings, when an
alert says what changed), is the same, bit for bit, as computing each customer alone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from features.events import SUBJECTS, validate_event
from features.registry import compute_features, compute_features_batch
from features.store import MemoryFeatureStore

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def states() -> list:
    rnd = random.Random(5)
    kinds = ["login", "session_completed", "session_rated", "ib_call", "session_booked", "payment_failed"]
    events = []
    for n in range(600):
        kind = rnd.choice(kinds)
        data: dict[str, object] = {
            "event_id": f"e-{n}",
            "customer_id": f"c-{n % 4}",
            "type": kind,
            "occurred_at": (NOW - timedelta(seconds=rnd.uniform(0, 40 * 86_400))).isoformat(),
        }
        tutor, subject = f"t-{rnd.randrange(6)}", rnd.choice(SUBJECTS)
        data.update(
            {
                "session_completed": {"subject": subject, "tutor_id": tutor, "duration_minutes": 45},
                "session_rated": {"rating": rnd.randint(1, 5), "tutor_id": tutor},
                "ib_call": {"sentiment": rnd.choice(["negative", "neutral"])},
                "session_booked": {"subject": subject, "tutor_id": tutor},
                "payment_failed": {"amount": 49.0},
            }.get(kind, {})
        )
        events.append(validate_event(data))
    store = MemoryFeatureStore()
    store.apply_sync(events, now=NOW)
    return [store._states[f"c-{i}"] for i in range(4)]


def test_each_row_at_its_own_instant_equals_each_customer_alone() -> None:
    customers = states()
    instants = [NOW - timedelta(days=d, hours=h) for d, h in ((0, 0), (3, 5), (9, 1), (20, 23))]
    matrix = compute_features_batch(customers, instants)
    for row, (state, at) in enumerate(zip(customers, instants, strict=True)):
        assert np.array_equal(matrix[row], compute_features(state, at), equal_nan=True)


def test_one_instant_per_customer_is_checked() -> None:
    with pytest.raises(ValueError, match="2 instants for 4 customers"):
        compute_features_batch(states(), [NOW, NOW])


def test_no_customers_make_an_empty_matrix_either_way() -> None:
    assert compute_features_batch([], NOW).shape[0] == 0
    assert compute_features_batch([], []).shape[0] == 0
