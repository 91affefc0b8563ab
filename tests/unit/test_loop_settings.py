"""Settings of the improvement loop (issue 12): the archive URI, the shadow model and the experiment
fail fast, naming the setting, before anything is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.exceptions import ConfigError
from worker.runtime import _services
from worker.settings import Settings, check_runnable, load_settings

RUNNABLE = {
    "CHURN_SQS_QUEUE_URL": "http://q/queue",
    "CHURN_DLQ_URL": "http://q/dlq",
    "CHURN_ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:1:alerts",
}


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in {**RUNNABLE, **env}.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_the_archive_uri_is_normalised_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        settings(monkeypatch, CHURN_ARCHIVE_S3_URI="s3://bucket/events").archive_s3_uri
        == "s3://bucket/events/"
    )
    with pytest.raises(ConfigError, match=r"settings: archive_s3_uri: .*expected s3://bucket/prefix/"):
        settings(monkeypatch, CHURN_ARCHIVE_S3_URI="bucket/events")


def test_the_experiment_comes_from_the_file_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[experiment]\ncontrol_fraction = 0.25\nsalt = "q4"\n')
    loaded = load_settings(config)
    assert (loaded.experiment.control_fraction, loaded.experiment.salt) == (0.25, "q4")
    assert load_settings().experiment.active is False  # default: no experiment
    monkeypatch.setenv("CHURN_EXPERIMENT__CONTROL_FRACTION", "0.5")
    assert load_settings(config).experiment.control_fraction == 0.5
    monkeypatch.setenv("CHURN_EXPERIMENT__CONTROL_FRACTION", "1")
    with pytest.raises(ConfigError, match=r"experiment\.control_fraction"):
        load_settings()


def test_shadow_and_control_outputs_are_never_the_retention_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    alerts = RUNNABLE["CHURN_ALERTS_TOPIC_ARN"]
    with pytest.raises(ConfigError, match="CHURN_CONTROL_TOPIC_ARN is the retention topic"):
        check_runnable(settings(monkeypatch, CHURN_CONTROL_TOPIC_ARN=alerts))
    monkeypatch.delenv("CHURN_CONTROL_TOPIC_ARN")
    with pytest.raises(ConfigError, match="CHURN_SHADOW_TOPIC_ARN is the retention topic"):
        check_runnable(
            settings(monkeypatch, CHURN_SHADOW_ENDPOINT_NAME="cand", CHURN_SHADOW_TOPIC_ARN=alerts)
        )


def test_a_shadow_endpoint_needs_a_log_and_a_name_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ConfigError, match="needs a shadow log: set CHURN_SHADOW_TOPIC_ARN, or CHURN_ARCHIVE_S3_URI"
    ):
        check_runnable(settings(monkeypatch, CHURN_SHADOW_ENDPOINT_NAME="cand"))
    with pytest.raises(ConfigError, match="is the live endpoint"):
        check_runnable(
            settings(
                monkeypatch, CHURN_SHADOW_ENDPOINT_NAME="churn-health", CHURN_ARCHIVE_S3_URI="s3://b/events/"
            )
        )
    ok = settings(monkeypatch, CHURN_SHADOW_ENDPOINT_NAME="cand", CHURN_ARCHIVE_S3_URI="s3://b/events/")
    check_runnable(ok)
    assert {"s3", "sagemaker-runtime-shadow"} <= set(_services(ok))
    monkeypatch.delenv("CHURN_SHADOW_ENDPOINT_NAME")
    monkeypatch.delenv("CHURN_ARCHIVE_S3_URI")
    assert set(_services(load_settings())) == {"dynamodb", "sqs", "sns", "sagemaker-runtime"}
