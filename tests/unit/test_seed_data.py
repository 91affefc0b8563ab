"""The seed's synthetic generator: its segments, columns and labels, with supply_demand now a label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.registry import SEED_FEATURE_NAMES
from model.seed_data import (
    LABELS,
    SEGMENT_P,
    SEGMENTS,
    SUPPLY_DEMAND_COLUMNS,
    generate_training_data,
    seed_arrays,
)

# The seed's 26 feature names, in the seed's order (model-spec.md, `features = {...}`).
SEED_COLUMNS = [
    "session_count_7d",
    "session_frequency_7d",
    "avg_rating_7d",
    "cancellation_rate_7d",
    "ib_call_count_7d",
    "session_count_14d",
    "session_frequency_14d",
    "avg_rating_14d",
    "ib_call_count_14d",
    "negative_calls_14d",
    "session_count_30d",
    "session_frequency_30d",
    "avg_rating_30d",
    "ib_call_count_30d",
    "days_since_last_session",
    "days_since_last_login",
    "days_since_last_payment",
    "customer_tenure_days",
    "login_count_7d",
    "message_count_7d",
    "payment_success_rate_30d",
    "total_spend_lifetime",
    "tutor_consistency",
    "primary_tutor_rating",
    "subscription_tier",
    "first_session_was_success",
]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_training_data()


def test_columns_are_the_seeds_in_the_seeds_order(frame: pd.DataFrame) -> None:
    assert len(frame) == 10_000
    assert list(frame.columns[:26]) == SEED_COLUMNS == list(SEED_FEATURE_NAMES)
    assert set(frame.columns[26:]) == {*LABELS, *SUPPLY_DEMAND_COLUMNS, "segment"} - {"supply_demand"}


def test_segment_proportions(frame: pd.DataFrame) -> None:
    share = frame["segment"].value_counts(normalize=True)
    for name, p in zip(SEGMENTS, SEGMENT_P, strict=True):
        assert share[name] == pytest.approx(p, abs=0.015)


def test_per_segment_distributions_follow_the_seed(frame: pd.DataFrame) -> None:
    by = frame.groupby("segment")
    days = by["days_since_last_session"].agg(["min", "max"])
    assert days.loc["thriving"].tolist() == [1, 3] and days.loc["churned"].tolist() == [25, 59]
    assert by["session_frequency_7d"].mean()["thriving"] == pytest.approx(2.5, abs=0.05)
    assert by["ib_call_count_14d"].mean()["churned"] == pytest.approx(2.5, abs=0.2)
    churned = frame[frame["segment"] == "churned"]
    assert (churned["session_frequency_7d"] == 0).all() and (churned["login_count_7d"] == 0).all()
    rate = by["payment_success_rate_30d"].agg(["min", "max"])
    assert rate.loc["at_risk", "min"] >= 0.7 and rate.loc["at_risk", "max"] < 0.9
    health = by["health_score"].agg(["min", "max"])
    assert health.loc["thriving", "min"] >= 80 and health.loc["churned", "max"] < 39
    assert frame["first_session_was_success"].mean() == pytest.approx(0.7, abs=0.02)
    counts = frame[[c for c in SEED_COLUMNS if "count" in c]]
    assert (counts >= 0).all().all()  # the seed's int(negative * 7) bug is floored


def test_labels_are_the_seeds(frame: pd.DataFrame) -> None:
    seg = frame["segment"]
    assert (frame["churn_risk_14d"] == seg.isin(["at_risk", "churned"])).all()
    assert (frame["churn_risk_30d"] == (seg == "churned")).all()
    assert (frame["first_session_success"] == frame["first_session_was_success"]).all()
    nested = generate_training_data(2000, nested_churn_labels=True)
    assert (nested["churn_risk_30d"] >= nested["churn_risk_14d"]).all()
    assert (nested["churn_risk_30d"] == nested["segment"].isin(["at_risk", "churned"])).all()


def test_seed_arrays_feed_all_six_heads() -> None:
    X, y = seed_arrays(500)
    assert X.shape == (500, 26) and X.dtype == np.float32
    assert list(y) == list(LABELS)
    assert y["supply_demand"].shape == (500, 20) and y["supply_demand"].std() == pytest.approx(1, abs=0.1)
    assert all(v.dtype == np.float32 and len(v) == 500 for v in y.values())
    again_X, again_y = seed_arrays(500)
    np.testing.assert_array_equal(X, again_X)
    np.testing.assert_array_equal(y["health_score"], again_y["health_score"])
    other_X, _ = seed_arrays(500, seed=7)
    assert not np.array_equal(X, other_X)
    with pytest.raises(ValueError):
        generate_training_data(0)
