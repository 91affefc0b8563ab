"""The event archive on moto's S3: the worker writes batches by event date, offline readers list
and read them back (with `since`), duplicates are written as they come; the pipeline archives
accepted events before acknowledging them, and a failed write sends the records back."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from aiobotocore.session import get_session

from features.events import Event, validate_event
from features.s3events import list_event_objects
from features.store import MemoryFeatureStore
from tests.fakes import NOW, FakeScorer, ListDlq
from tests.fakes import event as fake_event
from tests.fakes import record as fake_record
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.archive import MemoryEventArchive, S3EventArchive, parse_s3_uri
from worker.exceptions import ConfigError, FatalAwsError
from worker.pipeline import Pipeline


def _event(i: int, when: datetime) -> object:
    return validate_event(
        {
            "event_id": f"e-{i}",
            "customer_id": f"c-{i % 3}",
            "type": "login",
            "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


async def test_batches_land_by_event_date_and_read_back_in_key_order(
    aws_endpoint: str, unique_prefix: str
) -> None:
    bucket = f"{unique_prefix}archive"
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    day = datetime(2026, 11, 26, 23, 0, tzinfo=UTC)
    first = [_event(i, day + timedelta(minutes=40 * i)) for i in range(4)]  # 23:00 .. 01:00: two dates
    async with get_session().create_client("s3", region_name="us-east-1") as client:
        archive = S3EventArchive(client, f"s3://{bucket}/events", writer="worker-1")
        await archive.write(first)  # type: ignore[arg-type]
        await archive.write(first[:1])  # type: ignore[arg-type]  # a redelivered batch: written again
    objects = list_event_objects(f"s3://{bucket}/events/", client=s3)
    assert [o.key.split("/")[1] for o in objects] == ["date=2026-11-26", "date=2026-11-26", "date=2026-11-27"]
    lines = [
        json.loads(line) for o in objects for line in gzip.decompress(o.open_binary().read()).splitlines()
    ]
    assert sorted(line["event_id"] for line in lines) == ["e-0", "e-0", "e-1", "e-2", "e-3"]
    assert [
        o.key.split("/")[1]
        for o in list_event_objects(f"s3://{bucket}/events/", since="2026-11-27", client=s3)
    ] == ["date=2026-11-27"]


@pytest.mark.parametrize("uri", ["s3://", "bucket/prefix", "s3:///prefix"])
def test_a_bad_archive_uri_is_a_config_error(uri: str) -> None:
    with pytest.raises(ConfigError, match="s3://bucket/prefix/"):
        parse_s3_uri(uri)


class FlakyArchive(MemoryEventArchive):
    """The in-memory archive, failing while `down` (S3 unreachable)."""

    down: bool = False

    async def write(self, events: Sequence[Event]) -> None:
        if self.down:
            raise OSError("archive unreachable")
        await super().write(events)


def _archived_ids(archive: MemoryEventArchive) -> list[str]:
    return sorted(
        json.loads(line)["event_id"]
        for body in archive.objects.values()
        for line in gzip.decompress(body).splitlines()
    )


def _pipeline(archive: MemoryEventArchive) -> Pipeline:
    return Pipeline(
        store=MemoryFeatureStore(),
        scorer=FakeScorer(),
        ledger=MemoryAlertLedger(),
        publisher=MemoryAlertPublisher(),
        dlq=ListDlq(),
        alerts=AlertsConfig(),
        retention=timedelta(days=35),
        clock=lambda: NOW,
        archive=archive,
    )


async def test_the_pipeline_archives_accepted_events_before_acknowledging_them() -> None:
    archive = FlakyArchive()
    flow = _pipeline(archive)
    batch = [fake_event("c-1", "login", 1, 0), fake_event("c-2", "login", 0.5, 1), fake_record("not json", 2)]
    settlement = await flow.process(batch)
    assert [r.handle for r in settlement.done] == ["h0", "h1"] and len(settlement.quarantined) == 1
    assert _archived_ids(archive) == ["c-1-0", "c-2-1"]  # bad input is not archived (it is in the DLQ)

    archive.down = True  # S3 unreachable: the records come back, though the store has the events
    again = [fake_event("c-1", "login", 0.2, 3)]
    settlement = await flow.process(again)
    assert [r.handle for r in settlement.failed] == ["h3"] and not settlement.done
    assert flow.metrics.total("archive_failures") == 1
    archive.down = False  # the redelivery: a duplicate in the store, archived all the same
    settlement = await flow.process(again)
    assert [r.handle for r in settlement.done] == ["h3"]
    assert flow.metrics.total("events_duplicate") == 1
    assert _archived_ids(archive) == ["c-1-0", "c-1-3", "c-2-1"]


async def test_a_missing_archive_bucket_stops_the_worker(aws_endpoint: str, unique_prefix: str) -> None:
    async with get_session().create_client("s3", region_name="us-east-1") as client:
        flow = _pipeline(S3EventArchive(client, f"s3://{unique_prefix}missing/events/", writer="w"))
        with pytest.raises(FatalAwsError, match=r"event archive s3://.*missing/events/: NoSuchBucket"):
            await flow.process([fake_event("c-1", "login", 1, 0)])
