"""Pass 1 of the example builder: the log split by customer, and what the whole log says.

The split is the backtest's (`features.shards`: each file cut into byte ranges, every line validated
once, written to the part file of its customer's shard; bad lines reported as `file:line`), run on
the same engine (`plumbing.parallel`: in process, or on Dask). A second, cheap task per shard
(`shard_facts`) reads only what must be known about the whole log before any shard is folded: its
time span and daily volume (the split's time cut), whether it uses the `first_session` flag (the
first-session label), each customer's first sign-up and churn events (checks against the
outcomes, churn instants).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.events import loads_json, unwrap_envelope
from features.shards import (
    PieceResult,
    check_shard_count,
    global_bad_lines,
    plan_pieces,
    read_shard,
    shard_count_for,
    split_task,
    total_bytes,
)
from features.state import DAY_US, from_us
from model.exceptions import DataError
from plumbing.parallel import Engine, map_shards

KEPT_BAD_LINES = 5


@dataclass(frozen=True)
class ShardRef:
    """One customer shard of a split log: where its part files are and which pieces wrote them."""

    shard: int
    shards: int  # of how many
    workdir: Path
    pieces: tuple[PieceResult, ...]
    names: tuple[str, ...]  # source names, by source index

    def lines(self) -> Iterator[tuple[str, int, int, str]]:
        """(source, line, occurred_us, text) of every event of the shard, in source order."""
        return read_shard(self.workdir, self.shard, self.pieces, self.names)


@dataclass
class LogSummary:
    """What the whole log says, merged from every shard's facts."""

    sources: list[str]
    events: int = 0
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    first_us: int | None = None
    last_us: int | None = None
    log_uses_flag: bool = False
    customers: dict[str, tuple[int, int]] = field(
        default_factory=dict, repr=False
    )  # id -> (first, last) event
    first_sign_up: dict[str, int] = field(default_factory=dict, repr=False)
    churn_events: dict[str, list[int]] = field(default_factory=dict, repr=False)  # customer_churned instants
    day_events: dict[int, int] = field(default_factory=dict, repr=False)  # events per UTC day

    @property
    def first_day(self) -> int:
        assert self.first_us is not None
        return self.first_us // DAY_US

    @property
    def last_day(self) -> int:
        assert self.last_us is not None
        return self.last_us // DAY_US

    def add(self, facts: ShardFacts) -> None:
        self.events += facts.events
        for t in (facts.first_us, facts.last_us):
            if t is not None:
                self.first_us = t if self.first_us is None else min(self.first_us, t)
                self.last_us = t if self.last_us is None else max(self.last_us, t)
        self.log_uses_flag |= facts.log_uses_flag
        self.customers.update(facts.customers)  # a customer lives in exactly one shard
        self.first_sign_up.update(facts.first_sign_up)
        self.churn_events.update(facts.churn_events)
        for day, count in facts.day_events.items():
            self.day_events[day] = self.day_events.get(day, 0) + count

    def describe(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "events": self.events,
            "bad_lines_skipped": self.bad_lines,
            "customers": len(self.customers),
            "start": None if self.first_us is None else _iso(self.first_us),
            "end": None if self.last_us is None else _iso(self.last_us),
            "first_session_flag_used": self.log_uses_flag,
        }


def _iso(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


@dataclass
class ShardFacts:
    events: int = 0
    first_us: int | None = None
    last_us: int | None = None
    log_uses_flag: bool = False
    customers: dict[str, tuple[int, int]] = field(default_factory=dict)
    first_sign_up: dict[str, int] = field(default_factory=dict)
    churn_events: dict[str, list[int]] = field(default_factory=dict)
    day_events: dict[int, int] = field(default_factory=dict)


def shard_facts(ref: ShardRef) -> ShardFacts:
    """The whole-log facts of one shard's events (each line was validated by the split, so the
    few fields read here are there and well formed)."""
    facts = ShardFacts()
    for _, _, t, text in ref.lines():
        obj = unwrap_envelope(loads_json(text))
        facts.events += 1
        facts.first_us = t if facts.first_us is None else min(facts.first_us, t)
        facts.last_us = t if facts.last_us is None else max(facts.last_us, t)
        day = t // DAY_US
        facts.day_events[day] = facts.day_events.get(day, 0) + 1
        cid, kind = obj["customer_id"], obj["type"]
        span = facts.customers.get(cid)
        facts.customers[cid] = (t, t) if span is None else (min(span[0], t), max(span[1], t))
        if kind == "customer_signed_up":
            facts.first_sign_up[cid] = min(t, facts.first_sign_up.get(cid, t))
        elif kind == "customer_churned":
            facts.churn_events.setdefault(cid, []).append(t)
        elif kind == "session_completed" and obj.get("first_session") is True:
            facts.log_uses_flag = True
    return facts


def split_log(
    sources: Sequence[Any],
    workdir: Path,
    engine: Engine,
    shards: int | None = None,
    on_error: str = "skip",
    progress: bool = False,
    say: Callable[[str], None] = lambda text: None,
) -> tuple[LogSummary, list[ShardRef]]:
    """Split `sources` by customer into shards under `workdir` and merge what they say."""
    shards = shards or shard_count_for(total_bytes(sources), max(engine.workers, 1))
    check_shard_count(shards)
    pieces = plan_pieces(sources)
    split = map_shards(
        split_task, [(piece, shards, workdir) for piece in pieces], engine, desc="reading", progress=progress
    )
    count, bad = global_bad_lines(split)
    if count and on_error == "stop":
        raise DataError(f"{bad[0].describe()} (pass --on-error skip to skip bad lines)")
    names = tuple(source.name for source in sources)
    refs = [
        ShardRef(s, shards, workdir, tuple(p for p in split if s in p.shards), names) for s in range(shards)
    ]
    refs = [ref for ref in refs if ref.pieces]
    summary = LogSummary(
        list(names), bad_lines=count, bad_line_examples=[b.describe() for b in bad[:KEPT_BAD_LINES]]
    )
    for facts in map_shards(shard_facts, refs, engine, desc="scanning", progress=progress):
        summary.add(facts)
    if count:
        say(f"skipped {count} bad lines, e.g. {summary.bad_line_examples[0]}")
    return summary, refs
