"""The event archive: every accepted event, in S3, for retraining, backtests and replay.

`CHURN_ARCHIVE_S3_URI=s3://bucket/prefix/`. Each pipeline batch writes its accepted events (the
validated wire form, one JSON line each, gzip) as one object per UTC event date:

    s3://bucket/prefix/date=2026-11-27/<worker id>-<first event time>-<random>.jsonl.gz

The write happens after the store applied the batch and before its records are acknowledged, so
an acknowledged event is always archived: a crash or a failed write leaves the records to be
delivered again (and written again). The pipeline writes every accepted event of the batch, the
store's duplicates included: a duplicate in the store may be an event whose archive write never
happened (its worker died between the store commit and the archive write), and only its
redelivery can still archive it. Duplicates are therefore possible at write (a redelivered
batch, two workers on a redriven message) and are removed by `event_id` where the archive is read
(`churn-model train --events s3://...`, `churn-worker backtest`, `replay`, `outcomes`: the offline
readers count an event once per customer). Objects are never rewritten: no read-modify-write and
no locking. Partitioning by event date lets a retraining job read a period (`--since`) by prefix.

For Kinesis, Amazon Data Firehose reading the same stream can write the same layout without the
worker (infra/README.md): then leave `CHURN_ARCHIVE_S3_URI` unset.
"""

from __future__ import annotations

import gzip
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from botocore.exceptions import BotoCoreError, ClientError

from features.events import Event, event_to_json, format_utc
from plumbing.retry import raise_if_fatal
from worker.exceptions import ConfigError
from worker.ports import EventArchive

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.literals import BucketLocationConstraintType

__all__ = ["EventArchive", "MemoryEventArchive", "S3EventArchive", "encode", "parse_s3_uri", "partition_key"]


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix/` -> (bucket, "prefix/"); the prefix ends with a slash (or is empty)."""
    if not uri.startswith("s3://") or len(uri) <= len("s3://"):
        raise ConfigError(f"{uri!r}: expected s3://bucket/prefix/")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ConfigError(f"{uri!r}: expected s3://bucket/prefix/ (no bucket)")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def partition_key(prefix: str, date: str, writer: str, first_event: str) -> str:
    """The object key of one batch's events of one date: sortable by date, then time written."""
    return f"{prefix}date={date}/{writer}-{first_event}-{secrets.token_hex(4)}.jsonl.gz"


def _by_date(events: Sequence[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        grouped[event.occurred_at.strftime("%Y-%m-%d")].append(event)
    return grouped


def encode(events: Sequence[Event]) -> bytes:
    """One gzip member of JSON lines (mtime 0: the same events give the same bytes)."""
    text = "".join(event_to_json(event) + "\n" for event in events)
    return gzip.compress(text.encode(), mtime=0)


class S3EventArchive:
    """Writes to S3 with an open aiobotocore S3 client (retries are botocore's standard mode)."""

    def __init__(self, client: S3Client, uri: str, writer: str) -> None:
        self._client = client
        self._bucket, self._prefix = parse_s3_uri(uri)
        self._writer = "".join(c if c.isalnum() or c in "-_." else "-" for c in writer) or "worker"
        self.objects_written = 0

    async def write(self, events: Sequence[Event]) -> None:
        for date, group in sorted(_by_date(events).items()):
            first = format_utc(min(event.occurred_at for event in group)).replace(":", "")
            try:
                await self._client.put_object(
                    Bucket=self._bucket,
                    Key=partition_key(self._prefix, date, self._writer, first),
                    Body=encode(group),
                    ContentType="application/x-ndjson",
                    ContentEncoding="gzip",
                )
            except (ClientError, BotoCoreError) as exc:  # no such bucket, access denied: stop the worker
                raise_if_fatal(exc, f"event archive s3://{self._bucket}/{self._prefix}")
                raise
            self.objects_written += 1


@dataclass
class MemoryEventArchive:
    """The in-memory twin (tests): the objects it would have written, by key."""

    prefix: str = "archive/"
    objects: dict[str, bytes] = field(default_factory=dict)

    async def write(self, events: Sequence[Event]) -> None:
        for date, group in sorted(_by_date(events).items()):
            first = format_utc(min(event.occurred_at for event in group)).replace(":", "")
            self.objects[partition_key(self.prefix, date, "memory", first)] = encode(group)


async def ensure_bucket(client: S3Client, uri: str, region: str) -> bool:
    """Create the archive's bucket if it is missing (`churn-worker bootstrap`; the data-plane
    template makes a hardened one in production). True when it was created now."""
    bucket, _ = parse_s3_uri(uri)
    try:
        await client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        if region == "us-east-1":  # the one region that takes no location constraint
            await client.create_bucket(Bucket=bucket)
        else:
            await client.create_bucket(
                Bucket=bucket,
                CreateBucketConfiguration={
                    "LocationConstraint": cast("BucketLocationConstraintType", region)
                },
            )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
        return False
    return True
