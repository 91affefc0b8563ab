"""CHURN_CONFIG as the service stack passes it: an `s3://bucket/key` object holding the thresholds
`tune` wrote. The worker's settings and the model commands that judge alert rules (evaluate,
compare, retrain) read it alike, CHURN_ALERTS__* variables over it; a missing object is a one-line
error naming it, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from cli.model import main as model_main
from cli.worker import main as worker_main
from model.altsim import generate, write_log
from worker.exceptions import ConfigError
from worker.settings import load_settings

TUNED = "[alerts.ib_call_spike]\nmin_calls_14d = 4\n\n[alerts.session_velocity_drop]\nenabled = false\n"


@pytest.fixture
def config_object(aws_endpoint: str, unique_prefix: str) -> str:
    bucket = f"{unique_prefix}config"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="tuned/churn.toml", Body=TUNED.encode())
    return f"s3://{bucket}/tuned/churn.toml"


def test_the_worker_reads_its_thresholds_from_an_s3_object(
    config_object: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_CONFIG", config_object)
    alerts = load_settings().alerts
    assert alerts.ib_call_spike.min_calls_14d == 4 and not alerts.session_velocity_drop.enabled
    monkeypatch.setenv("CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D", "5")  # variables over the file
    assert load_settings().alerts.ib_call_spike.min_calls_14d == 5


def test_a_missing_object_is_exit_2_naming_it(
    config_object: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = config_object.replace("churn.toml", "gone.toml")
    monkeypatch.setenv("CHURN_CONFIG", missing)
    with pytest.raises(ConfigError, match=f"config object {missing}: NoSuchKey"):
        load_settings()
    assert worker_main(["config", "show"]) == 2
    error = capsys.readouterr().err
    assert missing in error and len(error.strip().splitlines()) == 1


def test_evaluate_judges_the_rules_by_the_object_churn_config_names(
    config_object: str,
    monkeypatch: pytest.MonkeyPatch,
    tiny_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = write_log(generate(80, 40, seed=5), tmp_path)
    argv = ["evaluate", "--bundle", str(tiny_bundle), "--events", str(log["events"])]
    argv += ["--outcomes", str(log["outcomes"]), "--json", "--no-baselines"]

    def rules() -> dict[str, dict[str, object]]:
        capsys.readouterr()
        assert model_main(argv) == 0
        return dict(json.loads(capsys.readouterr().out)["alerts"])

    assert rules()["SESSION_VELOCITY_DROP"]["enabled"] is True  # the defaults
    monkeypatch.setenv("CHURN_CONFIG", config_object)
    assert rules()["SESSION_VELOCITY_DROP"]["enabled"] is False  # what the tuned object says
