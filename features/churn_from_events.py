"""Outcomes derived from an event log or archive (`churn-worker outcomes`, `churn-model retrain`).

The outcomes file of docs/contracts.md: one line per customer the log mentions, `churned_at` = the
customer's latest `customer_churned` if it is later than their latest `customer_signed_up`, else
null (never churned, or came back). Ties go to the sign-up, as `features.activity.has_churned` decides who is
still active: the outcomes file and the live store never disagree about who left.

Only the sign-up and churn events decide anything, and a latest time does not change when an event
is read twice, so duplicates (the archive holds some by design: worker/archive.py) cannot change the
result; they are still recognised by `event_id` so the counts say what the log holds once.

A bad line is the caller's choice (`on_error`): "stop" raises `BadEventLine` (the caller exits 2
with it), "skip" reports it through `say` as `FILE:LINE: code: detail: skipped` and goes on.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from features.eventfile import EventSource, read_events
from features.events import format_utc
from features.exceptions import EventParseError, UsageError
from features.state import from_us, to_us

SIGN_UP, CHURN = "customer_signed_up", "customer_churned"


class BadEventLine(UsageError):
    """A line that is not a valid event, with `--on-error stop`: one line naming the file and line."""


@dataclass
class DerivedOutcomes:
    last_sign_up: dict[str, int] = field(default_factory=dict)  # microseconds since the epoch
    last_churn: dict[str, int] = field(default_factory=dict)
    customers: set[str] = field(default_factory=set)
    events: int = 0  # valid lines read, duplicates included
    duplicates: int = 0  # sign-up and churn events whose event_id was already read
    bad_lines: int = 0
    sources: list[str] = field(default_factory=list)

    def churned_at_us(self, customer: str) -> int | None:
        churn = self.last_churn.get(customer)
        if churn is None or churn <= self.last_sign_up.get(customer, -1):
            return None  # never churned, or signed up again at or after the latest churn
        return churn

    @property
    def churned(self) -> int:
        return sum(1 for cid in self.customers if self.churned_at_us(cid) is not None)

    @property
    def came_back(self) -> int:
        return sum(1 for cid in self.last_churn if self.churned_at_us(cid) is None)

    def rows(self) -> Iterable[dict[str, str | None]]:
        """The outcome lines, by customer id."""
        for cid in sorted(self.customers):
            churned = self.churned_at_us(cid)
            yield {
                "customer_id": cid,
                "churned_at": None if churned is None else format_utc(from_us(churned)),
            }

    def summary(self) -> dict[str, int]:
        return {
            "customers": len(self.customers),
            "churned": self.churned,
            "came_back": self.came_back,
            "events": self.events,
            "duplicates": self.duplicates,
            "bad_lines": self.bad_lines,
            "files": len(self.sources),
        }


def derive_outcomes(
    sources: Sequence[EventSource],
    on_error: str = "stop",
    say: Callable[[str], None] = lambda text: None,
    on_source: Callable[[str], None] = lambda name: None,
) -> DerivedOutcomes:
    """Read every source once and keep each customer's latest sign-up and churn.
    `on_source` is called as each file is finished (a progress bar's hook)."""
    out = DerivedOutcomes(sources=[source.name for source in sources])
    seen_ids: set[str] = set()  # sign-up and churn events only: the rest never matter here
    current: str | None = None
    for item in read_events(sources):
        if item.source != current:
            if current is not None:
                on_source(current)
            current = item.source
        event = item.item
        if isinstance(event, EventParseError):
            text = f"{item.source}:{item.line}: {event.error_code}: {event.error_detail}"
            if on_error == "stop":
                raise BadEventLine(f"{text} (pass --on-error skip to skip bad lines)")
            out.bad_lines += 1
            say(f"{text}: skipped")
            continue
        out.events += 1
        out.customers.add(event.customer_id)
        if event.type not in (SIGN_UP, CHURN):
            continue
        if event.event_id in seen_ids:
            out.duplicates += 1
            continue
        seen_ids.add(event.event_id)
        latest = out.last_sign_up if event.type == SIGN_UP else out.last_churn
        moment = to_us(event.occurred_at)
        latest[event.customer_id] = max(moment, latest.get(event.customer_id, moment))
    if current is not None:
        on_source(current)
    return out


def write_outcomes(derived: DerivedOutcomes, path: Path) -> Path:
    """Write the outcomes file whole or not at all (a temporary sibling renamed into place)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for row in derived.rows():
                out.write(json.dumps(row) + "\n")
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the file from the team's other users
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
