"""Training and evaluation examples from any event log and outcomes file, with bounded memory.

Examples are built where the model is used: at the daily scoring instant
(`features.activity.day_end_us`) of every customer active then (`features.activity.is_active`),
the instants and population `churn-worker backtest` scores and the live worker re-scores. Features
come from the worker's own code: events go through `MemoryFeatureStore.apply_sync` one UTC day at
a time (`now` = that day's scoring instant, as the backtest processes a day's batch) and the
registry is read with `compute_features_batch` at the day's end, so a row sees exactly the events
up to its instant. Labels (`features.labels`) look only after it.

Two passes, so memory is bounded by the largest shard, not the log:
1. `shard_events`: read every source once, validate each line, write it to one of N shard files
   by a stable hash of its customer (`features.eventfile.customer_shard`); note the time span,
   whether the log uses the `first_session` flag, customers and sign-ups (for outcome checks).
2. `fold_shard`: per shard, events sorted by time, duplicates (same event_id) dropped, folded day
   by day from the log's first to its last day; features of the sampled active customers at each
   day's end; labels once the shard's whole future is known. Shards are independent (a Dask
   runner maps this over them); `merge_shards` adds the marketplace-wide parts (the health
   percentile's reference, supply/demand) and concatenates.

Sampling (training only): daily instants of every active customer are many, and consecutive days
of one customer are nearly the same example. `SamplePlan` keeps every k-th day per customer (a
random phase per customer, from its id hash, so every weekday is represented) per split role;
evaluation keeps every instant. The health reference and the labels always use every active
instant, sampled or not.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from features.activity import day_end_us, is_active
from features.eventfile import EventSource, customer_shard, read_events
from features.events import Event, event_to_json, parse_event
from features.exceptions import EventParseError
from features.labels import (
    CustomerFacts,
    EngagementReference,
    LabelContext,
    MarketActivity,
    customer_labels,
    health_scores,
)
from features.outcomes import ChurnTimes
from features.registry import FEATURE_NAMES, compute_features_batch
from features.state import DAY_US, CustomerState, from_us, to_us
from features.store import DEFAULT_RETENTION, MemoryFeatureStore
from model.exceptions import DataError
from model.splits import SplitPlan

LABELS: tuple[str, ...] = (
    "first_session_success", "session_velocity", "churn_risk_14d", "churn_risk_30d", "supply_demand", "health_score",
)  # fmt: skip
SHARD_TARGET_BYTES = 48 * 1024 * 1024  # uncompressed JSON per shard: a few hundred thousand events
MAX_SHARDS = 256
KEPT_BAD_LINES = 5


@dataclass
class LogSummary:
    """What pass 1 learnt about the log."""

    sources: list[str]
    events: int = 0
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    first_us: int | None = None
    last_us: int | None = None
    log_uses_flag: bool = False
    customers: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # id -> (first, last) event
    first_sign_up: dict[str, int] = field(default_factory=dict, repr=False)
    churn_events: dict[str, list[int]] = field(default_factory=dict, repr=False)  # customer_churned instants
    shard_files: list[list[Path]] = field(default_factory=list)  # shard i: its pieces (one per pass-1 part)
    day_events: dict[int, int] = field(default_factory=dict, repr=False)  # events per UTC day

    @property
    def first_day(self) -> int:
        assert self.first_us is not None
        return self.first_us // DAY_US

    @property
    def last_day(self) -> int:
        assert self.last_us is not None
        return self.last_us // DAY_US

    def merge(self, other: LogSummary) -> None:
        """Fold another part's summary in (pass 1 run per source, e.g. one Dask task per file, with
        the same shard count: shard i of every part then belongs to shard i of the whole)."""
        self.sources += other.sources
        self.events += other.events
        self.bad_lines += other.bad_lines
        self.bad_line_examples = (self.bad_line_examples + other.bad_line_examples)[:KEPT_BAD_LINES]
        self.first_us = _pick(min, self.first_us, other.first_us)
        self.last_us = _pick(max, self.last_us, other.last_us)
        self.log_uses_flag |= other.log_uses_flag
        for cid, (first, last) in other.customers.items():
            span = self.customers.get(cid)
            self.customers[cid] = (first, last) if span is None else (min(span[0], first), max(span[1], last))
        for cid, t in other.first_sign_up.items():
            self.first_sign_up[cid] = min(t, self.first_sign_up.get(cid, t))
        for cid, times in other.churn_events.items():
            self.churn_events.setdefault(cid, []).extend(times)
        for day, count in other.day_events.items():
            self.day_events[day] = self.day_events.get(day, 0) + count
        if self.shard_files and other.shard_files and len(self.shard_files) != len(other.shard_files):
            raise ValueError("pass-1 parts must use the same number of shards to be merged")
        if not self.shard_files:
            self.shard_files = [[] for _ in other.shard_files]
        for pieces, more in zip(self.shard_files, other.shard_files, strict=False):
            pieces.extend(more)

    def describe(self) -> dict[str, Any]:
        return {
            "sources": self.sources, "events": self.events, "bad_lines_skipped": self.bad_lines,
            "customers": len(self.customers),
            "start": None if self.first_us is None else _iso(self.first_us),
            "end": None if self.last_us is None else _iso(self.last_us),
            "first_session_flag_used": self.log_uses_flag,
        }  # fmt: skip


def _pick(how: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else how(a, b)


def _iso(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


def shard_count(sources: Sequence[EventSource]) -> int:
    total = 0
    for source in sources:
        size = _size(source)
        total += size * (6 if source.name.lower().endswith((".gz", ".parquet")) else 1)
    return max(1, min(MAX_SHARDS, math.ceil(total / SHARD_TARGET_BYTES)))


def _size(source: EventSource) -> int:
    path = getattr(source, "path", None)
    try:
        return Path(path).stat().st_size if path is not None else SHARD_TARGET_BYTES
    except OSError:
        return 0


def shard_events(
    sources: Sequence[EventSource],
    workdir: Path,
    shards: int | None = None,
    on_error: str = "skip",
    progress: bool = False,
    say: Callable[[str], None] = lambda text: None,
    part: str = "all",
) -> LogSummary:
    """Pass 1: validate every line and split the log by customer into `shards` files in `workdir`.
    `part` names this pass's files: pass 1 can run once per source (say one Dask task per file) with
    the same `shards` and distinct `part`s, and `LogSummary.merge` joins the results."""
    from tqdm import tqdm

    shards = shards or shard_count(sources)
    summary = LogSummary([source.name for source in sources])
    files = [workdir / f"shard-{i:04d}-{part}.jsonl" for i in range(shards)]
    handles = [file.open("w", encoding="utf-8") for file in files]
    shard_of: dict[str, int] = {}
    try:
        with tqdm(desc="reading events", unit="ev", unit_scale=True, file=sys.stderr, disable=not progress) as bar:
            for record in read_events(sources):
                item = record.item
                if isinstance(item, EventParseError):
                    where = f"{record.source}:{record.line}: {item.error_code}: {item.error_detail}"
                    if on_error == "stop":
                        raise DataError(f"{where} (pass --on-error skip to skip bad lines)")
                    summary.bad_lines += 1
                    if len(summary.bad_line_examples) < KEPT_BAD_LINES:
                        summary.bad_line_examples.append(where)
                    continue
                _note(summary, item)
                cid = item.customer_id
                shard = shard_of.get(cid)
                if shard is None:
                    shard = shard_of[cid] = customer_shard(cid, shards)
                raw = record.raw
                if raw is not None and "\n" not in raw.rstrip("\r\n"):
                    handles[shard].write(raw if raw.endswith("\n") else raw + "\n")
                else:
                    handles[shard].write(event_to_json(item) + "\n")
                bar.update(1)
    finally:
        for handle in handles:
            handle.close()
    summary.shard_files = [[file] for file in files]
    if summary.bad_lines:
        say(f"skipped {summary.bad_lines} bad lines, e.g. {summary.bad_line_examples[0]}")
    return summary


def _note(summary: LogSummary, event: Event) -> None:
    t = to_us(event.occurred_at)
    summary.events += 1
    summary.first_us = t if summary.first_us is None else min(summary.first_us, t)
    summary.last_us = t if summary.last_us is None else max(summary.last_us, t)
    day = t // DAY_US
    summary.day_events[day] = summary.day_events.get(day, 0) + 1
    cid = event.customer_id
    span = summary.customers.get(cid)
    summary.customers[cid] = (t, t) if span is None else (min(span[0], t), max(span[1], t))
    kind = event.type
    if kind == "customer_signed_up":
        known = summary.first_sign_up.get(cid)
        summary.first_sign_up[cid] = t if known is None else min(known, t)
    elif kind == "customer_churned":
        summary.churn_events.setdefault(cid, []).append(t)
    elif kind == "session_completed" and event.first_session:
        summary.log_uses_flag = True


@dataclass(frozen=True)
class SamplePlan:
    """Keep every `every[role]`-th daily instant of a customer (0: none of that role)."""

    every: dict[str, int]
    split: SplitPlan

    def keep(self, cid: str, day: int, role: str, after_cut: bool) -> bool:
        if not self.split.wanted(role, after_cut):
            return False
        every = self.every.get(role, 1)
        return every == 1 or (every > 1 and (day + self.split.phase(cid, every)) % every == 0)


@dataclass
class ShardExamples:
    x: np.ndarray  # float32 [m, features]
    customer: list[str]
    t_us: np.ndarray
    labels: dict[str, np.ndarray]  # customer_labels' columns, per sampled row
    references: dict[int, EngagementReference]  # day -> every active instant's engagement counts
    market: MarketActivity
    duplicates: int
    active_instants: int


def fold_shard(
    shard: Path | Sequence[Path],
    summary: LogSummary,
    churn: ChurnTimes,
    plan: SamplePlan,
    retention: timedelta = DEFAULT_RETENTION,
) -> ShardExamples:
    """Pass 2 for one shard (a file, or the pieces of one shard that several pass-1 parts wrote):
    features at sampled instants, labels and references at every instant."""
    pieces = [shard] if isinstance(shard, Path) else list(shard)
    timed = sorted(((to_us(e.occurred_at), e) for piece in pieces for e in _read_shard(piece)), key=lambda pair: pair[0])
    by_day: dict[int, list[Event]] = {}
    seen: set[str] = set()
    duplicates = 0
    facts: dict[str, CustomerFacts] = {}
    market = MarketActivity()
    for t, event in timed:
        if event.event_id in seen:
            duplicates += 1
            continue
        seen.add(event.event_id)
        by_day.setdefault(t // DAY_US, []).append(event)
        fields = event.__dict__  # pydantic's attribute fallback is slow for fields a type lacks
        facts.setdefault(event.customer_id, CustomerFacts()).add(
            event.event_id, event.type, t, fields.get("first_session", False), fields.get("success")
        )
        market.add(event.type, t, fields.get("subject"), fields.get("tutor_id"))
    del timed, seen

    store = MemoryFeatureStore(retention)
    states: dict[str, CustomerState] = {}
    candidates: set[str] = set()
    rows_customer: list[str] = []  # every active instant: customer, day
    rows_day: list[int] = []
    sampled: list[int] = []  # positions in rows_* whose features were computed
    blocks: list[np.ndarray] = []
    roles: dict[str, str] = {}
    for day in range(summary.first_day, summary.last_day + 1):
        at = day_end_us(day)
        todays = by_day.pop(day, None)
        if todays:
            states.update(store.apply_sync(todays, now=from_us(at)).states)
            candidates.update(e.customer_id for e in todays)
        if not candidates:
            continue
        active = sorted(cid for cid in candidates if is_active(states[cid], at, retention))
        candidates.intersection_update(active)  # the rest come back with their next event
        after_cut = day >= plan.split.cut_day
        batch: list[str] = []
        for cid in active:
            role = roles.get(cid)
            if role is None:
                role = roles[cid] = plan.split.role(cid)
            if plan.keep(cid, day, role, after_cut):
                sampled.append(len(rows_customer))
                batch.append(cid)
            rows_customer.append(cid)
            rows_day.append(day)
        if batch:
            blocks.append(compute_features_batch([states[cid] for cid in batch], from_us(at)).astype(np.float32))
    del states, store

    labels, references = _shard_labels(rows_customer, np.asarray(rows_day, np.int64), facts, churn, summary)
    rows = np.asarray(sampled, dtype=np.int64)
    x = np.concatenate(blocks) if blocks else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    return ShardExamples(
        x=x, customer=[rows_customer[i] for i in rows.tolist()],
        t_us=(np.asarray(rows_day, np.int64)[rows] + 1) * DAY_US - 1,
        labels={k: v[rows] for k, v in labels.items()}, references=references, market=market,
        duplicates=duplicates, active_instants=len(rows_customer),
    )  # fmt: skip


def thin(part: ShardExamples, plan: SamplePlan) -> ShardExamples:
    """Keep the rows `plan` would have kept (its rule depends only on the customer and the day, so
    thinning a fully kept shard gives what folding it with `plan` would have given)."""
    split = plan.split
    keep = np.asarray([plan.keep(c, int(t // DAY_US), split.role(c), t // DAY_US >= split.cut_day)
                       for c, t in zip(part.customer, part.t_us.tolist(), strict=True)], dtype=bool)  # fmt: skip
    rows = np.flatnonzero(keep)
    return ShardExamples(
        x=part.x[rows], customer=[part.customer[i] for i in rows.tolist()], t_us=part.t_us[rows],
        labels={k: v[rows] for k, v in part.labels.items()}, references=part.references, market=part.market,
        duplicates=part.duplicates, active_instants=part.active_instants,
    )  # fmt: skip


def _read_shard(path: Path) -> Iterator[Event]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield parse_event(line)


def _shard_labels(
    customers: list[str], days: np.ndarray, facts: dict[str, CustomerFacts], churn: ChurnTimes, summary: LogSummary
) -> tuple[dict[str, np.ndarray], dict[int, EngagementReference]]:
    """Labels of every active instant (rows in `customers`/`days` order); instants at which the
    outcomes say the customer had already churned (with no sign-up since) are marked `gone`."""
    assert summary.last_us is not None
    context = LabelContext(end_us=summary.last_us, log_uses_flag=summary.log_uses_flag)
    n = len(customers)
    names = ("churn_risk_14d", "churn_risk_30d", "session_velocity", "first_session_success", "engaged_days_30d")
    out = {name: np.full(n, np.nan) for name in names}
    gone = np.zeros(n, dtype=bool)
    t_us = (days + 1) * DAY_US - 1
    order = np.argsort(np.asarray(customers, dtype=object), kind="stable") if n else np.zeros(0, np.int64)
    ids = np.asarray(customers, dtype=object)[order]
    bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1 if n else np.zeros(0, np.int64)
    for rows in np.split(order, bounds) if n else []:
        cid = customers[int(rows[0])]
        fact = facts[cid]
        times = churn.of(cid)
        labels = customer_labels(fact, times, t_us[rows], context)
        for name in names:
            out[name][rows] = labels[name]
        if len(times):  # churned per the outcomes before t, and not signed up again since
            last_churn = _latest_at_or_before(times, t_us[rows])
            last_sign_up = _latest_at_or_before(np.sort(np.asarray(fact.sign_ups, dtype=np.int64)), t_us[rows])
            gone[rows] = (last_churn >= 0) & (last_churn > last_sign_up)
    out["gone"] = gone
    references: dict[int, EngagementReference] = {}
    keep = ~gone
    for day in np.unique(days[keep]).tolist():
        reference = references[day] = EngagementReference()
        reference.add(out["engaged_days_30d"][keep & (days == day)])
    return out, references


def _latest_at_or_before(times: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """Per instant, the latest of the sorted `times` at or before it; -1 if none."""
    if not len(times):
        return np.full(len(t_us), -1, dtype=np.int64)
    position = np.searchsorted(times, t_us, side="right") - 1
    return np.where(position >= 0, times[np.maximum(position, 0)], -1)


@dataclass
class Examples:
    """Rows of (customer, instant): features, the six labels (NaN = censored/masked), split role."""

    x: np.ndarray  # float32 [n, 150], registry order
    y: dict[str, np.ndarray]  # LABELS; float32; supply_demand [n, 20]
    customer: np.ndarray  # str (object) [n]
    t_us: np.ndarray  # int64 [n]: the scoring instant
    role: np.ndarray  # str (object) [n]: train / validation / test
    after_cut: np.ndarray  # bool [n]: at or after the split's time cut
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows: np.ndarray) -> Examples:
        return Examples(self.x[rows], {k: v[rows] for k, v in self.y.items()}, self.customer[rows], self.t_us[rows],
                        self.role[rows], self.after_cut[rows], self.summary)  # fmt: skip

    def where(self, role: str | None = None, after_cut: bool | None = None) -> Examples:
        mask = np.ones(len(self), dtype=bool)
        if role is not None:
            mask &= self.role == role
        if after_cut is not None:
            mask &= self.after_cut == after_cut
        return self.take(np.flatnonzero(mask))


def merge_shards(parts: Sequence[ShardExamples], summary: LogSummary, split: SplitPlan) -> Examples:
    """Concatenate shards and add the marketplace-wide labels (health, supply/demand)."""
    references: dict[int, EngagementReference] = {}
    market = MarketActivity()
    for part in parts:
        market.merge(part.market)
        for day, reference in part.references.items():
            references.setdefault(day, EngagementReference()).merge(reference)
    keep = [~part.labels["gone"] for part in parts]
    x = np.concatenate([p.x[k] for p, k in zip(parts, keep, strict=True)] + [np.zeros((0, len(FEATURE_NAMES)), np.float32)])
    customer = np.asarray([c for p, k in zip(parts, keep, strict=True) for c, kept in zip(p.customer, k, strict=True) if kept],
                          dtype=object)  # fmt: skip
    t_us = np.concatenate([p.t_us[k] for p, k in zip(parts, keep, strict=True)] + [np.zeros(0, np.int64)])
    labels = {name: np.concatenate([p.labels[name][k] for p, k in zip(parts, keep, strict=True)] + [np.zeros(0)])
              for name in ("churn_risk_14d", "churn_risk_30d", "session_velocity", "first_session_success", "engaged_days_30d")}  # fmt: skip
    days = t_us // DAY_US
    health = np.full(len(t_us), np.nan)
    for day in np.unique(days).tolist():
        rows = days == day
        health[rows] = health_scores(labels["churn_risk_30d"][rows], labels["engaged_days_30d"][rows], references[day])
    unique_days, inverse = np.unique(days, return_inverse=True)
    supply = market.supply_demand(unique_days.tolist(), summary.first_day, summary.last_day)[inverse] if len(days) else np.zeros((0, 20))
    y = {
        "first_session_success": labels["first_session_success"], "session_velocity": labels["session_velocity"],
        "churn_risk_14d": labels["churn_risk_14d"], "churn_risk_30d": labels["churn_risk_30d"],
        "supply_demand": supply.reshape(len(t_us), 20), "health_score": health,
    }  # fmt: skip
    role = np.asarray([split.role(c) for c in customer.tolist()], dtype=object)
    return Examples(
        x=x.astype(np.float32), y={k: np.asarray(v, dtype=np.float32) for k, v in y.items()}, customer=customer,
        t_us=t_us.astype(np.int64), role=role, after_cut=(t_us // DAY_US) >= split.cut_day,
        summary={**summary.describe(), "duplicates_dropped": sum(p.duplicates for p in parts),
                 "active_instants": sum(p.active_instants for p in parts)},
    )  # fmt: skip


@contextmanager
def scratch_dir(parent: Path | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="churn-examples-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def save_examples(examples: Examples, path: Path) -> None:
    """One .npz (features, labels, customers, instants, roles); the summary as JSON inside."""
    import json

    arrays: dict[str, Any] = {"x": examples.x, "customer": examples.customer.astype(str), "t_us": examples.t_us,
                              "role": examples.role.astype(str), "after_cut": examples.after_cut,
                              "summary": np.array(json.dumps(examples.summary, default=str))}  # fmt: skip
    arrays.update({f"y_{k}": v for k, v in examples.y.items()})
    np.savez(path, **arrays)


def load_examples(path: Path) -> Examples:
    import json

    with np.load(path, allow_pickle=False) as z:
        y = {k: z[f"y_{k}"] for k in LABELS}
        return Examples(z["x"], y, z["customer"].astype(object), z["t_us"], z["role"].astype(object), z["after_cut"],
                        json.loads(str(z["summary"])))  # fmt: skip
