"""`churn-model package`: the model.tar.gz layout SageMaker's TF Serving container loads, the handlers
as the container runs them, and the feature-hash guard on every command that reads a bundle."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import shutil
import tarfile
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from cli.model import main
from features.registry import FEATURE_HASH, FEATURE_NAMES
from model.bundle import load_bundle
from model.exceptions import BundleMismatchError, BundleNotFoundError
from model.server import LocalPredictor

INFERENCE_SOURCE = Path(__file__).resolve().parents[2] / "model" / "inference.py"
Context = namedtuple("Context", "request_content_type accept_header")


@pytest.fixture(scope="module")
def package(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "model.tar.gz"
    assert main(["package", "--bundle", str(tiny_bundle), "--out", str(out)]) == 0
    return out


def test_layout_is_what_the_tf_serving_container_expects(package: Path, tiny_bundle: Path) -> None:
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
        assert {
            "1/saved_model.pb",
            "1/variables/variables.index",
            "code/inference.py",
            "code/requirements.txt",
            "code/feature_spec.json",
        } <= names
        assert any(n.startswith("1/variables/variables.data-") for n in names)
        assert not any(n.startswith(("/", "..")) or "/../" in n for n in names)
        assert tar.extractfile("code/inference.py").read() == INFERENCE_SOURCE.read_bytes()  # type: ignore[union-attr]
        spec = json.load(tar.extractfile("code/feature_spec.json"))  # type: ignore[arg-type]
    assert spec["names"] == list(FEATURE_NAMES)
    assert spec["feature_hash"] == FEATURE_HASH
    assert spec["model_version"] == load_bundle(tiny_bundle).model_version


def test_packaged_handlers_and_savedmodel_answer_like_the_local_endpoint(
    package: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    with tarfile.open(package) as tar:
        tar.extractall(tmp_path, filter="data")
    # As the container does: import code/inference.py by path, load 1/ into TF Serving.
    spec = importlib.util.spec_from_file_location("inference", tmp_path / "code" / "inference.py")
    assert spec is not None and spec.loader is not None
    inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    signature = tf.saved_model.load(str(tmp_path / "1")).signatures["serving_default"]

    row = [float(i % 5) for i in range(len(FEATURE_NAMES))]
    context = Context("application/json", "application/json")
    tfs_request = json.loads(
        inference.input_handler(io.BytesIO(json.dumps({"features": row}).encode()), context)
    )
    assert tfs_request["signature_name"] == "serving_default"
    outputs = signature(features=tf.constant(np.array(tfs_request["instances"], dtype=np.float32)))
    predictions = [{k: v.numpy()[i].tolist() for k, v in outputs.items()} for i in range(1)]

    class Response:
        status_code = 200
        content = json.dumps({"predictions": predictions}).encode()

    body, content_type = inference.output_handler(Response(), context)
    packaged = json.loads(body)
    status, local_body, _ = LocalPredictor(load_bundle(tiny_bundle)).invoke(
        json.dumps({"features": row}).encode(), "application/json", None
    )
    assert status == 200
    assert content_type == "application/json"
    # The local endpoint runs every call as padded 64-row blocks (model/server.py), TF Serving the
    # one row: the same outputs to float32 tolerance, not to the last bit.
    assert agree(packaged, json.loads(local_body))
    assert packaged["model_version"] == load_bundle(tiny_bundle).model_version


def agree(a: object, b: object) -> bool:
    """Equal, with numbers compared to float32 tolerance."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(agree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(agree(a[k], b[k]) for k in a)
    return a == b


def mismatched_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "old-bundle"
    shutil.copytree(tiny_bundle, copy)
    spec_file = copy / "feature_spec.json"
    spec = json.loads(spec_file.read_text())
    spec["feature_hash"] = "0123456789abcdef"
    spec_file.write_text(json.dumps(spec))
    return copy


def test_bundle_from_another_feature_registry_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    copy = mismatched_copy(tiny_bundle, tmp_path)
    with pytest.raises(BundleMismatchError) as caught:
        load_bundle(copy)
    message = str(caught.value)
    assert "0123456789abcdef" in message
    assert FEATURE_HASH in message
    assert "retrain" in message


@pytest.mark.parametrize("command", ["package", "evaluate", "serve"])
def test_commands_exit_2_on_a_mismatched_bundle(
    command: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = mismatched_copy(tiny_bundle, tmp_path)
    assert main([command, "--bundle", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "0123456789abcdef" in err and FEATURE_HASH in err


def test_missing_bundle_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BundleNotFoundError):
        load_bundle(tmp_path / "nothing")
    assert main(["package", "--bundle", str(tmp_path / "nothing")]) == 2
    assert "churn-model train --out" in capsys.readouterr().err


def test_default_bundle_is_retrained_when_defaults_change(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import asdict

    from jobs.training import _stale_reason, model_cache
    from model.bundle import default_bundle_dir
    from model.training import data_version, default_training

    monkeypatch.setenv("CHURN_MODEL_CACHE", str(tmp_path))
    target = default_bundle_dir(model_cache())
    assert target == tmp_path / "bundles" / "default"
    assert "no default model bundle" in (_stale_reason(target) or "")
    shutil.copytree(tiny_bundle, target)
    assert "older defaults" in (_stale_reason(target) or "")  # the tiny bundle's one epoch is not the default
    config, data = default_training()
    metadata_file = target / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["training"].update(asdict(config))
    metadata["data"].update({**asdict(data), "events": list(data.events), "data_version": data_version()})
    metadata_file.write_text(json.dumps(metadata))
    assert _stale_reason(target) is None
    spec = json.loads((target / "feature_spec.json").read_text())
    (target / "feature_spec.json").write_text(json.dumps({**spec, "feature_hash": "0123456789abcdef"}))
    assert "retrain" in (_stale_reason(target) or "")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],
        ["train", "--validation-fraction", "1.5"],
        ["compare", "--candidate", "a"],  # no --incumbent, --events, --outcomes
        ["train", "--data", "kaggle"],
        ["serve", "--port", "70000"],
        ["deploy", "--role-arn", "arn:aws:iam::1:role/r"],  # no --bucket
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["simulate", "train", "evaluate", "compare", "package", "serve", "deploy"]
)
def test_every_command_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 5
