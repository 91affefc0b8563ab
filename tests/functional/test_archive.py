"""The event archive on moto's S3: the worker writes batches by event date, offline readers list
and read them back (with `since`), duplicates are written as they come."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from aiobotocore.session import get_session

from features.events import validate_event
from features.s3events import list_event_objects
from worker.archive import S3EventArchive, parse_s3_uri
from worker.exceptions import ConfigError


def _event(i: int, when: datetime) -> object:
    return validate_event({"event_id": f"e-{i}", "customer_id": f"c-{i % 3}", "type": "login",
                           "occurred_at": when.strftime("%Y-%m-%dT%H:%M:%SZ")})  # fmt: skip


async def test_batches_land_by_event_date_and_read_back_in_key_order(aws_endpoint: str, unique_prefix: str) -> None:
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
    lines = [json.loads(line) for o in objects for line in gzip.decompress(o.open_binary().read()).splitlines()]
    assert sorted(line["event_id"] for line in lines) == ["e-0", "e-0", "e-1", "e-2", "e-3"]
    assert [o.key.split("/")[1] for o in list_event_objects(f"s3://{bucket}/events/", since="2026-11-27",
                                                            client=s3)] == ["date=2026-11-27"]  # fmt: skip


@pytest.mark.parametrize("uri", ["s3://", "bucket/prefix", "s3:///prefix"])
def test_a_bad_archive_uri_is_a_config_error(uri: str) -> None:
    with pytest.raises(ConfigError, match="s3://bucket/prefix/"):
        parse_s3_uri(uri)
