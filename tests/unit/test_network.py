"""The network: the seed's architecture, its task weights as a working Keras loss, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from model.network import (
    HEADS,
    TASK_WEIGHTS,
    TASKS,
    ScaledMeanSquaredError,
    build_model,
    compile_model,
    normalization_stats,
    targets_for_fit,
)
from model.training import TrainConfig, fit_model, synthetic_arrays

N = 150


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return compile_model(build_model(N))


def test_shared_trunk_is_the_seeds(model: keras.Model) -> None:
    names = [layer.name for layer in model.layers]
    for name, units in (("shared_1", 256), ("shared_2", 128), ("shared_3", 64)):
        layer = model.get_layer(name)
        assert layer.units == units
        assert layer.activation.__name__ == "relu"
    trunk = names[names.index("shared_1") : names.index("shared_3") + 1]
    kinds = [type(model.get_layer(n)).__name__ for n in trunk]
    assert kinds == [
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
        "BatchNormalization",
        "Dropout",
        "Dense",
    ]
    assert [model.get_layer(n).rate for n in trunk if "dropout" in n] == [0.3, 0.2]
    # raw features in, compressed (signed log1p) and scaled inside
    assert [type(model.get_layer(n)).__name__ for n in names[1:3]] == ["SignedLog1p", "Normalization"]


@pytest.mark.parametrize("task", TASKS)
def test_heads_have_the_seeds_widths_and_activations(model: keras.Model, task: str) -> None:
    hidden, width, activation = HEADS[task]
    assert model.get_layer(f"{task}_hidden").units == hidden
    out_layer = model.get_layer("health_score_unit" if task == "health_score" else task)
    assert out_layer.units == width
    assert out_layer.activation.__name__ == activation


def test_outputs_are_named_and_shaped(model: keras.Model) -> None:
    out = model(np.random.default_rng(0).normal(size=(4, N)).astype("float32"), training=False)
    assert set(out) == set(TASKS)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        t: (4, 20 if t == "supply_demand" else 1) for t in TASKS
    }
    health = np.asarray(out["health_score"])
    assert ((health >= 0) & (health <= 100)).all()
    assert health.max() > 1  # scaled to points, not left at 0-1


def test_loss_weights_are_the_seeds_and_all_six_heads_count(model: keras.Model) -> None:
    assert TASK_WEIGHTS == {
        "first_session_success": 1.0,
        "session_velocity": 0.5,
        "churn_risk_14d": 2.0,
        "churn_risk_30d": 2.0,
        "supply_demand": 1.0,
        "health_score": 1.5,
    }
    data = synthetic_arrays(64, seed=1)
    result = model.evaluate(data.x, targets_for_fit(data.y), batch_size=64, verbose=0, return_dict=True)
    weighted = sum(TASK_WEIGHTS[t] * result[f"{t}_loss"] for t in TASKS)
    assert result["loss"] == pytest.approx(weighted, rel=1e-4)
    assert all(result[f"{t}_loss"] > 0 for t in TASKS)


def test_health_loss_is_mse_on_the_unit_scale() -> None:
    y_true, y_pred = np.array([[80.0], [20.0]]), np.array([[70.0], [40.0]])
    loss = float(ScaledMeanSquaredError(100)(y_true, y_pred))
    assert loss == pytest.approx(((0.1**2) + (0.2**2)) / 2)


def test_constant_features_are_not_blown_up() -> None:
    x = np.ones((50, 3), dtype="float32")
    x[:, 0] = np.arange(50)
    _, variance = normalization_stats(x)
    assert variance[1] == variance[2] == 1.0
    assert variance[0] == pytest.approx(np.var(np.log1p(np.arange(50))), rel=1e-5)  # of the transformed input


def test_masked_losses_ignore_unknown_labels() -> None:
    from model.network import MaskedBinaryCrossentropy, MaskedMeanSquaredError

    y_pred = np.array([[0.9], [0.2], [0.5]], dtype="float32")
    known = float(MaskedBinaryCrossentropy()(np.array([[1.0], [0.0]]), y_pred[:2]))
    with_censored = float(MaskedBinaryCrossentropy()(np.array([[1.0], [0.0], [np.nan]]), y_pred))
    # the censored row adds nothing (a batch mean over 3 rows of which 2 carry a loss)
    assert with_censored == pytest.approx(known * 2 / 3, rel=1e-5)
    assert np.isfinite(with_censored)
    cells = np.array([[1.0, np.nan], [np.nan, np.nan]], dtype="float32")
    mse = float(MaskedMeanSquaredError()(cells, np.array([[3.0, 100.0], [7.0, 7.0]], dtype="float32")))
    assert mse == pytest.approx(4.0 / 2)  # row 1: one labelled cell, (3 - 1)^2; row 2: nothing


def test_a_censored_label_gives_no_gradient() -> None:
    import tensorflow as tf

    from model.network import MaskedBinaryCrossentropy

    p = tf.Variable([[0.3], [0.6]])
    with tf.GradientTape() as tape:
        loss = MaskedBinaryCrossentropy()(tf.constant([[1.0], [np.nan]]), p)
    gradient = tape.gradient(loss, p).numpy()
    assert gradient[0, 0] != 0 and gradient[1, 0] == 0


@pytest.mark.slow  # two fits: ~10 s on an idle 2-core machine, mostly graph tracing
def test_same_seed_same_weights_and_every_head_trains() -> None:
    data = synthetic_arrays(200, seed=3)
    config = replace(TrainConfig(), epochs=1, patience=0, seed=11)
    first, _, _ = fit_model(data, config)
    second, _, _ = fit_model(data, config)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    keras.utils.set_random_seed(config.seed)  # the initial weights fit_model started from
    initial = build_model(N)
    for task in TASKS:
        layer = "health_score_unit" if task == "health_score" else task
        assert not np.allclose(
            initial.get_layer(layer).get_weights()[0], first.get_layer(layer).get_weights()[0]
        )
    keras.utils.set_random_seed(config.seed + 1)
    assert not np.allclose(
        build_model(N).get_layer("shared_1").get_weights()[0], initial.get_layer("shared_1").get_weights()[0]
    )


def test_two_members_average_head_by_head_and_survive_save_and_export(tmp_path: Path) -> None:
    from model.export import export_saved_model, load_serving_fn
    from model.network import average_members

    keras.utils.set_random_seed(1)
    members = [build_model(N, name="earlier_instants"), build_model(N, name="every_instant")]
    ensemble = average_members(members)
    x = np.random.default_rng(2).normal(size=(5, N)).astype(np.float32)
    got = ensemble.predict(x, verbose=0)
    parts = [member.predict(x, verbose=0) for member in members]
    assert not np.allclose(parts[0]["churn_risk_30d"], parts[1]["churn_risk_30d"])  # two different networks
    for task in TASKS:
        np.testing.assert_allclose(got[task], (parts[0][task] + parts[1][task]) / 2, rtol=1e-5, atol=1e-5)
    ensemble.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(
        again.predict(x, verbose=0)["churn_risk_30d"], got["churn_risk_30d"], rtol=1e-5, atol=1e-6
    )
    serve = load_serving_fn(export_saved_model(ensemble, x.mean(axis=0), tmp_path / "saved"))
    out = serve(features=x)
    np.testing.assert_allclose(
        out["churn_risk_30d"].numpy(), got["churn_risk_30d"].ravel(), rtol=1e-5, atol=1e-6
    )
    assert out["top_feature_importance"].numpy()[:, 0].min() > 0  # the attribution sees through both members
    assert average_members(members[:1]) is members[0]
