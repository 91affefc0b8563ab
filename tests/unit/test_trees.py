"""Gradient boosting compiled into the SavedModel (model/trees.py) and the candidates' choice
(model/candidates.py): the served churn heads are scikit-learn's predict_proba + Platt to float
tolerance, the attribution explains the served probability, the choice reads validation only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.registry import FEATURE_NAMES
from model.calibration import Platt, fit_platt
from model.candidates import (
    HeadData,
    TreeHead,
    choose,
    logit_of,
    parse_candidates,
    probability,
    served_logit,
)
from model.trees import TreeEnsemble, raw_thresholds

N = len(FEATURE_NAMES)


def feature_rows(n: int, seed: int) -> np.ndarray:
    """Registry-shaped rows like the worker's: counts (integers, many zero), days, dollars, negatives."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(0.8, 4.0, size=(n, N)).astype(np.float32)
    x[:, : N // 2] = np.round(x[:, : N // 2])  # counts: values sit exactly on bin edges
    x[:, 7] = -x[:, 7]  # a trend can be negative
    x[rng.random(x.shape) < 0.3] = 0
    return x


def labels(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = (
        0.4 * x[:, 0]
        - 0.3 * np.log1p(x[:, 3])
        + 0.2 * x[:, 7]
        + 0.5 * (x[:, 100] > 2)
        + rng.normal(0, 1, len(x))
    )
    return (z > 1.0).astype(float)


def fit_gbm(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Any:
    """The baselines' booster, on the baselines' transform (model/baselines.py)."""
    from model.baselines import fit_baselines

    ys = {"churn_risk_14d": y, "churn_risk_30d": y}
    held = {head: labels[:500] for head, labels in ys.items()}
    return fit_baselines(x, ys, x[:500], held, seed, names=("gbm",)).models["churn_risk_30d"]["gbm"]


@pytest.fixture(scope="module")
def gbm() -> Any:
    x = feature_rows(3000, 1)
    return fit_gbm(x, labels(x, 2))


def saabas(ensemble: TreeEnsemble, row: np.ndarray) -> np.ndarray:
    """Path contributions the slow way: one tree, one node at a time."""
    out = np.zeros(N)
    for t in range(ensemble.trees):
        node = 0
        while not ensemble.leaf[t, node]:
            nxt = (
                ensemble.left[t, node]
                if row[ensemble.feature[t, node]] <= ensemble.threshold[t, node]
                else ensemble.right[t, node]
            )
            out[ensemble.feature[t, node]] += ensemble.expected[t, nxt] - ensemble.expected[t, node]
            node = nxt
    return out


def test_thresholds_on_raw_inputs_split_exactly_as_the_transformed_ones() -> None:
    from model.baselines import transform

    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            np.arange(-5, 60, dtype=np.float32),
            rng.gamma(0.5, 30, 5000).astype(np.float32),
            -rng.gamma(1, 3, 500).astype(np.float32),
        ]
    )
    t = transform(values)
    # thresholds as scikit-learn makes them: midpoints of distinct values, and values themselves
    distinct = np.unique(t)
    thresholds = np.concatenate([(distinct[1:] + distinct[:-1]) / 2, distinct[::7]])
    raw = raw_thresholds(thresholds)
    assert raw.dtype == np.float32
    for thr, r in zip(thresholds, raw, strict=True):
        assert np.array_equal(t <= thr, values <= r)


def test_compiled_trees_give_decision_function_bit_for_bit(gbm: Any) -> None:
    import tensorflow as tf

    from model.baselines import transform
    from model.trees import tree_logits

    x = feature_rows(3000, 9)
    expected = gbm.decision_function(transform(x))
    ensemble = TreeEnsemble.from_gbm(gbm)
    np.testing.assert_allclose(ensemble.logits(x), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tree_logits(ensemble, tf.constant(x)).numpy(), expected, rtol=0, atol=1e-12)
    again = TreeEnsemble.from_arrays(ensemble.as_arrays())
    np.testing.assert_array_equal(again.logits(x[:50]), ensemble.logits(x[:50]))


def test_path_contributions_add_up_to_the_logit(gbm: Any) -> None:
    import tensorflow as tf

    from model.trees import GraphTrees

    ensemble = TreeEnsemble.from_gbm(gbm)
    x = feature_rows(40, 4)
    logit, contributions = GraphTrees(ensemble, N).walk(tf.constant(x), attribute=True)
    logit, contributions = logit.numpy(), contributions.numpy()
    average = ensemble.baseline + ensemble.expected[:, 0].sum()
    np.testing.assert_allclose(contributions.sum(axis=1), logit - average, atol=1e-9)
    for row in range(5):
        np.testing.assert_allclose(contributions[row], saabas(ensemble, x[row]), atol=1e-12)


@pytest.fixture(scope="module")
def served(gbm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SavedModel whose 14-day head is the trees alone and 30-day head a blend, calibrated."""
    import keras

    from model.export import export_saved_model, load_serving_fn
    from model.network import build_model

    keras.utils.set_random_seed(3)
    network = build_model(N)
    ensemble = TreeEnsemble.from_gbm(gbm)
    trees = {"churn_risk_14d": TreeHead(ensemble, 0.0), "churn_risk_30d": TreeHead(ensemble, 0.3)}
    calibration = {"churn_risk_14d": {"a": 0.8, "b": -0.3}, "churn_risk_30d": {"a": 1.3, "b": 0.2}}
    mean = feature_rows(500, 7).mean(axis=0)
    path = tmp_path_factory.mktemp("trees") / "sm"
    export_saved_model(network, mean, path, calibration, FEATURE_NAMES, trees)
    return {
        "serve": load_serving_fn(path),
        "network": network,
        "ensemble": ensemble,
        "mean": mean,
        "path": path,
    }


def test_served_churn_heads_are_sklearn_predict_proba_plus_platt(gbm: Any, served: dict[str, Any]) -> None:
    from model.baselines import transform

    x = feature_rows(700, 11)
    out = {k: v.numpy() for k, v in served["serve"](features=x).items()}
    proba = gbm.predict_proba(transform(x))[:, 1]
    np.testing.assert_allclose(out["churn_risk_14d"], Platt(0.8, -0.3).apply(proba), rtol=1e-6, atol=1e-7)
    raw_30d = np.asarray(served["network"](x, training=False)["churn_risk_30d"]).ravel()
    z = served_logit(logit_of(raw_30d), gbm.decision_function(transform(x)), 0.3)
    np.testing.assert_allclose(out["churn_risk_30d"], probability(Platt(1.3, 0.2), z), rtol=1e-5, atol=1e-6)


def test_attribution_explains_the_served_blend(served: dict[str, Any]) -> None:
    """feature_importance = |network gradient x (x - mean) through the blend + dp/dz (1 - w) Saabas|."""
    import tensorflow as tf

    x = feature_rows(6, 12)
    out = {k: v.numpy() for k, v in served["serve"](features=x).items()}
    network, ensemble = served["network"], served["ensemble"]
    features = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(features)
        p = tf.cast(network(features, training=False)["churn_risk_30d"][:, 0], tf.float64)
        q = tf.clip_by_value(p, 1e-6, 1 - 1e-6)
        z_network = tf.math.log(q) - tf.math.log1p(-q)
    dz = tape.gradient(z_network, features).numpy().astype(np.float64)
    z = served_logit(z_network.numpy(), ensemble.logits(x), 0.3)
    p_served = probability(Platt(1.3, 0.2), z)
    slope = 1.3 * p_served * (1 - p_served)
    for row in range(len(x)):
        full = slope[row] * (0.3 * dz[row] * (x[row] - served["mean"]) + 0.7 * saabas(ensemble, x[row]))
        top = np.argsort(-np.abs(full))[:10]
        np.testing.assert_allclose(
            out["top_feature_importance"][row], np.abs(full)[top], rtol=1e-3, atol=1e-7
        )
        assert set(out["top_feature_indices"][row][:5]) == set(top[:5])


def test_a_tree_only_head_is_fast_enough_for_one_row(served: dict[str, Any]) -> None:
    from model.evaluation import latency_ms

    assert latency_ms(served["serve"], feature_rows(50, 13), calls=60)["p95"] < 200


def _head_data(rng: np.random.Generator, tree_skill: float, network_skill: float) -> HeadData:
    customers = np.repeat(np.arange(300), 10)
    signal = rng.normal(size=len(customers))
    y = (rng.random(len(customers)) < 1 / (1 + np.exp(-(2 * signal - 2)))).astype(float)
    y[rng.random(len(y)) < 0.1] = np.nan  # censored
    return HeadData(
        y_validation=y,
        groups=customers,
        z_network=network_skill * signal + rng.normal(size=len(y)),
        z_trees=tree_skill * signal + rng.normal(size=len(y)),
    )


def test_the_choice_reads_validation_and_ties_keep_the_network() -> None:
    rng = np.random.default_rng(5)
    skewed = _head_data(rng, 3.0, 0.5)
    better_trees = choose("churn_risk_30d", skewed, ("network", "gbm", "blend"), 0)
    assert better_trees.served in ("gbm", "blend")
    readings = better_trees.readings
    assert readings[better_trees.served]["validation"]["auc"] >= readings["network"]["validation"]["auc"]
    assert better_trees.margin["difference"] >= 0 and len(better_trees.margin["ci95"]) == 2
    z = served_logit(skewed.z_network, skewed.z_trees, better_trees.network_weight)
    assert better_trees.platt == fit_platt(1 / (1 + np.exp(-z)), skewed.y_validation)  # its own calibration
    data = _head_data(rng, 1.0, 1.0)
    data.z_trees = data.z_network.copy()  # identical candidates: the network keeps the head
    assert choose("churn_risk_30d", data, ("network", "gbm", "blend"), 0).served == "network"
    only = choose("churn_risk_30d", _head_data(rng, 3.0, 0.5), ("network",), 0)
    assert only.served == "network" and only.network_weight == 1.0


def test_candidate_names_parse_and_a_blend_brings_its_parts() -> None:
    assert parse_candidates("network") == ("network",)
    assert parse_candidates("blend") == ("network", "gbm", "blend")
    assert parse_candidates("gbm, network") == ("network", "gbm")
    with pytest.raises(ValueError, match="forest"):
        parse_candidates("network,forest")


def test_served_model_saved_with_trees_round_trips_through_the_bundle_file(gbm: Any, tmp_path: Path) -> None:
    from model.bundle import Bundle, load_trees, save_trees

    trees = {"churn_risk_30d": TreeHead(TreeEnsemble.from_gbm(gbm), 0.4)}
    save_trees(trees, tmp_path / "trees.npz")
    loaded = load_trees(Bundle(tmp_path, {}, {}))
    assert loaded["churn_risk_30d"].network_weight == 0.4
    x = feature_rows(20, 3)
    np.testing.assert_array_equal(
        loaded["churn_risk_30d"].ensemble.logits(x), trees["churn_risk_30d"].ensemble.logits(x)
    )


def test_the_even_blend_serves_unless_the_validation_customers_prefer_the_leader_beyond_doubt() -> None:
    rng = np.random.default_rng(11)
    close = _head_data(rng, 1.3, 1.0)  # a 0.4 blend leads, by less than its interval
    choice = choose("churn_risk_30d", close, ("network", "gbm", "blend"), 0)
    assert choice.served == "blend" and choice.network_weight == 0.5
    assert "even blend" in choice.margin["default"] and choice.margin["over"] == "blend (network weight 0.4)"
    assert choice.margin["ci95"][0] < 0 < choice.margin["ci95"][1]
    z = served_logit(close.z_network, close.z_trees, 0.5)
    assert choice.platt == fit_platt(1 / (1 + np.exp(-z)), close.y_validation)
    assert choice.readings["blend"]["network_weight"] == 0.5
    clear = _head_data(rng, 4.0, 0.2)  # the trees far ahead, on 300 customers
    leader = choose("churn_risk_30d", clear, ("network", "gbm", "blend"), 0)
    assert leader.network_weight < 0.5 and leader.margin["ci95"][0] > 0
    assert "default" not in leader.margin
