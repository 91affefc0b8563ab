"""Training examples: the worker's feature code at end-of-day snapshots, labels only from later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from features.events import validate_event
from features.registry import FEATURE_HASH, FEATURE_INDEX, FEATURE_NAMES, compute_features
from features.store import MemoryFeatureStore
from model.dataset import (
    LABELS,
    Examples,
    build_examples,
    future_labels,
    load_examples,
    save_examples,
    snapshot_days,
    split_by_customer,
)
from model.simulator import Simulation, simulate, write_simulation

START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 75
DAY_US = 86_400_000_000


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(200, DAYS, seed=11, start=START, progress=False)


@pytest.fixture(scope="module")
def examples(sim: Simulation) -> Examples:
    return build_examples(sim, progress=False)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_shapes_and_names(examples: Examples) -> None:
    n = len(examples)
    assert n > 300
    assert examples.X.shape == (n, len(FEATURE_NAMES)) and examples.X.dtype == np.float32
    assert set(examples.y) == set(LABELS) == {"first_session_success", "session_velocity", "churn_risk_14d",
                                              "churn_risk_30d", "supply_demand", "health_score"}  # fmt: skip
    assert examples.y["supply_demand"].shape == (n, 20)
    assert all(examples.y[k].shape == (n,) for k in LABELS if k != "supply_demand")
    assert set(examples.oracle) == {"churn_risk_14d", "churn_risk_30d"}
    assert list(examples.meta.columns) == ["customer_id", "as_of", "day", "segment", "first_session_known"]
    assert examples.feature_hash == FEATURE_HASH
    for key in ("first_session_success", "churn_risk_14d", "churn_risk_30d"):
        assert set(np.unique(examples.y[key])) == {0.0, 1.0}
    assert (examples.y["churn_risk_14d"] <= examples.y["churn_risk_30d"]).all()
    assert ((examples.y["health_score"] >= 0) & (examples.y["health_score"] <= 100)).all()


def test_snapshots_are_end_of_day_for_active_customers_with_a_full_horizon(
    sim: Simulation, examples: Examples
) -> None:
    outcomes = {o["customer_id"]: o for o in sim.outcomes}
    end = START + timedelta(days=DAYS)
    for row in examples.meta.itertuples():
        assert row.as_of == START + timedelta(days=row.day + 1) - timedelta(microseconds=1)
        assert row.as_of >= START + timedelta(days=30) - timedelta(microseconds=1)  # 30 days of warm-up
        assert row.as_of + timedelta(days=30) < end  # the 30-day label is fully observed
        outcome = outcomes[row.customer_id]
        assert _utc(outcome["signed_up_at"]) <= row.as_of
        assert outcome["churned_at"] is None or _utc(outcome["churned_at"]) > row.as_of
        assert row.segment in ("thriving", "healthy", "at_risk")
    # A customer is seen once a week; phases spread customers over the days of the week.
    per_customer = examples.meta.groupby("customer_id")["day"].apply(lambda d: np.diff(np.sort(d.to_numpy())))
    assert all((gaps == 7).all() for gaps in per_customer)
    assert examples.meta["day"].nunique() >= 7
    np.testing.assert_array_equal(snapshot_days(75, 7, 30), [29, 36, 43])


def test_features_ignore_everything_after_as_of(sim: Simulation, examples: Examples) -> None:
    """Replaying only the events up to as_of, in one go, gives the same vector."""
    rows = np.random.default_rng(0).choice(len(examples), 25, replace=False)
    by_customer: dict[str, list[dict]] = {}
    for event in sim.events:
        by_customer.setdefault(event["customer_id"], []).append(event)
    for i in rows:
        cid, as_of = examples.meta.at[i, "customer_id"], examples.meta.at[i, "as_of"]
        past = [validate_event(e) for e in by_customer[cid] if _utc(e["occurred_at"]) <= as_of]
        state = MemoryFeatureStore().apply_sync(past, now=as_of).states[cid]
        np.testing.assert_allclose(
            examples.X[i], compute_features(state, as_of).astype(np.float32), rtol=1e-6
        )


def test_cutting_the_future_changes_no_earlier_feature(sim: Simulation, examples: Examples) -> None:
    cut_day = 36
    cut_us = int((START + timedelta(days=cut_day + 1)).timestamp() * 1_000_000) - 1
    frame = sim.frame[sim.frame["occurred_us"] <= cut_us].reset_index(drop=True)
    cut = Simulation(sim.start, sim.days, frame, sim.outcomes, sim.truth, sim.seed)
    again = build_examples(cut, progress=False)
    early = examples.meta["day"].to_numpy() <= cut_day
    again_early = again.meta["day"].to_numpy() <= cut_day
    assert early.sum() > 50
    np.testing.assert_array_equal(again.X[again_early], examples.X[early])
    # ... while the labels, which look forward, do change for those snapshots
    assert not np.array_equal(again.y["session_velocity"][again_early], examples.y["session_velocity"][early])


def test_labels_come_from_after_as_of(sim: Simulation, examples: Examples) -> None:
    churned = {o["customer_id"]: _utc(o["churned_at"]) for o in sim.outcomes if o["churned_at"]}
    completed: dict[str, list[datetime]] = {}
    for event in sim.events:
        if event["type"] == "session_completed":
            completed.setdefault(event["customer_id"], []).append(_utc(event["occurred_at"]))
    for i, row in enumerate(examples.meta.itertuples()):
        when = churned.get(row.customer_id)
        for days in (14, 30):
            expected = when is not None and row.as_of < when <= row.as_of + timedelta(days=days)
            assert examples.y[f"churn_risk_{days}d"][i] == expected
        after = [
            t for t in completed.get(row.customer_id, []) if row.as_of < t <= row.as_of + timedelta(days=14)
        ]
        assert examples.y["session_velocity"][i] == len(after) / 2
        truth = sim.truth.at(row.customer_id, row.day)
        assert examples.y["health_score"][i] == pytest.approx(truth.health)
        assert examples.oracle["churn_risk_30d"][i] == pytest.approx(truth.churn_prob_30d)
        np.testing.assert_array_equal(examples.y["supply_demand"][i], sim.truth.supply_demand_at(row.day))
    assert examples.y["churn_risk_30d"].sum() >= 5


def test_future_labels_boundaries() -> None:
    as_of = np.array([0, 0, 0, 0], dtype=np.int64) + 10 * DAY_US
    churn = np.array([10 * DAY_US, 24 * DAY_US, 24 * DAY_US + 1, 40 * DAY_US], dtype=np.int64)
    sessions = [np.array([10 * DAY_US, 10 * DAY_US + 1, 24 * DAY_US, 24 * DAY_US + 1])] * 4
    labels = future_labels(as_of, churn, sessions)
    np.testing.assert_array_equal(labels[:, 0], [0, 1, 0, 0])  # churned at as_of itself is the past
    np.testing.assert_array_equal(labels[:, 1], [0, 1, 1, 1])
    np.testing.assert_array_equal(labels[:, 2], [1.0] * 4)  # 2 sessions in (as_of, as_of + 14d] per 2 weeks


def test_health_and_churn_are_learnable_from_features(examples: Examples) -> None:
    """The rule the seed alerts on and the features the model sees carry the labels' signal."""
    calls = examples.X[:, FEATURE_INDEX["ib_call_count_14d"]]
    churn30 = examples.y["churn_risk_30d"]
    assert churn30[calls >= 2].mean() > 2 * churn30[calls < 2].mean()
    # A straight line through six behaviour counts already reads health to within ~10 points.
    names = ["login_count_14d", "session_count_14d", "avg_rating_30d", "ib_call_count_14d", "message_count_14d",
             "days_since_last_login"]  # fmt: skip
    design = np.column_stack([examples.X[:, FEATURE_INDEX[n]] for n in names] + [np.ones(len(examples))])
    health = examples.y["health_score"]
    coef, *_ = np.linalg.lstsq(design, health, rcond=None)
    assert np.abs(design @ coef - health).mean() < 11 < np.abs(health - np.median(health)).mean()


def test_building_from_files_matches_building_from_the_simulation(sim: Simulation, examples: Examples,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    paths = write_simulation(sim, tmp_path / "events.parquet")
    again = build_examples(paths["events"], progress=False)
    np.testing.assert_array_equal(again.X, examples.X)
    for key in LABELS:
        np.testing.assert_array_equal(again.y[key], examples.y[key])
    assert again.meta.equals(examples.meta)


def test_split_holds_out_whole_customers(examples: Examples) -> None:
    train, test = split_by_customer(examples, test_fraction=0.25, seed=3)
    assert len(train) + len(test) == len(examples)
    train_ids, test_ids = set(train.meta["customer_id"]), set(test.meta["customer_id"])
    assert not train_ids & test_ids
    assert len(test_ids) == round(0.25 * len(train_ids | test_ids))
    same = split_by_customer(examples, test_fraction=0.25, seed=3)[1]
    assert set(same.meta["customer_id"]) == test_ids
    with pytest.raises(ValueError):
        split_by_customer(examples, test_fraction=1.0)


def test_save_and_load_round_trip(examples: Examples, tmp_path: Path) -> None:
    save_examples(examples, tmp_path / "ex.npz")
    back = load_examples(tmp_path / "ex.npz")
    np.testing.assert_array_equal(back.X, examples.X)
    for key in LABELS:
        np.testing.assert_array_equal(back.y[key], examples.y[key])
    np.testing.assert_array_equal(back.oracle["churn_risk_14d"], examples.oracle["churn_risk_14d"])
    assert back.meta.equals(examples.meta)
    assert back.feature_hash == FEATURE_HASH


def test_too_short_a_simulation_gives_no_examples() -> None:
    short = simulate(20, 45, seed=1, progress=False)
    empty = build_examples(short, progress=False)
    assert len(empty) == 0 and empty.X.shape == (0, len(FEATURE_NAMES))
