"""Reading logged alerts back: JSON Lines of alert bodies (docs/contracts.md, Alerts), as a backtest's
`alerts.jsonl`, `alerts tail --json`, a subscriber's dump of the control or shadow topic, or the
shadow log in S3 writes them.

A path is a file (`.jsonl`, `.jsonl.gz`), a directory or a glob of such files, or an
`s3://bucket/prefix/` of them. A line that is not an alert body is a usage error naming the file and
line: analyses over a silently shortened log would mislead.

A log may also hold the later messages of alerts (`status` `escalated` or `resolved`: the same
`alert_id` as the alert, worker/alerts/lifecycle.py); they are not alerts of their own and are left
out here, so every analysis counts each alert once.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from features.eventfile import JSONL_SUFFIXES, EventPathError, EventSource, LocalEventFile, open_text
from features.s3events import list_event_objects
from features.state import parse_iso_us
from jobs.uplift import AlertRow
from worker.exceptions import UsageError

LATER_MESSAGES = ("escalated", "resolved")  # an alert's escalation and resolution: not alerts of their own


def _sources(path: str) -> list[EventSource]:
    """Every file a path names: local files, or the objects under an `s3://` prefix."""
    if path.startswith("s3://"):
        return list(list_event_objects(path))
    local = Path(path)
    if local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.name.lower().endswith(JSONL_SUFFIXES))
    elif local.is_file():
        files = [local]
    else:
        files = sorted(Path(p) for p in glob.glob(path) if p.lower().endswith(JSONL_SUFFIXES))
    if not files:
        raise UsageError(f"{path}: no alert files there (.jsonl, .jsonl.gz)")
    return [LocalEventFile(p) for p in files]


def read_bodies(paths: Sequence[str]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file, line number, body) of every alert in `paths`, in file order."""
    for path in paths:
        for source in _sources(path):
            name = source.name
            try:
                handle = open_text(source)
            except EventPathError as exc:
                raise UsageError(str(exc)) from None
            with handle:
                try:
                    for number, line in enumerate(handle, start=1):
                        if not line.strip():
                            continue
                        try:
                            body = json.loads(line)
                            if not isinstance(body, dict):
                                raise ValueError("not an object")
                        except ValueError as exc:
                            raise UsageError(f"{name}:{number}: not an alert body ({exc})") from None
                        if body.get("status") in LATER_MESSAGES:
                            continue
                        yield name, number, body
                except (OSError, EOFError, UnicodeDecodeError) as exc:  # a torn gzip, a file that is not text
                    raise UsageError(f"{name}: unreadable: {exc}") from None


def alert_rows(paths: Sequence[str]) -> Iterator[AlertRow]:
    """The uplift analysis' view of every alert: customer, type, `as_of`, arm (treatment if absent)."""
    for name, number, body in read_bodies(paths):
        yield alert_row(body, f"{name}:{number}")


def alert_row(body: dict[str, Any], where: str) -> AlertRow:
    try:
        arm = body.get("arm") or "treatment"
        if arm not in ("treatment", "control"):
            raise ValueError(f"arm {arm!r}")
        return AlertRow(str(body["customer_id"]), str(body["type"]), parse_iso_us(str(body["as_of"])), arm)
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(
            f"{where}: not an alert body ({exc}); expected customer_id, type, as_of and arm"
        ) from None
