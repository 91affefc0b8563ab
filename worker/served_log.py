"""The served-feature log: a sample of what the live model scored, for skew, drift and calibration.

`CHURN_SERVED_SAMPLE` (a fraction, default 0.01) of the scored rows go, gzip JSON Lines, to the
archive bucket under `served/`, by UTC day of the scoring instant (the archive's layout, so
`features.s3events` lists them and `--since` reads a period by prefix):

    s3://<archive bucket>/served/date=2026-11-27/<worker>-<first as_of>-<random>.jsonl.gz

One record per sampled (customer, scoring): `customer_id`, `as_of` (ISO, microseconds: the skew
check recomputes features at exactly that instant), `trigger`, `model_version`, `feature_hash`,
`features` (the vector sent to the endpoint, registry order) and `outputs` (the scalar heads).

Sampling is deterministic by customer and UTC day (a hash, not a random draw): every worker, every
redelivery and every re-scoring of the day agree on who is in, so a sampled customer's rows of the
day are all there (a skew found on one row can be followed through the day) and a run is
reproducible. Across days the sample rotates, so no customer is watched forever.

Never on the live path's clock: `record` only appends to a bounded buffer and starts a background
flush; a full buffer drops the row and counts it (`served_rows_dropped`), a failed write drops the
records and counts them (`served_write_failures`). No archive configured: nothing is logged.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import structlog

from features.registry import FEATURE_HASH
from worker.archive import parse_s3_uri, partition_key
from worker.metrics import Metrics

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

    from worker.alerts.rules import Prediction

log = structlog.get_logger(__name__)

SERVED_PREFIX = "served/"
# The scalar heads a record keeps (the subject scores and attributions would triple its size).
OUTPUTS = (
    "churn_risk_14d",
    "churn_risk_30d",
    "first_session_success_prob",
    "predicted_session_velocity",
    "customer_health_score",
)
FLUSH_RECORDS = 1000
FLUSH_SECONDS = 60.0
MAX_BUFFERED = 20_000  # about 30 MB of records at 150 features: beyond, rows are dropped and counted
_SCALE = float(2**64)


def served_uri(archive_uri: str) -> str:
    """`s3://bucket/anything/` -> `s3://bucket/served/`: the log beside the event archive."""
    bucket, _ = parse_s3_uri(archive_uri)
    return f"s3://{bucket}/{SERVED_PREFIX}"


def is_sampled(customer_id: str, day: str, rate: float) -> bool:
    """Whether the customer's scorings of the UTC `day` (YYYY-MM-DD) are in the sample."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(f"{customer_id}/{day}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * _SCALE


def format_as_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode(records: Sequence[dict[str, Any]]) -> bytes:
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    return gzip.compress(text.encode(), mtime=0)


class ServedWriter(Protocol):
    async def write(self, day: str, records: Sequence[dict[str, Any]]) -> None: ...


class S3ServedWriter:
    def __init__(self, client: S3Client, uri: str, writer: str) -> None:
        self._client = client
        self._bucket, self._prefix = parse_s3_uri(uri)
        self._writer = "".join(c if c.isalnum() or c in "-_." else "-" for c in writer) or "worker"

    async def write(self, day: str, records: Sequence[dict[str, Any]]) -> None:
        first = min(str(r["as_of"]) for r in records).replace(":", "")
        await self._client.put_object(
            Bucket=self._bucket,
            Key=partition_key(self._prefix, day, self._writer, first),
            Body=encode(records),
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
        )


@dataclass
class MemoryServedWriter:
    """The in-memory twin (tests, bench): every record written, by day."""

    days: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    down: bool = False

    async def write(self, day: str, records: Sequence[dict[str, Any]]) -> None:
        if self.down:
            raise OSError("served log unreachable")
        self.days[day] += records


class ServedLog:
    """The sampler and its bounded buffer; the pipeline calls `record` after each scoring."""

    def __init__(
        self,
        writer: ServedWriter,
        rate: float,
        metrics: Metrics | None = None,
        flush_records: int = FLUSH_RECORDS,
        flush_seconds: float = FLUSH_SECONDS,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self._writer = writer
        self.rate = rate
        self._metrics = metrics or Metrics()
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._max_buffered = max_buffered
        self._buffer: list[dict[str, Any]] = []
        self._first_at: float | None = None
        self._flushing: asyncio.Task[None] | None = None

    def record(
        self,
        customers: Sequence[str],
        matrix: np.ndarray,
        predictions: Sequence[Prediction | None],
        as_of: datetime,
        trigger: str,
    ) -> None:
        """Sample the scored rows of one batch; returns at once (no I/O here)."""
        if self.rate <= 0.0:
            return
        day = as_of.astimezone(UTC).strftime("%Y-%m-%d")
        rows = [
            i
            for i, cid in enumerate(customers)
            if predictions[i] is not None and is_sampled(cid, day, self.rate)
        ]
        if not rows:
            return
        stamp = format_as_of(as_of)
        room = self._max_buffered - len(self._buffer)
        if len(rows) > room:  # under pressure the sample gives way, never the live path
            self._metrics.inc("served_rows_dropped", len(rows) - max(room, 0))
            rows = rows[: max(room, 0)]
        for i in rows:
            prediction = predictions[i]
            assert prediction is not None
            self._buffer.append(
                {
                    "customer_id": customers[i],
                    "as_of": stamp,
                    "trigger": trigger,
                    "model_version": prediction.model_version,
                    "feature_hash": prediction.feature_hash or FEATURE_HASH,
                    "features": matrix[i].tolist(),
                    "outputs": {name: getattr(prediction, name) for name in OUTPUTS},
                }
            )
        self._metrics.inc("served_rows_sampled", len(rows))
        if self._first_at is None:
            self._first_at = time.monotonic()
        if (
            len(self._buffer) >= self._flush_records
            or time.monotonic() - self._first_at >= self._flush_seconds
        ):
            self._start_flush()

    def _start_flush(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            return  # one write at a time; the buffer keeps filling up to its bound meanwhile
        records, self._buffer, self._first_at = self._buffer, [], None
        self._flushing = asyncio.get_running_loop().create_task(self._write(records))

    async def _write(self, records: list[dict[str, Any]]) -> None:
        by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            by_day[record["as_of"][:10]].append(record)
        for day, group in sorted(by_day.items()):
            try:
                await self._writer.write(day, group)
            except Exception as exc:  # best effort: a lost sample is a smaller sample
                self._metrics.inc("served_write_failures", len(group))
                log.warning("served-feature log write failed; rows dropped", error=str(exc), rows=len(group))
            else:
                self._metrics.inc("served_rows_written", len(group))

    async def close(self, grace: float = 3.0) -> None:
        """Write what is buffered, within `grace` seconds (on shutdown, after the live work)."""
        try:
            if self._flushing is not None:
                await asyncio.wait_for(asyncio.shield(self._flushing), grace)
            if self._buffer:
                self._start_flush()
                assert self._flushing is not None
                await asyncio.wait_for(self._flushing, grace)
        except TimeoutError:
            log.warning("served-feature log not flushed within the grace; rows dropped")
