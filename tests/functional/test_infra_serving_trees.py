"""Serving compatibility of compiled trees: a SavedModel whose churn heads are gradient boosting
(14 days) and a blend with the network (30 days) loads and serves under the TF Serving image's
TensorFlow, with the outputs of the exporting TensorFlow (as test_infra_serving.py checks for the
network alone)."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from features.registry import FEATURE_NAMES
from model.export import SERVING_OUTPUTS, build_package, export_saved_model, load_serving_fn
from tests.functional.test_infra_serving import ROOT, SERVING_PYTHON, SERVING_VERSION, rows
from tests.unit.test_trees import feature_rows, fit_gbm, labels

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SERVING_PYTHON.exists(),
        reason=f"no TensorFlow {SERVING_VERSION} venv at {SERVING_PYTHON.parent.parent}: run `make serving-check`",
    ),
]


def test_the_serving_tensorflow_serves_trees_and_blends_alike(tmp_path: Path) -> None:
    import keras

    from model.candidates import TreeHead
    from model.network import build_model
    from model.trees import TreeEnsemble

    keras.utils.set_random_seed(4)
    x = feature_rows(4000, 21)
    ensemble = TreeEnsemble.from_gbm(fit_gbm(x, labels(x, 22)))
    trees = {"churn_risk_14d": TreeHead(ensemble, 0.0), "churn_risk_30d": TreeHead(ensemble, 0.5)}
    calibration = {"churn_risk_14d": {"a": 0.9, "b": -0.2}, "churn_risk_30d": {"a": 1.1, "b": 0.1}}
    saved = export_saved_model(
        build_model(len(FEATURE_NAMES)), x.mean(axis=0), tmp_path / "sm", calibration, FEATURE_NAMES, trees
    )
    spec = {"names": list(FEATURE_NAMES), "feature_hash": "test", "model_version": "trees-test"}
    package = build_package(saved, spec, tmp_path / "model.tar.gz")
    with tarfile.open(package) as tar:
        tar.extractall(tmp_path / "pkg", filter="data")
    features = np.concatenate([rows(), feature_rows(16, 23)])
    np.save(tmp_path / "rows.npy", features)
    out = tmp_path / "served.json"
    result = subprocess.run(
        [
            str(SERVING_PYTHON),
            str(ROOT / "infra" / "serving_check.py"),
            str(tmp_path / "pkg" / "1"),
            str(tmp_path / "rows.npy"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(out.read_text())
    assert served["tensorflow"] == SERVING_VERSION
    exported = {name: value.numpy() for name, value in load_serving_fn(saved)(features=features).items()}
    for name in SERVING_OUTPUTS:
        if name == "top_feature_indices":
            continue
        np.testing.assert_allclose(
            np.asarray(served["outputs"][name]), exported[name], rtol=1e-5, atol=1e-6, err_msg=name
        )
    # The trees' churn heads: the same float64 arithmetic in both releases.
    for head in ("churn_risk_14d", "churn_risk_30d"):
        np.testing.assert_allclose(np.asarray(served["outputs"][head]), exported[head], rtol=0, atol=1e-6)
