"""Event files to event-time batches of pipeline records, streamed (never the whole file in memory).

The pipeline validates every record itself, as it does live; reading a JSON Lines file here costs
one `json.loads` per line, only to learn the event time that decides the batch. A line that is not
JSON cannot be placed in time and is reported here, with its line number; any other problem with a
line is the pipeline's to find (the in-memory dead-letter queue records it under the same number).
Parquet rows come through `features.eventfile.read_source` (validated, then re-serialised in
the wire form producers send).

Batches follow event time: a batch ends where the next event falls in a later window of
`window_us` (UTC-aligned: 1 hour = hours of the day, 24 hours = UTC days), or at `max_events`.
Each batch is processed at the end of its window (its last microsecond), so the instant a customer
is scored depends on the window alone, never on other customers' events: with daily windows that
is the day-end scoring instant of `features.activity`, the instant re-scoring and training use.
Files in time order (as `churn-model simulate` writes them) give the live worker's view at that
cadence; a late line is processed with the batch it arrives in, as a late message would be live.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.eventfile import JSONL_SUFFIXES, EventSource, LocalEventFile, open_text, read_source
from features.events import event_to_json, loads_json, unwrap_envelope
from features.exceptions import EventParseError
from features.state import DAY_US, parse_iso_us, to_us
from worker.ports import Record

HOUR_US = DAY_US // 24
DEFAULT_WINDOW_US = DAY_US  # one batch per UTC day of events: see `churn-worker backtest --help`
DEFAULT_MAX_EVENTS = 50_000


@dataclass(frozen=True)
class BadLine:
    number: int
    error_code: str
    error_detail: str

    def describe(self, path: Path) -> str:
        return f"{path}:{self.number}: {self.error_code}: {self.error_detail}"


@dataclass
class Line:
    number: int
    body: bytes
    occurred_us: int | None  # None: no usable time; the pipeline will say what is wrong


@dataclass
class Batch:
    records: list[Record] = field(default_factory=list)
    latest_us: int | None = None  # the latest event time in the batch
    earliest_us: int | None = None
    window_end_us: int | None = (
        None  # the last microsecond of its (latest) window: the clock to process it at
    )


def _occurred_us(obj: Any) -> int | None:
    """The event time as the pipeline will read it (ISO-8601 with an offset), or None."""
    try:
        value = unwrap_envelope(obj).get("occurred_at")
    except (EventParseError, AttributeError):
        return None
    if not isinstance(value, str):
        return None
    try:
        return parse_iso_us(value)
    except ValueError:
        return None


def read_lines(path: Path | EventSource) -> Iterator[Line | BadLine]:
    """Each non-blank line (or Parquet row) of one event file, local or in S3 (an `EventSource`
    from `features.eventfile.event_sources`), with its number, in file order."""
    source: EventSource = LocalEventFile(path) if isinstance(path, Path) else path
    if source.is_parquet:
        yield from _read_parquet(source)
        return
    if not source.name.lower().endswith(JSONL_SUFFIXES):
        raise EventParseError("unknown_format", f"{source.name}: expected .jsonl, .jsonl.gz or .parquet")
    with open_text(source) as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                obj = loads_json(text)
            except json.JSONDecodeError as exc:
                yield BadLine(number, "not_json", f"body is not JSON: {exc}")
                continue
            yield Line(number, text.rstrip("\r\n").encode(), _occurred_us(obj))


def _read_parquet(source: EventSource) -> Iterator[Line | BadLine]:
    for number, item in read_source(source):
        if isinstance(item, EventParseError):
            yield BadLine(number, item.error_code, item.error_detail)
        else:
            yield Line(number, event_to_json(item).encode(), to_us(item.occurred_at))


def time_batches(
    items: Iterator[Line | BadLine],
    window_us: int = DEFAULT_WINDOW_US,
    max_events: int = DEFAULT_MAX_EVENTS,
    flush_on_bad: bool = False,
) -> Iterator[Batch | BadLine]:
    """Group lines into event-time batches; bad lines pass through as they come. `flush_on_bad`
    yields the pending batch before a bad line (a run that stops there first processes, and so
    checks, every line before it); otherwise a skipped line leaves the batches as they would be
    without it."""
    if window_us <= 0 or max_events <= 0:
        raise ValueError("window_us and max_events must be positive")
    batch = Batch()
    key: int | None = None
    for item in items:
        if isinstance(item, BadLine):
            if flush_on_bad and batch.records:
                yield _closed(batch, key, window_us)
                batch, key = Batch(), None
            yield item
            continue
        item_key = None if item.occurred_us is None else item.occurred_us // window_us
        if batch.records and (
            len(batch.records) >= max_events or (item_key is not None and key is not None and item_key > key)
        ):
            yield _closed(batch, key, window_us)
            batch, key = Batch(), None
        if item_key is not None:
            key = item_key if key is None else key
            assert item.occurred_us is not None
            batch.latest_us = (
                item.occurred_us if batch.latest_us is None else max(batch.latest_us, item.occurred_us)
            )
            batch.earliest_us = (
                item.occurred_us if batch.earliest_us is None else min(batch.earliest_us, item.occurred_us)
            )
        batch.records.append(Record(body=item.body, handle=item.number, source_id=f"line {item.number}"))
    if batch.records:
        yield _closed(batch, key, window_us)


def _closed(batch: Batch, key: int | None, window_us: int) -> Batch:
    """The batch with its window's end set (None when no line in it had a usable time)."""
    batch.window_end_us = None if key is None else (key + 1) * window_us - 1
    return batch
