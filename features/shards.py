"""An event log split by customer, in parallel: the input of every sharded offline job.

Customers are independent offline, so a log is split once into shard files by a stable hash of
`customer_id` and each shard is then folded on its own (`plumbing.parallel`). The split itself has
no single reader: a local JSON Lines file is cut into byte ranges (`plan_pieces`), each range is
read by its own task (`split_piece`), and every task writes its lines into one part file per shard.
Gzip files, Parquet files and S3 objects cannot be cut cheaply and are one piece each (a directory
or an archive of many of them still splits across tasks).

What a shard keeps of each line: its source and line number (so a bad line, or an error found
later, is reported as `file:line` whichever task read it), its event time and the line's text (the
pipeline validates it again, exactly as it would live). A shard's events are read back in source
order (`read_shard`); callers sort by event time (stable, so ties keep file order).

Lines are validated while splitting: a line that is not a valid event cannot be given a customer,
so it goes into no shard and is returned with the piece as a `BadLine` (`error_code`, one-line
detail). Line numbers count every line of the file from 1, blank ones included (as editors do);
blank lines are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from features.eventfile import open_text
from features.events import event_to_json, parse_event, validate_event
from features.exceptions import EventParseError
from features.state import to_us

PIECE_BYTES = 32 * 1024 * 1024  # a byte range per task: large enough that task overhead is noise
KEPT_BAD_LINES = 20
GROUPS = 64  # customer groups; a shard is a union of groups, so shard counts must divide this


class Source(Protocol):
    """One file of events (local or S3): what `features.eventfile` and `features.s3events` hand out."""

    @property
    def name(self) -> str: ...

    @property
    def is_parquet(self) -> bool: ...

    def open_binary(self) -> IO[bytes]: ...


def customer_hash(customer_id: str) -> int:
    """A stable 64-bit hash of a customer id: the same on every machine and run (not `hash()`)."""
    return int.from_bytes(hashlib.blake2b(customer_id.encode(), digest_size=8).digest(), "big")


def customer_group(customer_id: str) -> int:
    return customer_hash(customer_id) % GROUPS


def shard_of(customer_id: str, shards: int) -> int:
    """The shard of a customer: its group modulo the shard count (a divisor of GROUPS)."""
    return customer_group(customer_id) % shards


def check_shard_count(shards: int) -> None:
    if shards < 1 or GROUPS % shards:
        raise ValueError(f"shards must divide {GROUPS} (1, 2, 4, ... {GROUPS}), not {shards}")


def shard_count_for(total_bytes: int, workers: int, bytes_per_shard: int = 64 * 1024 * 1024) -> int:
    """The smallest divisor of GROUPS that gives every worker a shard and no shard more than about
    `bytes_per_shard` of input (a shard is held in memory while it is folded)."""
    wanted = max(workers, -(-total_bytes // bytes_per_shard), 1)
    shards = 1
    while shards < wanted and shards < GROUPS:
        shards *= 2
    return shards


@dataclass(frozen=True)
class Piece:
    """A part of one source: bytes [start, end) of a local JSON Lines file, or the whole source."""

    index: int  # position in the job's list of pieces (sources in order, ranges in order)
    source_index: int
    source: Any  # a Source (picklable: a local file or an S3 object)
    start: int = 0
    end: int | None = None  # None: to the end of the source


@dataclass
class BadLine:
    source: str
    line: int
    error_code: str
    error_detail: str

    def describe(self) -> str:
        return f"{self.source}:{self.line}: {self.error_code}: {self.error_detail}"


@dataclass
class PieceResult:
    index: int
    source_index: int
    lines: int = 0  # lines whose first byte is in the piece, blank ones included
    events: int = 0
    shards: list[int] = field(default_factory=list)  # shards this piece wrote a part file for
    bad_lines: int = 0
    bad_examples: list[BadLine] = field(default_factory=list)  # the first KEPT_BAD_LINES, line numbers local
    min_us: int | None = None
    max_us: int | None = None


def plan_pieces(sources: Sequence[Any], piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    """Byte ranges of local plain JSON Lines files; every other source whole."""
    pieces: list[Piece] = []
    for source_index, source in enumerate(sources):
        path = getattr(source, "path", None)
        name = str(source.name).lower()
        if isinstance(path, Path) and not source.is_parquet and not name.endswith(".gz"):
            size = path.stat().st_size
            for start in range(0, max(size, 1), piece_bytes):
                pieces.append(Piece(len(pieces), source_index, source, start, min(start + piece_bytes, size)))
        else:
            pieces.append(Piece(len(pieces), source_index, source))
    return pieces


def part_path(workdir: Path, piece: int, shard: int) -> Path:
    return workdir / f"piece{piece:06d}-shard{shard:02d}.tsv"


def split_piece(piece: Piece, shards: int, workdir: Path) -> PieceResult:
    """Validate every line of the piece and append the good ones to their shard's part file:
    `line<TAB>occurred_us<TAB>text` (text without a newline)."""
    check_shard_count(shards)
    result = PieceResult(piece.index, piece.source_index)
    outputs: dict[int, IO[str]] = {}
    try:
        for number, text in _lines(piece, result):
            try:
                event = validate_event(text) if isinstance(text, dict) else parse_event(text)
            except EventParseError as exc:
                _bad(result, BadLine(piece.source.name, number, exc.error_code, exc.error_detail))
                continue
            if not isinstance(text, str):  # a Parquet row: keep the wire form producers send
                text = event_to_json(event)
            occurred = to_us(event.occurred_at)
            result.events += 1
            result.min_us = occurred if result.min_us is None else min(result.min_us, occurred)
            result.max_us = occurred if result.max_us is None else max(result.max_us, occurred)
            shard = shard_of(event.customer_id, shards)
            out = outputs.get(shard)
            if out is None:
                out = outputs[shard] = part_path(workdir, piece.index, shard).open("w", encoding="utf-8")
            out.write(f"{number}\t{occurred}\t{text.rstrip(chr(13) + chr(10))}\n")
    finally:
        for out in outputs.values():
            out.close()
    result.shards = sorted(outputs)
    return result


def split_task(item: tuple[Piece, int, Path]) -> PieceResult:
    """`split_piece(*item)`: one argument, for `plumbing.parallel.map_shards`."""
    return split_piece(*item)


def _bad(result: PieceResult, bad: BadLine) -> None:
    result.bad_lines += 1
    if len(result.bad_examples) < KEPT_BAD_LINES:
        result.bad_examples.append(bad)


def _lines(piece: Piece, result: PieceResult) -> Iterator[tuple[int, Any]]:
    """(line number within the piece, text or Parquet row dict) of every non-blank line."""
    source = piece.source
    if source.is_parquet:
        yield from _parquet_rows(piece, result)
        return
    if piece.end is None:  # a whole source: maybe gzip, maybe in S3
        # Lines end at "\n" only, as the byte ranges of a local file do.
        with open_text(source, newline="\n") as handle:
            try:
                for number, text in enumerate(handle, start=1):
                    result.lines = number
                    if text.strip():
                        yield number, text
            except (OSError, EOFError, UnicodeDecodeError) as exc:
                raise EventParseError("unreadable", f"{source.name}: {exc}") from None
        return
    with open(source.path, "rb") as handle:
        if piece.start > 0:
            handle.seek(piece.start - 1)
            handle.readline()  # the line that began before this piece belongs to the previous one
        number = 0
        while handle.tell() < piece.end:
            raw = handle.readline()
            if not raw:
                break
            number += 1
            result.lines = number
            if raw.strip():
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    _bad(result, BadLine(source.name, number, "not_json", f"body is not UTF-8: {exc.reason}"))


def _parquet_rows(piece: Piece, result: PieceResult) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    from features.eventfile import _drop_nulls  # one reading of Parquet's nulls and timestamps

    number = 0
    with piece.source.open_binary() as raw:
        for batch in pq.ParquetFile(raw).iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                number += 1
                result.lines = number
                yield number, _drop_nulls(row)


def read_shard(
    workdir: Path, shard: int, pieces: Sequence[PieceResult], sources: Sequence[str]
) -> Iterator[tuple[str, int, int, str]]:
    """(source name, line number in the source, occurred_us, text) of a shard's lines, in source
    order. Line numbers become the source's: the lines of the pieces before add up."""
    offsets: dict[int, int] = {}
    before: dict[int, int] = {}
    for piece in sorted(pieces, key=lambda p: p.index):
        offsets[piece.index] = before.get(piece.source_index, 0)
        before[piece.source_index] = offsets[piece.index] + piece.lines
    for piece in sorted(pieces, key=lambda p: p.index):
        if shard not in piece.shards:
            continue
        name, offset = sources[piece.source_index], offsets[piece.index]
        with part_path(workdir, piece.index, shard).open(encoding="utf-8") as handle:
            for row in handle:
                number, occurred, text = row.rstrip("\n").split("\t", 2)
                yield name, offset + int(number), int(occurred), text


def global_bad_lines(pieces: Sequence[PieceResult]) -> tuple[int, list[BadLine]]:
    """Every piece's bad lines with source line numbers: (how many, the first KEPT_BAD_LINES)."""
    offsets: dict[int, int] = {}
    before: dict[int, int] = {}
    examples: list[BadLine] = []
    for piece in sorted(pieces, key=lambda p: p.index):
        offsets[piece.index] = before.get(piece.source_index, 0)
        before[piece.source_index] = offsets[piece.index] + piece.lines
        examples += [
            BadLine(b.source, b.line + offsets[piece.index], b.error_code, b.error_detail)
            for b in piece.bad_examples
        ]
    return sum(p.bad_lines for p in pieces), examples[:KEPT_BAD_LINES]


def total_bytes(sources: Sequence[Any]) -> int:
    """The sources' size in bytes: local files' on disk, S3 objects' as listed (compressed sizes)."""
    size = 0
    for source in sources:
        path = getattr(source, "path", None)
        if isinstance(path, Path):
            with contextlib.suppress(OSError):
                size += os.path.getsize(path)
        else:
            size += int(getattr(source, "size", 0) or 0)
    return size
