"""Serving compatibility: what `churn-model package` exports loads and serves, with the same outputs,
under the TensorFlow release of the TF Serving image `churn-model deploy` uses by default.

The serving TensorFlow lives in a venv of its own (`.serving-tf<version>`, built by `make
serving-check`, which `make test` runs first); without it this test is skipped, saying how to make it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from features.registry import FEATURE_NAMES
from model.bundle import load_bundle
from model.deploy import DEFAULT_FRAMEWORK_VERSION, SERVING_TENSORFLOW
from model.export import SERVING_OUTPUTS, build_package, load_serving_fn

ROOT = Path(__file__).resolve().parents[2]
SERVING_VERSION = SERVING_TENSORFLOW[DEFAULT_FRAMEWORK_VERSION]
SERVING_PYTHON = (
    Path(os.environ.get("SERVING_TF_VENV", ROOT / f".serving-tf{SERVING_VERSION}")) / "bin" / "python"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SERVING_PYTHON.exists(),
        reason=f"no TensorFlow {SERVING_VERSION} venv at {SERVING_PYTHON.parent.parent}: run `make serving-check`",
    ),
]


def rows(n: int = 16, seed: int = 5) -> np.ndarray:
    """Feature vectors of the magnitudes the worker sends (counts, days, dollars), some zero."""
    rng = np.random.default_rng(seed)
    values = np.abs(rng.normal(0, 1, (n, len(FEATURE_NAMES)))) * rng.choice(
        [1, 5, 30, 200], len(FEATURE_NAMES)
    )
    values[rng.random(values.shape) < 0.3] = 0
    return values.astype(np.float32)


def test_the_serving_tensorflow_loads_the_package_and_agrees(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    package = build_package(
        bundle.saved_model_dir,
        {**bundle.spec, "model_version": bundle.model_version},
        tmp_path / "model.tar.gz",
    )
    with tarfile.open(package) as tar:
        tar.extractall(tmp_path / "pkg", filter="data")
    saved_model = tmp_path / "pkg" / "1"  # the version directory TF Serving loads
    assert (saved_model / "saved_model.pb").is_file()

    features = rows()
    np.save(tmp_path / "rows.npy", features)
    out = tmp_path / "served.json"
    result = subprocess.run(
        [
            str(SERVING_PYTHON),
            str(ROOT / "infra" / "serving_check.py"),
            str(saved_model),
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

    exported = {
        name: value.numpy() for name, value in load_serving_fn(saved_model)(features=features).items()
    }
    assert set(served["outputs"]) == set(SERVING_OUTPUTS) == set(exported)
    for name in SERVING_OUTPUTS:
        if name == "top_feature_indices":
            continue
        np.testing.assert_allclose(
            np.asarray(served["outputs"][name]), exported[name], rtol=1e-4, atol=1e-5, err_msg=name
        )
    # The same top-10 features, except where two attributions tie within float error.
    indices, importance = (
        np.asarray(served["outputs"]["top_feature_indices"]),
        exported["top_feature_importance"],
    )
    for row in range(len(features)):
        for k in range(indices.shape[1]):
            near_tie = any(
                abs(importance[row, k] - importance[row, j]) < 1e-5
                for j in (k - 1, k + 1)
                if 0 <= j < indices.shape[1]
            )
            if not near_tie:
                assert indices[row, k] == exported["top_feature_indices"][row, k], (row, k)
