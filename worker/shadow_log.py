"""The shadow log: where shadow-model alerts go (`worker.shadow`), never the retention topic.

- `SnsShadowLog`: `CHURN_SHADOW_TOPIC_ARN`, each record a message (JSON body, String attributes
  `alert_type`, `severity`, `arm` and `shadow` = `true`), `PublishBatch` by 10. A FIFO topic gets
  `MessageGroupId = customer_id` and `MessageDeduplicationId = alert_id`.
- `S3ShadowLog`: without a shadow topic, gzip JSON Lines in the archive bucket under `shadow/`,
  by UTC day of the alerts' `as_of` (`shadow/date=2026-11-27/<worker>-<first as_of>-<random>.jsonl.gz`,
  the archive's layout, so `features.s3events` lists them): records are buffered and written when
  1,000 have gathered or the oldest is a minute old (checked as records arrive), and on shutdown.
Best effort both: a failed write is counted by the caller and the records are dropped; the live
path never waits for it.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from plumbing.retry import error_text
from worker.alerts.exceptions import AlertPublishError
from worker.alerts.publisher import BATCH_SIZE, is_fifo
from worker.archive import parse_s3_uri, partition_key

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sns.type_defs import PublishBatchRequestEntryTypeDef

SHADOW_PREFIX = "shadow/"
FLUSH_SECONDS = 60.0
FLUSH_RECORDS = 1000


def shadow_uri(archive_uri: str) -> str:
    """`s3://bucket/anything/` -> `s3://bucket/shadow/`: the shadow log beside the event archive."""
    bucket, _ = parse_s3_uri(archive_uri)
    return f"s3://{bucket}/{SHADOW_PREFIX}"


class SnsShadowLog:
    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self._client = client
        self._topic_arn = topic_arn
        self._fifo = is_fifo(topic_arn)

    def _entry(self, entry_id: str, record: dict[str, Any]) -> PublishBatchRequestEntryTypeDef:
        attributes = {
            "alert_type": record["type"],
            "severity": record["severity"],
            "arm": record["arm"],
            "shadow": "true",
        }
        entry: PublishBatchRequestEntryTypeDef = {
            "Id": entry_id,
            "Message": json.dumps(record),
            "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        }
        if self._fifo:
            entry["MessageGroupId"] = record["customer_id"]
            entry["MessageDeduplicationId"] = record["alert_id"]
        return entry

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        failed: list[str] = []
        for start in range(0, len(records), BATCH_SIZE):
            chunk = records[start : start + BATCH_SIZE]
            try:
                response = await self._client.publish_batch(
                    TopicArn=self._topic_arn,
                    PublishBatchRequestEntries=[self._entry(str(i), r) for i, r in enumerate(chunk)],
                )
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                failed += [f"{r['alert_id']} ({error_text(exc)})" for r in chunk]
                continue
            failed += [
                f"{chunk[int(f['Id'])]['alert_id']} ({f.get('Code', 'Error')})"
                for f in response.get("Failed", [])
            ]
        if failed:
            raise AlertPublishError(
                f"{len(failed)} shadow alerts not published to {self._topic_arn}: " + ", ".join(failed[:5]),
                published=[],
                failed=[],
            )

    async def flush(self) -> None:
        return None


class S3ShadowLog:
    def __init__(
        self,
        client: S3Client,
        uri: str,
        writer: str,
        flush_seconds: float = FLUSH_SECONDS,
        flush_records: int = FLUSH_RECORDS,
    ) -> None:
        self._client = client
        self._bucket, self._prefix = parse_s3_uri(uri)
        self._writer = "".join(c if c.isalnum() or c in "-_." else "-" for c in writer) or "worker"
        self._flush_seconds = flush_seconds
        self._flush_records = flush_records
        self._buffer: list[dict[str, Any]] = []
        self._first_at: float | None = None
        self.objects_written = 0

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        if records and self._first_at is None:
            self._first_at = time.monotonic()
        self._buffer += records
        if self._first_at is not None and (
            len(self._buffer) >= self._flush_records
            or time.monotonic() - self._first_at >= self._flush_seconds
        ):
            await self.flush()

    async def flush(self) -> None:
        records, self._buffer, self._first_at = self._buffer, [], None
        by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_day[str(record["as_of"])[:10]].append(record)
        for day, group in sorted(by_day.items()):
            first = min(str(r["as_of"]) for r in group).replace(":", "")
            body = gzip.compress(
                "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in group).encode(), mtime=0
            )
            await self._client.put_object(
                Bucket=self._bucket,
                Key=partition_key(self._prefix, day, self._writer, first),
                Body=body,
                ContentType="application/x-ndjson",
                ContentEncoding="gzip",
            )
            self.objects_written += 1


@dataclass
class MemoryShadowLog:
    """The in-memory twin (tests): every record written, in order."""

    records: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False

    async def write(self, records: Sequence[dict[str, Any]]) -> None:
        if self.down:
            raise OSError("shadow log unreachable")
        self.records += records

    async def flush(self) -> None:
        return None
