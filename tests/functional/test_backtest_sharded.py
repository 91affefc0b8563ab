"""A backtest split by customer: byte-identical outputs for any number of workers and shards, a
killed Dask worker's shard run again, bad lines named by file and line whichever shard read them."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.worker import main
from jobs.backtest.runner import BacktestOptions, run_backtest
from jobs.backtest.scorer import BundleScorer
from model.simulator import simulate, write_simulation

OUTPUTS = ("alerts.jsonl", "report.json")


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("sharded")
    return write_simulation(simulate(customers=30, days=35, seed=21), out / "sim.jsonl")


def run_cli(*args: object) -> int:
    return main(["backtest", *map(str, args)])


def test_one_two_workers_and_any_shard_count_give_the_same_bytes(
    sim_log: dict[str, Path], tiny_bundle: Path, tmp_path: Path
) -> None:
    runs = {
        "w1-s1": ("--workers", 1, "--shards", 1),
        "w1-s8": ("--workers", 1, "--shards", 8),
        "w2-s4": ("--workers", 2, "--shards", 4),
    }
    config = tmp_path / "experiment.toml"  # the A/B holdout's arms must not depend on the split either
    config.write_text("[experiment]\ncontrol_fraction = 0.5\n")
    for name, extra in runs.items():
        assert (
            run_cli(
                sim_log["events"],
                "--outcomes",
                sim_log["outcomes"],
                "--bundle",
                tiny_bundle,
                "--out",
                tmp_path / name,
                "--config",
                config,
                *extra,
            )
            == 0
        )
    first = tmp_path / "w1-s1"
    assert (first / "alerts.jsonl").read_text().strip()  # something to compare
    arms = {json.loads(line)["arm"] for line in (first / "alerts.jsonl").read_text().splitlines()}
    assert arms == {"treatment", "control"}
    for name in runs:
        for output in OUTPUTS:
            assert (tmp_path / name / output).read_bytes() == (first / output).read_bytes(), (name, output)


@dataclass(frozen=True)
class DieOnceScorer:
    """A scorer factory that kills its Dask worker process the first time a given shard opens it,
    as an out-of-memory kill would; Dask must run the shard again on a fresh worker."""

    inner: BundleScorer
    marker_dir: str

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Any]:
        marker = Path(self.marker_dir) / "died"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(137)
        async with self.inner.open() as scorer:
            yield scorer


async def test_a_worker_killed_mid_run_is_retried_with_the_same_result(
    sim_log: dict[str, Path], tiny_bundle: Path, tmp_path: Path
) -> None:
    options = BacktestOptions(progress=False, shards=4)
    await run_backtest(sim_log["events"], BundleScorer(str(tiny_bundle)), tmp_path / "calm.jsonl", options)
    dying = DieOnceScorer(BundleScorer(str(tiny_bundle)), str(tmp_path))
    options = BacktestOptions(progress=False, shards=4, workers=2)
    await run_backtest(sim_log["events"], dying, tmp_path / "killed.jsonl", options)
    assert (tmp_path / "died").exists()
    assert (tmp_path / "killed.jsonl").read_bytes() == (tmp_path / "calm.jsonl").read_bytes()


def test_bad_lines_are_named_by_file_and_line_whatever_shard_read_them(
    sim_log: dict[str, Path], tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = sim_log["events"].read_text().splitlines()
    lines.insert(99, "{not json")
    lines.insert(
        999,
        json.dumps(
            {
                "event_id": "x",
                "customer_id": "c-9",
                "type": "teleported",
                "occurred_at": "2026-01-05T00:00:00Z",
            }
        ),
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert (
        run_cli(bad, "--bundle", tiny_bundle, "--out", tmp_path / "stop", "--workers", 1, "--shards", 4) == 2
    )
    assert "bad.jsonl:100: not_json" in capsys.readouterr().err
    assert (
        run_cli(
            bad,
            "--bundle",
            tiny_bundle,
            "--out",
            tmp_path / "skip",
            "--workers",
            1,
            "--shards",
            4,
            "--on-error",
            "skip",
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "bad.jsonl:100: skipped: not_json" in err and "bad.jsonl:1000: skipped: unknown_type" in err
    report = json.loads((tmp_path / "skip" / "report.json").read_text())
    assert report["events"]["bad_lines_skipped"] == 2
