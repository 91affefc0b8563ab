"""One UsageError: bad usage or input exits 2 from every command, whichever package noticed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.commands.bootstrap import check_redrive
from cli.worker import main
from worker.exceptions import ConfigError
from worker.settings import Settings
from worker.sources.sqs import redrive_after_seconds

SAMPLE = Path(__file__).resolve().parents[2] / "features" / "data" / "sample_events.jsonl"


def test_a_missing_model_bundle_is_bad_usage_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["backtest", str(SAMPLE), "--out", str(tmp_path / "out"), "--bundle", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("churn-worker: error: no model bundle at")


def test_a_missing_event_file_and_a_bad_config_are_bad_usage_exit_2(tmp_path: Path) -> None:
    assert main(["features", str(tmp_path / "none.jsonl"), "--as-of", "2026-11-27T00:00:00Z"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[alerts.ib_call_spike]\nmin_calls_14d = -1\n")
    assert main(["config", "validate", str(bad)]) == 2


def test_the_redrive_count_is_bounded_by_the_queue_retention() -> None:
    # The defaults: 50 deliveries with the worker's growing back-off take about 10.6 h, well inside 4 days.
    defaults = Settings()
    seconds = redrive_after_seconds(defaults.sqs_max_receive_count, defaults.sqs_visibility_timeout)
    assert 10 * 3600 < seconds < 12 * 3600
    check_redrive(defaults)
    with pytest.raises(ConfigError, match="CHURN_SQS_MAX_RECEIVE_COUNT=500"):
        check_redrive(Settings(sqs_max_receive_count=500))  # about 5 days of retries: messages would expire
    check_redrive(Settings(sqs_max_receive_count=500, sqs_retention_seconds=1_209_600))
