"""Every argument is checked before any training or network work: a bad option, an input without
events, a bad first line or an output that cannot be written is a one-line exit 2 at once, never
after minutes of training the default bundle or a connection to AWS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.worker import build_parser, main

LOGIN = {"event_id": "e-1", "customer_id": "c-1", "type": "login", "occurred_at": "2026-03-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def no_training_no_aws(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Training the default bundle or making an AWS client fails the test loudly."""
    calls: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: object, **kwargs: object) -> Any:
            calls.append(what)
            raise AssertionError(f"{what} before the arguments were checked")

        return refused

    monkeypatch.setattr("jobs.training.ensure_default_bundle", refuse("trained the default bundle"))
    monkeypatch.setattr("cli.commands.backtest.bundle_dir_or_default", refuse("loaded the model"))
    monkeypatch.setattr("jobs.replay.AwsClients", refuse("made an AWS client"))
    monkeypatch.setattr("cli.commands.features.AwsClients", refuse("made an AWS client"))
    return calls


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("churn-worker: error: ")
    return err[0].removeprefix("churn-worker: error: ")


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(LOGIN) + "\n")
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "-1"], "--rate -1: must be 0"),
        (["--rate", "nan"], "--rate nan: must be 0"),
        (["--live-days", "40", "--days", "30"], "--live-days 40 is more than --days 30"),
        (["--events", "{tmp}/missing.jsonl"], "no such file or directory"),
        (["--events", "{tmp}/empty.jsonl"], "no events in"),
    ],
)
def test_local_checks_its_options_and_events_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    assert main(["local", *args]) == 2
    assert message in one_line_error(capsys)


def test_backtest_checks_its_input_before_the_default_bundle(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert main(["backtest", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys) == f"no events in {empty}"

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n" + json.dumps(LOGIN) + "\n")
    assert main(["backtest", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert one_line_error(capsys).startswith(f"{bad}:1: not_json: ")

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["backtest", str(events), "--out", str(a_file / "out")]) == 2
    assert one_line_error(capsys) == f"--out {a_file / 'out'}: cannot be made: {a_file} is not a directory"

    assert (
        main(["backtest", str(events), "--out", str(tmp_path / "out"), "--outcomes", str(tmp_path / "x")])
        == 2
    )
    assert "no such file" in one_line_error(capsys)


def test_tune_checks_where_it_writes_before_the_default_bundle(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = tmp_path / "outcomes.jsonl"
    outcomes.write_text(json.dumps({"customer_id": "c-1", "churned_at": None}) + "\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    out = a_file / "alerts.toml"
    assert main(["tune", str(events), "--outcomes", str(outcomes), "--out", str(out)]) == 2
    assert one_line_error(capsys).startswith("--out ")

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["tune", str(empty), "--outcomes", str(outcomes), "--out", str(tmp_path / "t.toml")]) == 2
    assert one_line_error(capsys) == f"no events in {empty}"


def test_outcomes_checks_its_output_before_reading(
    tmp_path: Path, events: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(["outcomes", "--events", str(events), "--out", str(a_file / "o.jsonl")]) == 2
    assert one_line_error(capsys) == f"--out {a_file}: exists and is not a directory"
    assert main(["outcomes", "--events", str(events), "--out", str(tmp_path)]) == 2
    assert one_line_error(capsys) == f"--out {tmp_path} is a directory: name the file to write"


def test_replay_and_features_find_empty_input_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURN_SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/events")
    empty = tmp_path / "empty.jsonl.gz"
    import gzip

    empty.write_bytes(gzip.compress(b""))
    assert main(["replay", str(empty), "--to", "sqs"]) == 2
    assert one_line_error(capsys) == f"no events in {empty}"
    assert main(["features", str(empty), "--as-of", "2026-03-02T00:00:00Z", "--store", "dynamodb"]) == 2
    assert one_line_error(capsys) == f"no events in {empty}"


@pytest.mark.parametrize("command", ["backtest", "tune"])
def test_help_says_the_default_bundle_is_trained_first(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[index]
    text = " ".join(sub.format_help().split())
    assert "trained first when it is missing: a few minutes" in text
    assert "s3://" in text and "directories" in text
