"""Settings that never guess: a misspelt variable, a value only `run` used to look at, a file that
is not UTF-8 or not readable, and several problems at once are refused when the settings are
loaded, each named (the variable, or the file, key and line); `config validate` lists them all and
accepts exactly what `run` accepts; `config show` prints a file `config validate` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.worker import main
from worker.exceptions import ConfigError
from worker.settings import ConfigErrors, load_settings

RUNNABLE = {
    "CHURN_SQS_QUEUE_URL": "http://q/queue",
    "CHURN_DLQ_URL": "http://q/dlq",
    "CHURN_ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:1:alerts",
}


def test_a_misspelt_variable_is_an_error_naming_it_and_the_likely_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURN_SORCE", "kinesis")
    with pytest.raises(ConfigError, match="CHURN_SORCE: unknown setting: did you mean CHURN_SOURCE"):
        load_settings()


def test_nested_and_model_variables_are_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D", "3")
    monkeypatch.setenv("CHURN_MODEL_BUCKET", "models")  # the retrain task's: known, not the worker's
    monkeypatch.setenv("CHURN_CONFIG", "")
    assert load_settings().alerts.ib_call_spike.min_calls_14d == 3
    monkeypatch.setenv("CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALS_14D", "3")
    with pytest.raises(ConfigError, match=r"alerts\.ib_call_spike\.min_cals_14d"):
        load_settings()


def test_a_start_timestamp_that_is_not_an_instant_is_refused_when_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHURN_KINESIS_START_TIMESTAMP", "yesterday")
    with pytest.raises(
        ConfigError,
        match=r"kinesis_start_timestamp: not an ISO-8601 instant.*\(CHURN_KINESIS_START_TIMESTAMP\)",
    ):
        load_settings()
    monkeypatch.setenv("CHURN_KINESIS_START_TIMESTAMP", "2026-11-27T00:00:00Z")
    assert load_settings().kinesis_start_timestamp == "2026-11-27T00:00:00Z"


def test_every_problem_is_listed_with_file_key_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        'source = "sqs"\nsqs_pollers = 0\n\n[alerts.ib_call_spike]\nmin_calls_14d = 0\ncooldown_hours = -1\n'
    )
    monkeypatch.setenv("CHURN_RETENTON_DAYS", "40")
    with pytest.raises(ConfigErrors) as caught:
        load_settings(config)
    problems = caught.value.problems
    assert len(problems) == 4
    for where in (
        "line 2: sqs_pollers:",
        "line 5: alerts.ib_call_spike.min_calls_14d:",
        "line 6: alerts.ib_call_spike.cooldown_hours:",
    ):
        assert any(problem.startswith(f"config file {config}, {where}") for problem in problems), where
    assert problems[0].startswith("CHURN_RETENTON_DAYS: unknown setting: did you mean CHURN_RETENTION_DAYS")
    assert "\n" not in str(caught.value) and "3 more" in str(caught.value)
    assert main(["config", "validate", str(config)]) == 2
    printed = capsys.readouterr().err.splitlines()
    assert printed[:4] == problems and "4 problem(s)" in printed[4]


def test_a_yaml_file_names_its_lines_too(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("alerts:\n  high_churn_risk:\n    min_churn_risk_30d: 3\n")
    with pytest.raises(ConfigErrors, match=rf"config file {config}, line 3: alerts.high_churn_risk"):
        load_settings(config)


def test_validate_refuses_what_run_refuses_and_accepts_what_it_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clash = tmp_path / "clash.toml"
    clash.write_text(
        'alerts_topic_arn = "arn:aws:sns:us-east-1:1:t"\ncontrol_topic_arn = "arn:aws:sns:us-east-1:1:t"\n'
    )
    assert main(["config", "validate", str(clash)]) == 2
    assert "CHURN_CONTROL_TOPIC_ARN is the retention topic" in capsys.readouterr().err
    timestamp = tmp_path / "kinesis.toml"
    timestamp.write_text('source = "kinesis"\nkinesis_start_position = "AT_TIMESTAMP"\n')
    assert main(["config", "validate", str(timestamp)]) == 2
    assert "needs CHURN_KINESIS_START_TIMESTAMP" in capsys.readouterr().err
    fine = tmp_path / "fine.toml"
    fine.write_text("[alerts.ib_call_spike]\nmin_calls_14d = 3\n")
    assert main(["config", "validate", str(fine)]) == 0
    assert "run` also needs CHURN_SQS_QUEUE_URL" in capsys.readouterr().out  # from the deployment's env
    for key, value in RUNNABLE.items():
        monkeypatch.setenv(key, value)
    assert main(["config", "validate", str(fine)]) == 0
    assert "also needs" not in capsys.readouterr().out


def test_config_show_prints_a_file_validate_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in RUNNABLE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CHURN_ALERTS__HIGH_CHURN_RISK__MIN_CHURN_RISK_30D", "0.7")
    monkeypatch.setenv("CHURN_KINESIS_START_TIMESTAMP", "2026-11-27T00:00:00+00:00")
    assert main(["config", "show"]) == 0
    shown = tmp_path / "shown.toml"
    shown.write_text(capsys.readouterr().out)
    for key in (
        *RUNNABLE,
        "CHURN_ALERTS__HIGH_CHURN_RISK__MIN_CHURN_RISK_30D",
        "CHURN_KINESIS_START_TIMESTAMP",
    ):
        monkeypatch.delenv(key)
    assert main(["config", "validate", str(shown)]) == 0
    again = load_settings(shown)
    assert again.alerts.high_churn_risk.min_churn_risk_30d == 0.7
    assert again.sqs_queue_url == RUNNABLE["CHURN_SQS_QUEUE_URL"]


def test_unreadable_and_non_utf8_files_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    latin = tmp_path / "latin.toml"
    latin.write_bytes('salt = "caf\xe9"\n'.encode("latin-1"))
    assert main(["config", "validate", str(latin)]) == 2
    assert f"config file {latin}: not UTF-8 text" in capsys.readouterr().err
    assert main(["config", "show", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: No such file or directory" in capsys.readouterr().err
    folder = tmp_path / "a-directory.toml"
    folder.mkdir()
    assert main(["config", "validate", str(folder)]) == 2
    assert "a-directory.toml" in capsys.readouterr().err
