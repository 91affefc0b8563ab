"""One meaning for input without events (exit 2, `no events in PATH`, whichever command reads it), a
missing AWS credential named with its resource (exit 2, never retried), and `churn-model evaluate`
naming the real cause when every customer of a log was in the bundle's training data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.worker import main
from jobs.replay import ReplayRequest, run_replay
from plumbing.exceptions import FatalAwsError, UsageError
from worker.settings import Settings

AS_OF = "2026-03-02T00:00:00Z"
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
HINT = (
    "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run on a role)"
)
LOGIN = {"event_id": "e-1", "customer_id": "c-1", "type": "login", "occurred_at": "2026-03-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Input is checked before the model: loading (or training) one here would be a regression."""

    def refused(*args: object, **kwargs: object) -> Any:
        raise AssertionError("loaded the model before the input was checked")

    monkeypatch.setattr("cli.commands.backtest.bundle_dir_or_default", refused)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("churn-worker: error: ")
    return err[0].removeprefix("churn-worker: error: ")


@pytest.mark.parametrize("content", ["", "\n  \n"])
@pytest.mark.parametrize(
    "command",
    [
        ["features", "{path}", "--as-of", AS_OF],
        ["replay", "{path}", "--to", "sqs"],
        ["outcomes", "--events", "{path}", "--out", "{tmp}/outcomes.jsonl"],
        ["backtest", "{path}", "--out", "{tmp}/out"],
    ],
    ids=lambda command: command[0],
)
def test_empty_input_is_exit_2_no_events_in_path_everywhere(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    content: str,
) -> None:
    monkeypatch.setenv("CHURN_SQS_QUEUE_URL", QUEUE)
    path = tmp_path / "events.jsonl"
    path.write_text(content)
    args = [arg.replace("{path}", str(path)).replace("{tmp}", str(tmp_path)) for arg in command]
    assert main(args) == 2
    assert one_line_error(capsys) == f"no events in {path}"


@pytest.mark.parametrize(
    "command",
    [["features", "{path}", "--as-of", AS_OF], ["replay", "{path}", "--to", "sqs"]],
    ids=lambda command: command[0],
)
def test_only_bad_lines_skipped_is_no_events_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.setenv("CHURN_SQS_QUEUE_URL", QUEUE)
    path = tmp_path / "events.jsonl"
    path.write_text("{not json\n" + json.dumps({**LOGIN, "type": "teleported"}) + "\n")
    args = [arg.replace("{path}", str(path)) for arg in command]
    assert main([*args, "--on-error", "skip"]) == 2
    assert one_line_error(capsys).startswith(
        f"no events in {path}: 2 bad lines skipped, the first {path}:1: not_json"
    )
    assert main(args) == 2  # stopping at the first bad line says more
    assert one_line_error(capsys).startswith(f"{path}:1: not_json")


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to look for either
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing may be sent anywhere
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session of an earlier test keeps its credentials


async def test_replay_without_credentials_stops_at_once_naming_the_queue(
    no_credentials: None, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({**LOGIN, "event_id": f"e-{i}"}) + "\n" for i in range(30)))
    calls: list[int] = []

    class Counting:
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        async def send_message_batch(self, **kwargs: Any) -> Any:
            calls.append(len(kwargs["Entries"]))
            return await self._client.send_message_batch(**kwargs)

    with pytest.raises(FatalAwsError) as caught:
        await run_replay(Settings(sqs_queue_url=QUEUE), ReplayRequest(path, "sqs"), wrap_client=Counting)
    assert str(caught.value) == f"SQS queue {QUEUE}: {HINT}"
    assert isinstance(caught.value, UsageError)
    assert calls == [1]  # one customer: its first event, tried once, never again


@pytest.mark.parametrize(
    ("command", "resource"),
    [
        (["replay", "{path}", "--to", "sqs"], f"SQS queue {QUEUE}"),
        (["replay", "{path}", "--to", "kinesis"], "Kinesis stream events"),
        (["features", "{path}", "--as-of", AS_OF, "--store", "dynamodb"], "feature table churn-features"),
        (["bootstrap"], "DynamoDB table churn-features"),
        (
            ["outcomes", "--events", "s3://archive/events/", "--out", "{tmp}/o.jsonl"],
            "S3 prefix s3://archive/events/",
        ),
        (["alerts", "tail", "--timeout", "5"], "SNS topic arn:aws:sns:us-east-1:123456789012:alerts"),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else "",
)
def test_a_missing_credential_is_exit_2_naming_the_resource(
    no_credentials: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    resource: str,
) -> None:
    monkeypatch.setenv("CHURN_SQS_QUEUE_URL", QUEUE)
    monkeypatch.setenv("CHURN_KINESIS_STREAM", "events")
    monkeypatch.setenv("CHURN_ALERTS_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:alerts")
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(LOGIN) + "\n")
    args = [arg.replace("{path}", str(path)).replace("{tmp}", str(tmp_path)) for arg in command]
    assert main(args) == 2
    assert one_line_error(capsys) == f"{resource}: {HINT}"


def test_evaluate_on_a_log_of_training_customers_names_the_cause(tmp_path: Path) -> None:
    from model.exceptions import DataError
    from tests.unit.test_owndata_examples import evaluation, hand_made_log, outcomes, write

    events = write(tmp_path / "events.jsonl", hand_made_log())
    known = outcomes(tmp_path / "outcomes.jsonl", {"c1": "2026-02-16T12:00:00Z", "c2": None, "c3": None})
    with pytest.raises(DataError) as caught:
        evaluation(events, known, excluded=frozenset({"c1", "c2", "c3"}))
    message = str(caught.value)
    assert "every customer of the log (3) was in the bundle's training data" in message
    assert "--include-training-customers" in message
    assert "no active customer" not in message
    examples, _ = evaluation(events, known, excluded=frozenset({"c1", "c2"}))  # c3 is measured
    assert set(examples.customer) == {"c3"}  # type: ignore[attr-defined]


def test_training_customers_are_named_as_a_part_of_the_cause_when_others_remain(tmp_path: Path) -> None:
    from model.exceptions import DataError
    from tests.unit.test_owndata_examples import evaluation, event, outcomes, write

    # c1 is active for days but a training customer; c9 churns the day it arrives: not active at its end.
    events = [
        event("c1", "login", 0.5, 0),
        event("c9", "login", 50.0, 1),
        event("c9", "customer_churned", 50.1, 2),
    ]
    path = write(tmp_path / "events.jsonl", events)
    with pytest.raises(DataError) as caught:
        evaluation(path, outcomes(tmp_path / "o.jsonl", {}), excluded=frozenset({"c1"}))
    assert str(caught.value) == (
        "no active customer at any scoring instant of the log: nothing to learn or measure (1 of its 2 "
        "customers were in the bundle's training data and left out: --include-training-customers keeps them)"
    )


def test_the_worker_without_credentials_exits_2_naming_what_it_could_not_reach(
    no_credentials: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.worker import main as worker_main

    for key, value in {
        "CHURN_SQS_QUEUE_URL": QUEUE,
        "CHURN_DLQ_URL": QUEUE + "-dlq",
        "CHURN_ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:alerts",
        "CHURN_HEALTH_PORT": "0",
    }.items():
        monkeypatch.setenv(key, value)
    assert worker_main(["run"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("churn-worker: error: ") and HINT in error
