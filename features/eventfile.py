"""Reading event files: JSON Lines (`.jsonl`, `.jsonl.gz`) and Parquet, streamed, never loaded whole.

`read_event_file` yields `(line_number, event_or_error)`: a bad line is reported with its line number
and the caller decides whether to skip it or stop.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from features.events import Event, parse_event, validate_event
from features.exceptions import EventParseError

PARQUET_BATCH_ROWS = 8192


def read_event_file(path: Path) -> Iterator[tuple[int, Event | EventParseError]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _read_parquet(path)
    elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz")):
        yield from _read_jsonl(path)
    else:
        raise EventParseError("unknown_format", f"{path}: expected .jsonl, .jsonl.gz or .parquet")


def _open_text(path: Path) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _read_jsonl(path: Path) -> Iterator[tuple[int, Event | EventParseError]]:
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, parse_event(line)
            except EventParseError as exc:
                yield number, exc


def _read_parquet(path: Path) -> Iterator[tuple[int, Event | EventParseError]]:
    import pyarrow.parquet as pq  # only Parquet users pay for the import

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            try:
                yield number, validate_event(_drop_nulls(row))
            except EventParseError as exc:
                yield number, exc


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet has one column per field of any type; a field absent from an event reads as null."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if hasattr(value, "isoformat") and key == "occurred_at":
            value = value.isoformat()  # timestamp columns: keep the strict ISO path
        out[key] = value
    return out


def write_jsonl(path: Path, lines: list[str]) -> None:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
        handle.flush()


__all__ = ["read_event_file", "write_jsonl"]
