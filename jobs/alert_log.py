"""Reading logged alerts back: JSON Lines of alert bodies (CONTRACTS.md section 2), as a backtest's
`alerts.jsonl`, `alerts tail --json`, a subscriber's dump of the control or shadow topic, or the
shadow log in S3 writes them.

A path is a file (`.jsonl`, `.jsonl.gz`), a directory or a glob of such files, or an
`s3://bucket/prefix/` of them. A line that is not an alert body is a usage error naming the file and
line: analyses over a silently shortened log would mislead.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from features.s3events import list_event_objects
from jobs.uplift import AlertRow
from worker.exceptions import UsageError

SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson", ".ndjson.gz")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(text: str) -> int:
    """An ISO-8601 instant with an offset, in epoch microseconds."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _sources(path: str) -> list[tuple[str, Any]]:
    """(name, opener) of every file a path names."""
    if path.startswith("s3://"):
        return [(o.name, o.open_binary) for o in list_event_objects(path)]
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.name.lower().endswith(SUFFIXES))
    elif local.is_file():
        files = [local]
    else:
        files = sorted(Path(p) for p in glob.glob(path) if p.lower().endswith(SUFFIXES))
    if not files:
        raise UsageError(f"{path}: no alert files there (.jsonl, .jsonl.gz)")
    return [(str(p), p.open) for p in files]


def _text(name: str, opener: Any) -> IO[str]:
    if name.startswith("s3://"):
        raw: IO[bytes] = opener()
        data = raw.read()
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        return io.StringIO(data.decode("utf-8"))
    if name.endswith(".gz"):
        return gzip.open(name, "rt", encoding="utf-8")
    return open(name, encoding="utf-8")  # closed by the caller's `with`


def read_bodies(paths: Sequence[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file, line number, body) of every alert in `paths`, in file order."""
    for path in paths:
        for name, opener in _sources(path):
            try:
                handle = _text(name, opener)
            except OSError as exc:
                raise UsageError(f"{name}: {exc.strerror or exc}") from None
            with handle:
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        body = json.loads(line)
                        if not isinstance(body, dict):
                            raise ValueError("not an object")
                    except ValueError as exc:
                        raise UsageError(f"{name}:{number}: not an alert body ({exc})") from None
                    yield name, number, body


def alert_rows(paths: Sequence[str]) -> Iterator[AlertRow]:
    """The uplift analysis' view of every alert: customer, type, `as_of`, arm (treatment if absent)."""
    for name, number, body in read_bodies(paths):
        yield alert_row(body, f"{name}:{number}")


def alert_row(body: dict[str, Any], where: str) -> AlertRow:
    try:
        arm = body.get("arm") or "treatment"
        if arm not in ("treatment", "control"):
            raise ValueError(f"arm {arm!r}")
        return AlertRow(str(body["customer_id"]), str(body["type"]), to_us(str(body["as_of"])), arm)
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(
            f"{where}: not an alert body ({exc}); expected customer_id, type, as_of and arm"
        ) from None
