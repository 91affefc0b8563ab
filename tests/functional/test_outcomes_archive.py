"""`churn-worker outcomes` on an archive in moto's S3, written by the worker's own archive writer
(gzip JSON Lines by event date, a redelivered batch written twice): read back over HTTP, duplicates
counted once, `--since` leaving out older partitions, an unreadable prefix a one-line exit 2."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from aiobotocore.session import get_session

from cli.worker import main
from features.events import validate_event
from worker.archive import S3EventArchive

START = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def _event(eid: str, cid: str, kind: str, days: float) -> object:
    body = {
        "event_id": eid,
        "customer_id": cid,
        "type": kind,
        "occurred_at": (START + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if kind == "customer_signed_up":
        body["tier"] = "premium"
    return validate_event(body)


@pytest.fixture
async def archive_uri(aws_endpoint: str, unique_prefix: str) -> str:
    bucket = f"{unique_prefix}archive"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/events/"
    batches = [
        [
            _event("a1", "c-1", "customer_signed_up", 0),
            _event("b1", "c-2", "customer_signed_up", 0),
            _event("c1", "c-3", "customer_signed_up", 0),
        ],
        [_event("a2", "c-1", "login", 2), _event("b2", "c-2", "customer_churned", 3)],
        [_event("b3", "c-2", "customer_signed_up", 6), _event("c2", "c-3", "customer_churned", 8)],
    ]
    async with get_session().create_client("s3", region_name="us-east-1") as client:
        archive = S3EventArchive(client, uri, writer="worker-1")
        for batch in batches:
            await archive.write(batch)  # type: ignore[arg-type]
        await archive.write(batches[2])  # type: ignore[arg-type]  # redelivered: archived again
    return uri


def test_outcomes_of_an_s3_archive(
    archive_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "outcomes.jsonl"
    assert main(["outcomes", "--events", archive_uri, "--out", str(out), "--json"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"customer_id": "c-1", "churned_at": None},
        {"customer_id": "c-2", "churned_at": None},  # churned, then came back
        {"customer_id": "c-3", "churned_at": "2026-10-09T09:00:00Z"},
    ]
    summary = json.loads(capsys.readouterr().out)
    assert (summary["events"], summary["duplicates"], summary["churned"], summary["came_back"]) == (
        9,
        2,
        1,
        1,
    )
    assert summary["files"] == 7  # one object per batch and event date, the redelivery's included

    later = tmp_path / "later.jsonl"
    assert main(["outcomes", "--events", archive_uri, "--out", str(later), "--since", "2026-10-07"]) == 0
    assert [json.loads(line) for line in later.read_text().splitlines()] == [
        {"customer_id": "c-2", "churned_at": None},
        {"customer_id": "c-3", "churned_at": "2026-10-09T09:00:00Z"},
    ]


def test_an_empty_or_missing_prefix_is_exit_2(
    aws_endpoint: str, unique_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=f"{unique_prefix}empty")
    for uri in (f"s3://{unique_prefix}empty/events/", f"s3://{unique_prefix}absent/events/"):
        assert main(["outcomes", "--events", uri, "--out", str(tmp_path / "o.jsonl")]) == 2
        [error] = capsys.readouterr().err.strip().splitlines()
        assert error.startswith(f"churn-worker: error: {uri}")


async def test_an_archive_at_the_bucket_root_leaves_the_shadow_log_out(
    aws_endpoint: str, unique_prefix: str, tmp_path: Path
) -> None:
    import gzip

    bucket = f"{unique_prefix}root"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    async with get_session().create_client("s3", region_name="us-east-1") as client:
        await S3EventArchive(client, f"s3://{bucket}/", writer="w").write(
            [_event("x", "c-9", "customer_churned", 1)]
        )  # type: ignore[list-item]
    shadow_alert = {"alert_id": "a-1", "customer_id": "c-9", "alert_type": "HIGH_CHURN_RISK", "shadow": True}
    s3.put_object(
        Bucket=bucket,
        Key="shadow/date=2026-10-02/w-1.jsonl.gz",
        Body=gzip.compress((json.dumps(shadow_alert) + "\n").encode()),
    )
    out = tmp_path / "o.jsonl"
    assert (
        main(["outcomes", "--events", f"s3://{bucket}/", "--out", str(out)]) == 0
    )  # no bad line: stop would exit 2
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"customer_id": "c-9", "churned_at": "2026-10-02T09:00:00Z"}
    ]
