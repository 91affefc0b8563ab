"""Calibration on a known miscalibrated input, and the promotion gate refusing a worse candidate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jobs.gate import GATE_FILE, MIN_POSITIVES, check_gate, compare_predictions, gate_verdict
from model.calibration import Platt, fit_platt, logit
from model.exceptions import UsageError
from model.metrics import auc_roc, calibration


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def test_platt_recovers_a_known_miscalibration_and_keeps_the_ranking() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(-1.5, 1.2, 40_000)
    truth = _sigmoid(2.0 * z - 1.0)  # the model's logit z is overconfident-shy and biased high
    y = (rng.random(len(z)) < truth).astype(float)
    raw = _sigmoid(z)
    platt = fit_platt(raw, y)
    assert platt.a == pytest.approx(2.0, abs=0.1) and platt.b == pytest.approx(-1.0, abs=0.1)
    fixed = platt.apply(raw)
    assert calibration(y, raw)["ece"] > 0.05 > 0.01 > calibration(y, fixed)["ece"]
    assert auc_roc(y.astype(bool), fixed) == auc_roc(y.astype(bool), raw)  # strictly increasing map


def test_platt_ignores_censored_labels_and_refuses_what_it_cannot_fit() -> None:
    y = np.array([0.0, 1.0, np.nan] * 200)
    p = np.array([0.2, 0.8, 0.5] * 200)
    assert fit_platt(p, y).rows == 400
    assert fit_platt(p[:30], y[:30]).is_identity  # too few rows
    assert fit_platt(np.full(500, 0.3), np.zeros(500)).is_identity  # one class
    assert Platt().apply(np.array([0.25]))[0] == pytest.approx(0.25)
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()


def test_calibration_is_inside_the_exported_signature(tmp_path: Path) -> None:
    """The serving signature returns Platt(raw head) and the first-session gate's values."""
    import keras

    from features.registry import FEATURE_INDEX, FEATURE_NAMES
    from model.export import export_saved_model, load_serving_fn
    from model.network import build_model

    keras.utils.set_random_seed(1)
    model = build_model(len(FEATURE_NAMES))
    params = {"churn_risk_30d": {"a": 1.7, "b": -0.4}, "first_session_success": {"a": 0.5, "b": 0.3}}
    export_saved_model(
        model, np.zeros(len(FEATURE_NAMES), np.float32), tmp_path / "sm", params, FEATURE_NAMES
    )
    serve = load_serving_fn(tmp_path / "sm")
    x = np.abs(np.random.default_rng(2).normal(size=(6, len(FEATURE_NAMES)))).astype(np.float32)
    x[:, [FEATURE_INDEX["has_first_session"], FEATURE_INDEX["lifetime_session_count"]]] = 0
    x[1, FEATURE_INDEX["has_first_session"]], x[1, FEATURE_INDEX["first_session_was_success"]] = 1, 0
    x[2, FEATURE_INDEX["lifetime_session_count"]] = 4  # sessions, but no flagged first one
    raw = model(x, training=False)
    out = {k: v.numpy() for k, v in serve(features=x).items()}
    np.testing.assert_allclose(
        out["churn_risk_30d"], Platt(1.7, -0.4).apply(np.asarray(raw["churn_risk_30d"]).ravel()), atol=1e-5
    )
    np.testing.assert_allclose(
        out["churn_risk_14d"], np.asarray(raw["churn_risk_14d"]).ravel(), atol=1e-6
    )  # no params: identity
    first = Platt(0.5, 0.3).apply(np.asarray(raw["first_session_success"]).ravel())
    assert out["first_session_success"][1] == 0.0  # after a failed first session: its outcome
    assert out["first_session_success"][2] == 1.0  # past the first session, outcome unknown: no risk left
    np.testing.assert_allclose(out["first_session_success"][[0, 3, 4, 5]], first[[0, 3, 4, 5]], atol=1e-5)


def _sides(
    rng: np.random.Generator, customers: int = 400, per: int = 20, noise: float = 0.0
) -> tuple[dict, np.ndarray, dict, dict]:
    customer = np.repeat(np.arange(customers), per)
    risk = rng.beta(1, 8, customers)[customer]
    y = {h: (rng.random(len(customer)) < risk).astype(float) for h in ("churn_risk_14d", "churn_risk_30d")}
    good = {"pred": {h: risk for h in y}, "rules": {}}
    noisy = np.clip(risk + rng.normal(0, noise, len(risk)), 1e-4, 1 - 1e-4) if noise else risk
    other = {"pred": {h: noisy for h in y}, "rules": {}}
    return y, customer, good, other


def test_the_gate_refuses_a_worse_candidate_and_passes_an_equal_one() -> None:
    rng = np.random.default_rng(5)
    y, customer, good, worse = _sides(rng, noise=0.25)
    refused = compare_predictions(y, customer, worse, good, rounds=100)
    assert not refused["passed"] and "churn_risk_30d.auc_roc" in refused["failed"]
    assert compare_predictions(y, customer, good, good, rounds=50)["passed"]
    assert compare_predictions(y, customer, good, worse, rounds=50)["passed"]  # better than the incumbent


def test_the_gate_compares_rule_precision_per_customer() -> None:
    rng = np.random.default_rng(6)
    y, customer, good, same = _sides(rng)
    customers = 400
    churned = rng.random(customers) < 0.3
    alerted = rng.random(customers) < 0.4
    precise = (alerted & churned, alerted & churned)  # every alerted customer churned
    sloppy = (alerted, alerted & churned)  # most alerted customers did not
    good = {**good, "rules": {"HIGH_CHURN_RISK": precise}}
    bad = {**same, "rules": {"HIGH_CHURN_RISK": sloppy}}
    result = compare_predictions(y, customer, bad, good, rounds=100)
    assert result["failed"] == ["HIGH_CHURN_RISK.precision"]


def test_deploy_refuses_a_candidate_that_failed_unless_forced(tmp_path: Path) -> None:
    assert "never compared" in (check_gate(tmp_path, "v2", force=False) or "")
    (tmp_path / GATE_FILE).write_text(
        json.dumps(
            {
                "candidate_version": "v2",
                "incumbent_version": "v1",
                "passed": False,
                "failed": ["churn_risk_30d.auc_roc"],
            }
        )
    )
    with pytest.raises(
        UsageError, match=r"failed the promotion gate against v1 \(churn_risk_30d.auc_roc worse"
    ):
        check_gate(tmp_path, "v2", force=False)
    assert "--force" in (check_gate(tmp_path, "v2", force=True) or "")
    assert "not v3" in (check_gate(tmp_path, "v3", force=False) or "")  # a record about another model
    (tmp_path / GATE_FILE).write_text(json.dumps({"candidate_version": "v2", "passed": True}))
    assert check_gate(tmp_path, "v2", force=False) is None


def test_a_head_without_validation_labels_says_its_training_base_rate() -> None:
    """No evidence on held-out customers: the first-session head is not trusted (a = 0)."""
    import keras

    from features.registry import FEATURE_NAMES
    from model.datasources import Arrays
    from model.network import build_model
    from model.training import fit_calibration

    keras.utils.set_random_seed(3)
    model = build_model(len(FEATURE_NAMES))
    rng = np.random.default_rng(3)
    n = 600
    x = rng.gamma(2.0, 1.0, (n, len(FEATURE_NAMES))).astype(np.float32)
    churn = (rng.random(n) < 0.2).astype(np.float32)
    y = {
        "churn_risk_14d": churn,
        "churn_risk_30d": churn,
        "first_session_success": np.full(n, np.nan, np.float32),
    }
    train_first = np.where(rng.random(n) < 0.1, (rng.random(n) < 0.7).astype(np.float32), np.nan)
    fitted = fit_calibration(model, Arrays(x, y), Arrays(x, {**y, "first_session_success": train_first}))
    assert (
        fitted["churn_risk_30d"] is None or fitted["churn_risk_30d"]["a"] > 0
    )  # churn heads are never flattened
    first = fitted["first_session_success"]
    assert first is not None and first["a"] == 0.0 and "base rate" in first["source"]
    rate = float(np.nanmean(train_first))
    assert Platt.from_dict(first).apply(np.array([0.01, 0.99])) == pytest.approx([rate, rate])


def test_the_gate_fails_what_it_cannot_measure() -> None:
    """No churner among the gate's customers: both AUCs are undefined, and a random candidate must
    not pass on calibration alone."""
    rng = np.random.default_rng(7)
    y, customer, good, _ = _sides(rng)
    y = {head: np.zeros_like(labels) for head, labels in y.items()}
    # Random ranking, but probabilities near the (zero) churn rate: calibrated, and useless.
    random_candidate = {"pred": {h: rng.random(len(customer)) * 0.01 for h in y}, "rules": {}}
    result = compare_predictions(y, customer, random_candidate, good, rounds=50)
    assert not result["passed"] and result["failed"] == []
    assert {"churn_risk_14d.auc_roc", "churn_risk_30d.auc_roc"} <= set(result["cannot_judge"])
    assert "0 customers churned within 14d" in result["cannot_judge"]["churn_risk_14d.auc_roc"]
    assert gate_verdict(result).startswith("FAIL: cannot judge churn_risk_14d.auc_roc")


def test_the_gate_needs_enough_churners_and_stayers_per_horizon() -> None:
    rng = np.random.default_rng(8)
    y, customer, good, _ = _sides(rng)
    few = np.isin(customer, np.arange(5))  # only customers 0-4 can churn
    y = {head: np.where(few, labels, 0.0) for head, labels in y.items()}
    churners = min(len(np.unique(customer[y[head] == 1])) for head in y)
    assert 0 < churners < MIN_POSITIVES
    result = compare_predictions(y, customer, good, good, rounds=30)
    assert not result["passed"] and "churn_risk_30d.auc_roc" in result["cannot_judge"]
    assert compare_predictions(y, customer, good, good, rounds=30, min_positives=churners)["passed"]
