"""One reading of event paths for every command that reads events: a file, a directory, a glob or an
`s3://bucket/prefix/` (moto's server), several at once, `.jsonl`, `.jsonl.gz` and `.parquet`,
duplicates by event_id counted once: `features`, `replay`, `backtest` (in process and on Dask
workers), `tune` and `local --events` give what the same events in one file give."""

from __future__ import annotations

import asyncio
import gzip
import json
import pickle
from collections import defaultdict
from pathlib import Path

import boto3
import pytest
from aiobotocore.session import get_session

from cli.commands.local import load_events
from cli.worker import main
from features.eventfile import event_sources
from features.s3events import S3EventObject
from jobs.backtest.runner import BacktestOptions, run_backtest
from jobs.backtest.scorer import GivenScorer, InProcessScorer
from model.simulator import simulate, write_simulation
from tests.fakes import FeatureScorer

AS_OF = "2026-11-27T12:00:00Z"
SAMPLE = Path(__file__).resolve().parents[2] / "features" / "data" / "sample_events.jsonl"


def put_objects(bucket: str, objects: dict[str, bytes]) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def split_lines(text: str, parts: int) -> list[str]:
    lines = text.splitlines(keepends=True)
    size = -(-len(lines) // parts)
    return ["".join(lines[i : i + size]) for i in range(0, len(lines), size)]


@pytest.fixture(scope="module")
def sim_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("paths")
    return write_simulation(simulate(customers=30, days=35, seed=21), out / "sim.jsonl")


def spread(events: Path, where: Path) -> Path:
    """The log's lines in three files of a directory (plain, gzip, and a copy of some lines):
    customers' events cross files, and 40 events are there twice."""
    first, second, third = split_lines(events.read_text(), 3)
    where.mkdir(parents=True, exist_ok=True)
    (where / "part-1.jsonl").write_text(first)
    (where / "part-2.jsonl.gz").write_bytes(gzip.compress(second.encode()))
    (where / "part-3.jsonl").write_text(third + "".join(first.splitlines(keepends=True)[:40]))
    return where


def features_of(capsys: pytest.CaptureFixture[str], *paths: object) -> list[dict[str, object]]:
    assert main(["features", *map(str, paths), "--as-of", AS_OF, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_features_reads_directories_globs_and_s3_prefixes(
    aws_endpoint: str, unique_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = features_of(capsys, SAMPLE)
    text = SAMPLE.read_text()
    first, second = split_lines(text, 2)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text(first + second.splitlines(keepends=True)[0])  # one duplicate
    (tmp_path / "d" / "b.jsonl.gz").write_bytes(gzip.compress(second.encode()))
    assert features_of(capsys, tmp_path / "d") == expected
    assert features_of(capsys, f"{tmp_path}/d/*.jsonl*") == expected
    assert features_of(capsys, tmp_path / "d" / "a.jsonl", tmp_path / "d" / "b.jsonl.gz") == expected

    bucket = f"{unique_prefix}events"
    put_objects(bucket, {"log/a.jsonl": first.encode(), "log/b.jsonl.gz": gzip.compress(second.encode())})
    assert features_of(capsys, f"s3://{bucket}/log/") == expected


def test_replay_reads_files_in_order_and_sends_each_event_id_once(
    aws_endpoint: str,
    unique_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def lines(first: int, last: int) -> str:
        return "".join(
            json.dumps(
                {
                    "event_id": f"c{c}-{n}",
                    "customer_id": f"c{c}",
                    "type": "login",
                    # later files hold later events, but not every line is later than the one before
                    "occurred_at": f"2026-03-01T{n:02d}:{(7 * c) % 60:02d}:00Z",
                }
            )
            + "\n"
            for n in range(first, last)
            for c in range(3)
        )

    early, late = lines(0, 10), lines(10, 20)
    duplicate = early.splitlines(keepends=True)[4]  # c1-1, sent again by a second writer
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "2026-03-01a.jsonl").write_text(early)
    (tmp_path / "log" / "2026-03-01b.jsonl.gz").write_bytes(gzip.compress((duplicate + late).encode()))
    bucket = f"{unique_prefix}archive"
    put_objects(
        bucket,
        {
            "events/date=2026-03-01/a.jsonl": early.encode(),
            "events/date=2026-03-01/b.jsonl": (duplicate + late).encode(),
        },
    )

    async def make_queue(name: str) -> str:
        async with get_session().create_client("sqs", region_name="us-east-1") as sqs:
            url: str = (await sqs.create_queue(QueueName=f"{unique_prefix}{name}"))["QueueUrl"]
            return url

    async def drain(url: str) -> dict[str, list[str]]:
        received: dict[str, list[str]] = defaultdict(list)
        async with get_session().create_client("sqs", region_name="us-east-1") as sqs:
            while messages := (
                await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            ).get("Messages", []):
                for m in messages:
                    body = json.loads(m["Body"])
                    received[body["customer_id"]].append(body["event_id"])
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                    ],
                )
        return received

    for name, path in (("dir", str(tmp_path / "log")), ("s3", f"s3://{bucket}/events/")):
        url = asyncio.run(make_queue(name))
        monkeypatch.setenv("CHURN_SQS_QUEUE_URL", url)
        assert main(["replay", path, "--to", "sqs", "--json"]) == 0, name
        summary = json.loads(capsys.readouterr().out)
        assert (summary["sent"], summary["duplicates"]) == (60, 1), name
        received = asyncio.run(drain(url))
        assert received == {f"c{c}": [f"c{c}-{n}" for n in range(20)] for c in range(3)}, name


def test_s3_event_objects_travel_to_other_processes_without_their_client(
    aws_endpoint: str, unique_prefix: str
) -> None:
    bucket = f"{unique_prefix}events"
    put_objects(bucket, {"log/a.jsonl": SAMPLE.read_bytes()})
    [source] = event_sources(f"s3://{bucket}/log/")
    assert isinstance(source, S3EventObject) and source.client is not None
    copy = pickle.loads(pickle.dumps(source))
    assert (copy.bucket, copy.key, copy.client, copy.size) == (
        bucket,
        "log/a.jsonl",
        None,
        len(SAMPLE.read_bytes()),
    )
    with copy.open_binary() as handle:
        assert handle.read() == SAMPLE.read_bytes()


def test_backtest_reads_many_files_and_s3_objects_in_process_and_on_dask(
    aws_endpoint: str,
    unique_prefix: str,
    sim_log: dict[str, Path],
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In process the model is a fake that follows the features (no TensorFlow: the reading is the point).
    monkeypatch.setattr(InProcessScorer, "from_bundle_dir", classmethod(lambda cls, path: FeatureScorer()))
    monkeypatch.setattr(
        "jobs.backtest.scorer._LOADED", {}
    )  # neither a model loaded before nor the fake after
    events = sim_log["events"]
    directory = spread(events, tmp_path / "log")
    bucket = f"{unique_prefix}archive"
    put_objects(bucket, {f"events/{p.name}": p.read_bytes() for p in sorted(directory.iterdir())})

    def backtest(name: str, *args: object) -> bytes:
        out = tmp_path / name
        common = ["--bundle", tiny_bundle, "--outcomes", sim_log["outcomes"], "--out", out, "--shards", 4]
        assert main(["backtest", *map(str, args), *map(str, common), "--workers", "1"]) == 0, name
        return (out / "alerts.jsonl").read_bytes()

    expected = backtest("one-file", events)
    assert expected.strip()
    assert backtest("dir", directory) == expected
    assert backtest("s3", f"s3://{bucket}/events/") == expected
    report = json.loads((tmp_path / "s3" / "report.json").read_text())
    assert report["events"]["duplicates"] == 40

    # Dask workers: every S3 object is read by another process, which builds its own client.
    options = BacktestOptions(progress=False, shards=4, workers=2)
    sources = event_sources(f"s3://{bucket}/events/")
    asyncio.run(run_backtest(sources, GivenScorer(FeatureScorer()), tmp_path / "dask.jsonl", options))
    assert (tmp_path / "dask.jsonl").read_bytes() == expected


def test_tune_reads_an_s3_prefix(
    aws_endpoint: str,
    unique_prefix: str,
    sim_log: dict[str, Path],
    tiny_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(InProcessScorer, "from_bundle_dir", classmethod(lambda cls, path: FeatureScorer()))
    monkeypatch.setattr(
        "jobs.backtest.scorer._LOADED", {}
    )  # neither a model loaded before nor the fake after
    bucket = f"{unique_prefix}archive"
    put_objects(
        bucket,
        {f"events/{p.name}": p.read_bytes() for p in spread(sim_log["events"], tmp_path / "log").iterdir()},
    )

    def tune(events: object, out: Path) -> str:
        args = [str(events), "--outcomes", str(sim_log["outcomes"]), "--bundle", str(tiny_bundle)]
        assert main(["tune", *args, "--out", str(out), "--workers", "1"]) == 0
        capsys.readouterr()
        return "\n".join(line for line in out.read_text().splitlines() if not line.startswith("#"))

    assert tune(f"s3://{bucket}/events/", tmp_path / "s3.toml") == tune(
        sim_log["events"], tmp_path / "file.toml"
    )


def test_local_events_read_every_kind_of_path_each_event_once(
    aws_endpoint: str, unique_prefix: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC).replace(microsecond=0)
    lines = [
        json.dumps(
            {
                "event_id": f"e-{i}",
                "customer_id": f"c-{i % 3}",
                "type": "login",
                "occurred_at": (now - timedelta(hours=10 - i)).isoformat().replace("+00:00", "Z"),
            }
        )
        + "\n"
        for i in range(10)
    ]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.jsonl").write_text("".join(lines[:6]))
    (tmp_path / "d" / "a.jsonl.gz").write_bytes(gzip.compress("".join(lines[4:]).encode()))  # e-4, e-5 twice
    bucket = f"{unique_prefix}events"
    put_objects(
        bucket, {"log/x.jsonl": "".join(lines[:6]).encode(), "log/y.jsonl": "".join(lines[6:]).encode()}
    )
    expected = [f"e-{i}" for i in range(10)]
    for paths in ([str(tmp_path / "d")], [f"{tmp_path}/d/*"], [f"s3://{bucket}/log/"]):
        assert [e.event_id for e in load_events(0, 0, 0, paths)] == expected, paths
