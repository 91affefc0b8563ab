"""`churn-model train --candidates`: every candidate's figures recorded, the served one chosen on the
validation customers, and a bundle whose churn heads are gradient boosting serving exactly
scikit-learn's predict_proba + Platt from its SavedModel (one endpoint, one contract)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli.model import main
from model.altsim import generate, write_log

# Trains a small model: ~1-2 minutes on two idle cores; the timeout leaves room for a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def gbm_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    log = write_log(generate(400, 70, seed=5), tmp_path_factory.mktemp("alt"))
    out = tmp_path_factory.mktemp("bundle") / "b"
    args = ["train", "--events", str(log["events"]), "--outcomes", str(log["outcomes"]), "--out", str(out)]
    code = main(
        [
            *args,
            "--epochs",
            "2",
            "--max-train-rows",
            "5000",
            "--earlier-instants-only",
            "--candidates",
            "gbm",
            "--quiet",
            "--json",
        ]
    )
    assert code == 0
    return out, log


def test_gbm_heads_are_recorded_chosen_and_served_from_the_saved_model(
    gbm_bundle: tuple[Path, dict[str, Path]],
) -> None:
    from model.baselines import load_baselines, transform
    from model.bundle import load_bundle, load_trees
    from model.calibration import Platt
    from model.candidates import served_summary

    out, _ = gbm_bundle
    bundle = load_bundle(out)
    record = bundle.metadata["candidates"]
    assert record["names"] == ["gbm"]
    for head in ("churn_risk_14d", "churn_risk_30d"):
        choice = record["heads"][head]
        assert choice["served"] == "gbm" and choice["network_weight"] == 0.0
        readings = choice["candidates"]
        assert {"network", "gbm"} <= set(readings)  # the network is read even when it may not serve
        for reading in readings.values():
            assert {"auc", "ece", "rows"} <= set(reading["validation"]) and "test_after_cut" in reading
    assert served_summary(bundle.metadata) == "churn_risk_14d gbm, churn_risk_30d gbm"
    trees = load_trees(bundle)
    assert set(trees) == {"churn_risk_14d", "churn_risk_30d"}

    baselines = load_baselines(out)
    assert baselines is not None
    x = np.abs(np.random.default_rng(1).gamma(0.7, 3.0, (300, len(bundle.spec["names"])))).astype(np.float32)
    x[x < 0.8] = 0
    served = {k: v.numpy() for k, v in bundle.serving_fn()(features=x).items()}
    for head in ("churn_risk_14d", "churn_risk_30d"):
        gbm = baselines.models[head]["gbm"]
        platt = Platt.from_dict(bundle.metadata["calibration"][head] or {})
        offline = platt.apply(gbm.predict_proba(transform(x))[:, 1])
        np.testing.assert_allclose(served[head], offline, rtol=1e-6, atol=1e-7, err_msg=head)
    assert served["top_feature_importance"][:, 0].min() > 0  # the trees explain the served 30-day risk

    evaluation = bundle.metrics()["evaluation"]["out_of_time_and_customer"]
    for head, days in (("churn_risk_14d", "14d"), ("churn_risk_30d", "30d")):
        # the served model read on the test customers is the candidate's recorded test figure
        assert (
            evaluation[f"churn_{days}"]["auc_roc"]
            == record["heads"][head]["candidates"]["gbm"]["test_after_cut"]["auc"]
        )
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Candidates for the churn heads" in card and "**gbm** serves" in card
    targets = {t["metric"]: t for t in evaluation["targets"]}
    assert "observable health label" in targets["health_score_mae"]["against"]  # no latent truth in this log
    assert [r["min_calls_14d"] for r in evaluation["ib_call_spike_thresholds"]] == [1, 2, 3, 4, 5]


def test_unknown_candidates_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--candidates", "network,forest"])
    assert exit_info.value.code == 2
    assert "unknown candidate forest" in capsys.readouterr().err
