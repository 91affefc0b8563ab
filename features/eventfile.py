"""Reading event files: JSON Lines (`.jsonl`, `.jsonl.gz`) and Parquet, streamed, never loaded whole.

An *event path* (docs/contracts.md, Outcomes files) is a file, a directory (every event file under
it, in name order), a glob (`archive/2026-*/*.jsonl.gz`), an `s3://bucket/prefix/` (every event
object under it, `features.s3events`), or several of those. `event_sources` turns one into a list of
`EventSource`s; everything downstream reads sources, never paths.

`read_event_file` yields `(line_number, event_or_error)` for one local file; `read_events` does the
same for many sources, in order, with the source named. A bad line is reported with its number
and the caller decides whether to skip it or stop. Duplicates by `event_id` are *not* dropped
here: the feature store counts each event once, and the offline builders drop them per customer
(`customer_shard` puts every event of a customer, so every copy of an event, in one shard).

`read_event_paths` is what every command that streams events starts with: the sources of the
paths, read up to their first valid event before anything else happens, so input without a
single event is the same one-line error everywhere (`no events in PATH`, exit 2), before any
connection, training or output.
"""

from __future__ import annotations

import glob
import gzip
import io
import itertools
import math
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from features.events import Event, parse_event, validate_event
from features.exceptions import EventParseError, FeaturesError, UsageError

PARQUET_BATCH_ROWS = 8192
# The one list of event file names (and, for JSON Lines, of the logs the tools write and read back:
# alert logs, the shadow log): every reader, lister and argument check uses these.
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz")
EVENT_SUFFIXES = (*JSONL_SUFFIXES, ".parquet")


class EventPathError(EventParseError):
    """An event path that names no readable event file; the message says what to pass instead.
    An input error like a bad line (callers map both to exit 2), with the one-line message only."""

    def __init__(self, detail: str) -> None:
        FeaturesError.__init__(self, detail)
        self.error_code = "unreadable_event_path"
        self.error_detail = detail


class EventSource(Protocol):
    """One file of events, wherever it lives. `name` is what messages call it."""

    @property
    def name(self) -> str: ...

    @property
    def is_parquet(self) -> bool: ...

    def open_binary(self) -> IO[bytes]:
        """The raw bytes (still gzipped for `.gz`)."""
        ...


@dataclass(frozen=True)
class LocalEventFile:
    path: Path

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def is_parquet(self) -> bool:
        return self.path.name.lower().endswith(".parquet")

    def open_binary(self) -> IO[bytes]:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise EventPathError(f"{self.path}: cannot read: {exc.strerror or exc}") from None


OUTCOMES_SUFFIX = ".outcomes.jsonl"  # `churn-model simulate` writes outcomes next to its events
SHADOW_LOG_PREFIX = "shadow/"  # worker/shadow_log.py's SHADOW_PREFIX, at the archive bucket's root


def _s3_objects(uri: str, since: str | None = None) -> list[Any]:
    """Every event object under an `s3://bucket/prefix/` (features/s3events.py), each an EventSource."""
    from features.s3events import list_event_objects, split_uri

    try:
        _, prefix = split_uri(uri)
        # An archive at the bucket's root has the shadow log (worker/shadow_log.py) under it: alerts, not events.
        objects = [
            o
            for o in list_event_objects(uri, since)
            if not o.key[len(prefix) :].startswith(SHADOW_LOG_PREFIX)
        ]
    except ValueError as exc:
        raise EventPathError(str(exc)) from None
    except UsageError:  # no credentials: named by features.s3events
        raise
    except Exception as exc:  # botocore's errors: no bucket, no access
        raise EventPathError(f"{uri}: cannot list the objects: {exc}") from None
    if not objects:
        after = f" in date partitions from {since} on" if since else ""
        raise EventPathError(f"{uri}: no .jsonl, .jsonl.gz or .parquet object under that prefix{after}")
    return list(objects)


def is_event_file(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(EVENT_SUFFIXES) and not lowered.endswith(OUTCOMES_SUFFIX)


def event_sources(paths: str | Path | Sequence[str | Path], since: str | None = None) -> list[EventSource]:
    """Every event file that `paths` names, in a stable order, each once.

    A file is taken as it is (its suffix must be an event format); a directory contributes every
    event file below it (hidden files and directories skipped, and `*.outcomes.jsonl`, which
    `churn-model simulate` writes next to its events); a string with `*`, `?` or `[` is a
    glob (`**` recurses). With `since` (`YYYY-MM-DD`), files in an archive's `date=` partitions
    of earlier days are left out (by name, unread; files outside any partition are kept).
    Raises `EventPathError` when something names nothing readable."""
    specs = [paths] if isinstance(paths, str | Path) else list(paths)
    if not specs:
        raise EventPathError("no event path given: pass a file, a directory or a glob")
    found: list[EventSource] = []
    seen: set[str] = set()
    for spec in specs:
        for source in _expand(str(spec), since):
            key = str(source.path.resolve()) if isinstance(source, LocalEventFile) else source.name
            if key not in seen:
                seen.add(key)
                found.append(source)
    return found


def _expand(spec: str, since: str | None) -> list[Any]:
    if spec.startswith("s3://"):
        return _s3_objects(spec, since)
    files = [source for source in _expand_local(spec) if not _before(source.path, since)]
    if not files:
        raise EventPathError(f"{spec}: no event file in date partitions from {since} on")
    return files


def _before(path: Path, since: str | None) -> bool:
    """In an archive's `date=YYYY-MM-DD/` partition of a day before `since`."""
    from features.s3events import partition_date

    day = partition_date(path.as_posix())
    return since is not None and day is not None and day < since


def _expand_local(spec: str) -> list[LocalEventFile]:
    if any(ch in spec for ch in "*?["):
        matches = sorted(glob.glob(spec, recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file() and is_event_file(m)]
        if not files:
            raise EventPathError(f"{spec}: the glob matches no .jsonl, .jsonl.gz or .parquet file")
        return [LocalEventFile(f) for f in files]
    path = Path(spec).expanduser()
    if path.is_dir():
        files = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # do not descend into hidden directories
            files += [Path(root) / n for n in names if not n.startswith(".") and is_event_file(n)]
        files.sort()
        if not files:
            raise EventPathError(f"{path}: the directory holds no .jsonl, .jsonl.gz or .parquet file")
        return [LocalEventFile(f) for f in files]
    if not path.exists():
        raise EventPathError(f"{path}: no such file or directory")
    if not is_event_file(path.name):
        raise EventPathError(
            f"{path}: expected .jsonl, .jsonl.gz or .parquet (or a directory or glob of them)"
        )
    return [LocalEventFile(path)]


def describe_paths(paths: str | Path | Sequence[str | Path]) -> str:
    """The event paths as the user gave them, for messages."""
    return str(paths) if isinstance(paths, str | Path) else ", ".join(str(p) for p in paths)


def no_events_error(paths: str | Path | Sequence[str | Path], detail: str = "") -> EventPathError:
    """The one error for input that holds no event: `no events in PATH` (exit 2)."""
    return EventPathError(f"no events in {describe_paths(paths)}{detail}")


def read_event_paths(
    paths: str | Path | Sequence[str | Path],
    since: str | None = None,
    on_error: str = "stop",
    sources: Sequence[EventSource] | None = None,
) -> Iterator[SourcedEvent]:
    """`read_events` over the paths' sources (`sources` when the caller already listed them), read
    here up to the first valid event: the iterator returned yields everything from the start,
    bad lines included, for the caller to stop at or skip as its `--on-error` says.

    Raises here, before the caller does anything else: `EventPathError` when the paths name no
    event file, and `no events in PATH` when the files hold no valid event (empty, blank lines
    only, or, with `on_error` "skip", only bad lines). With "stop" a file of bad lines is handed
    on: the caller stops at its first line, which says more than "no events"."""
    records = read_events(event_sources(paths, since) if sources is None else sources)
    head = _head(paths, records, on_error)
    return itertools.chain(head, records)


def check_has_events(
    paths: str | Path | Sequence[str | Path],
    on_error: str = "stop",
    sources: Sequence[EventSource] | None = None,
) -> None:
    """`read_event_paths`' checks alone, for commands that read their input later (after training
    a model, on other processes): reads up to the first valid event. With `on_error` "stop", a bad
    line before it is raised here too (`FILE:LINE: code: detail`)."""
    records = read_events(event_sources(paths) if sources is None else sources)
    try:
        head = _head(paths, records, on_error)
    finally:
        records.close()
    bad = head[0] if head and isinstance(head[0].item, EventParseError) else None
    if bad is not None and on_error == "stop":
        assert isinstance(bad.item, EventParseError)
        raise EventPathError(
            f"{bad.source}:{bad.line}: {bad.item.error_code}: {bad.item.error_detail} "
            "(use --on-error skip to skip bad lines)"
        )


def _head(
    paths: str | Path | Sequence[str | Path], records: Iterator[SourcedEvent], on_error: str
) -> list[SourcedEvent]:
    """The records up to and with the first valid event; raises `no events in PATH` if none is."""
    head: list[SourcedEvent] = []
    for record in records:
        head.append(record)
        if not isinstance(record.item, EventParseError):
            return head
    if not head:
        raise no_events_error(paths)
    if on_error == "stop":
        return head  # the caller stops at the first bad line
    first = head[0]
    assert isinstance(first.item, EventParseError)
    raise no_events_error(
        paths,
        f": {len(head)} bad lines skipped, the first {first.source}:{first.line}: "
        f"{first.item.error_code}: {first.item.error_detail}",
    )


def customer_shard(customer_id: str, shards: int) -> int:
    """A stable shard of `customer_id` in [0, shards): the same on every machine and Python run
    (not `hash()`, which is salted per process), so shards can be built and read by different
    workers. Every event of a customer, and so every copy of one event, lands in one shard. For a
    shard count dividing 64 this is `features.shards.shard_of`, the split every offline job uses."""
    from features.shards import customer_hash

    return 0 if shards <= 1 else customer_hash(customer_id) % shards


@dataclass(frozen=True)
class SourcedEvent:
    source: str
    line: int
    item: Event | EventParseError
    raw: str | None = None  # the line as read (JSON Lines only): a copy needs no re-serialising


def read_events(sources: Sequence[EventSource]) -> Generator[SourcedEvent, None, None]:
    """Every line of every source, validated, in source order then line order."""
    for source in sources:
        if source.is_parquet:
            for number, item in _read_parquet(source):
                yield SourcedEvent(source.name, number, item)
        else:
            for number, item, raw in _read_jsonl(source):
                yield SourcedEvent(source.name, number, item, raw)


def read_source(source: EventSource) -> Iterator[tuple[int, Event | EventParseError]]:
    if source.is_parquet:
        yield from _read_parquet(source)
    else:
        for number, item, _ in _read_jsonl(source):
            yield number, item


def read_event_file(path: Path) -> Iterator[tuple[int, Event | EventParseError]]:
    """One local file's lines (Parquet rows), numbered from 1."""
    if not is_event_file(path.name):
        raise EventParseError("unknown_format", f"{path}: expected .jsonl, .jsonl.gz or .parquet")
    yield from read_source(LocalEventFile(path))


class _GzipReader(gzip.GzipFile):
    """A GzipFile that closes the stream it reads: `GzipFile(fileobj=...)` leaves it open."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_text(source: EventSource, newline: str | None = None) -> IO[str]:
    """A JSON Lines source as UTF-8 text, gunzipped when its name ends in `.gz`; closing it closes
    the source. `newline` as for `open` (None: universal newlines)."""
    raw = source.open_binary()
    if source.name.lower().endswith(".gz"):
        return io.TextIOWrapper(_GzipReader(raw), encoding="utf-8", newline=newline)
    return io.TextIOWrapper(raw, encoding="utf-8", newline=newline)


def _read_jsonl(source: EventSource) -> Iterator[tuple[int, Event | EventParseError, str]]:
    try:
        with open_text(source) as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, parse_event(line), line
                except EventParseError as exc:
                    yield number, exc, line
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # a torn gzip, a file that is not text
        raise EventPathError(f"{source.name}: unreadable: {exc}") from None


def _read_parquet(source: EventSource) -> Iterator[tuple[int, Event | EventParseError]]:
    import pyarrow as pa  # only Parquet users pay for the import
    import pyarrow.parquet as pq

    number = 0
    try:
        with source.open_binary() as raw:
            for batch in pq.ParquetFile(raw).iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    number += 1
                    try:
                        yield number, validate_event(_drop_nulls(row))
                    except EventParseError as exc:
                        yield number, exc
    except (OSError, pa.ArrowException) as exc:
        raise EventPathError(f"{source.name}: unreadable Parquet: {exc}") from None


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


__all__ = [
    "EVENT_SUFFIXES",
    "JSONL_SUFFIXES",
    "EventPathError",
    "EventSource",
    "LocalEventFile",
    "SourcedEvent",
    "check_has_events",
    "customer_shard",
    "describe_paths",
    "event_sources",
    "is_event_file",
    "no_events_error",
    "open_text",
    "read_event_file",
    "read_event_paths",
    "read_events",
    "read_source",
    "write_jsonl",
]
