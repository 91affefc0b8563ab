"""Training and evaluation examples from any event log and outcomes file, with bounded memory.

Examples are built where the model is used: at the daily scoring instant
(`features.activity.day_end_us`) of every customer active then (`features.activity.is_active`),
the instants and population `churn-worker backtest` scores and the live worker re-scores. Features
come from the worker's own code: events go through `MemoryFeatureStore.apply_sync` one UTC day at
a time (`now` = that day's scoring instant, as the backtest processes a day's batch) and the
registry is read with `compute_features_batch` at the day's end, so a row sees exactly the events
up to its instant. Labels (`features.labels`) look only after it.

Two passes, so memory is bounded by the largest shard, not the log, and both run on the
backtest's engine (`plumbing.parallel`: in process or on Dask):
1. `model.logsplit.split_log`: the log split by customer hash (`features.shards`, every line
   validated once) and the whole-log facts (time span, the `first_session` flag, sign-ups, churns).
2. `fold_shard`: per shard, events sorted by time, duplicates (same event_id) dropped, folded day
   by day from the log's first to its last day; features of the sampled active customers at each
   day's end; labels once the shard's whole future is known. Shards are independent;
   `merge_shards` adds the marketplace-wide parts (the health percentile's reference,
   supply/demand) and concatenates.

Sampling (training only): daily instants of every active customer are many, and consecutive days
of one customer are nearly the same example. `SamplePlan` keeps every k-th day per customer (a
random phase per customer, from its id hash, so every weekday is represented) per split role;
evaluation keeps every instant. The health reference and the labels always use every active
instant, sampled or not.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from features.activity import day_end_us, is_active
from features.churn_outcomes import ChurnTimes
from features.events import Event, parse_event
from features.labels import (
    CustomerFacts,
    EngagementReference,
    LabelContext,
    MarketActivity,
    customer_labels,
    health_scores,
)
from features.registry import FEATURE_NAMES, compute_features_batch
from features.shards import shard_of
from features.state import DAY_US, CustomerState, from_us
from features.store import DEFAULT_RETENTION, MemoryFeatureStore
from model.logsplit import LogSummary, ShardRef
from model.splits import SplitPlan

LABELS: tuple[str, ...] = (
    "first_session_success",
    "session_velocity",
    "churn_risk_14d",
    "churn_risk_30d",
    "supply_demand",
    "health_score",
)


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


@dataclass(frozen=True)
class FoldTask:
    """Everything one shard's fold needs (picklable: it travels to a Dask worker)."""

    ref: ShardRef
    first_day: int  # the log's first and last UTC day, and its latest event time
    last_day: int
    end_us: int
    log_uses_flag: bool
    churned_at: dict[str, int]  # the outcomes' churn time of this shard's customers
    churn_events: dict[str, list[int]]  # their customer_churned instants
    plan: SamplePlan
    retention: timedelta = DEFAULT_RETENTION

    @classmethod
    def of(
        cls,
        ref: ShardRef,
        summary: LogSummary,
        churned_at: dict[str, int],
        plan: SamplePlan,
        retention: timedelta = DEFAULT_RETENTION,
    ) -> FoldTask:
        """The task of `ref`; `churned_at`: the outcomes of (at least) the shard's customers."""
        assert summary.last_us is not None
        return cls(
            ref,
            summary.first_day,
            summary.last_day,
            summary.last_us,
            summary.log_uses_flag,
            churned_at,
            {c: t for c, t in summary.churn_events.items() if shard_of(c, ref.shards) == ref.shard},
            plan,
            retention,
        )


def fold_shard(task: FoldTask) -> ShardExamples:
    """Pass 2 for one shard: features at sampled instants, labels and references at every instant.
    A module-level function of one picklable argument, for `plumbing.parallel.map_shards`."""
    plan, retention = task.plan, task.retention
    timed = sorted(((t, parse_event(text)) for _, _, t, text in task.ref.lines()), key=lambda pair: pair[0])
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
    for day in range(task.first_day, task.last_day + 1):
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
            blocks.append(
                compute_features_batch([states[cid] for cid in batch], from_us(at)).astype(np.float32)
            )
    del states, store

    churns = {cid: list(times) for cid, times in task.churn_events.items()}
    for cid, moment in task.churned_at.items():
        churns.setdefault(cid, []).append(moment)
    churn = ChurnTimes(churns)
    context = LabelContext(end_us=task.end_us, log_uses_flag=task.log_uses_flag)
    labels, references = _shard_labels(rows_customer, np.asarray(rows_day, np.int64), facts, churn, context)
    rows = np.asarray(sampled, dtype=np.int64)
    x = np.concatenate(blocks) if blocks else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    return ShardExamples(
        x=x,
        customer=[rows_customer[i] for i in rows.tolist()],
        t_us=(np.asarray(rows_day, np.int64)[rows] + 1) * DAY_US - 1,
        labels={k: v[rows] for k, v in labels.items()},
        references=references,
        market=market,
        duplicates=duplicates,
        active_instants=len(rows_customer),
    )


def thin(part: ShardExamples, plan: SamplePlan) -> ShardExamples:
    """Keep the rows `plan` would have kept (its rule depends only on the customer and the day, so
    thinning a fully kept shard gives what folding it with `plan` would have given)."""
    split = plan.split
    keep = np.asarray(
        [
            plan.keep(c, int(t // DAY_US), split.role(c), t // DAY_US >= split.cut_day)
            for c, t in zip(part.customer, part.t_us.tolist(), strict=True)
        ],
        dtype=bool,
    )
    rows = np.flatnonzero(keep)
    return ShardExamples(
        x=part.x[rows],
        customer=[part.customer[i] for i in rows.tolist()],
        t_us=part.t_us[rows],
        labels={k: v[rows] for k, v in part.labels.items()},
        references=part.references,
        market=part.market,
        duplicates=part.duplicates,
        active_instants=part.active_instants,
    )


def _shard_labels(
    customers: list[str],
    days: np.ndarray,
    facts: dict[str, CustomerFacts],
    churn: ChurnTimes,
    context: LabelContext,
) -> tuple[dict[str, np.ndarray], dict[int, EngagementReference]]:
    """Labels of every active instant (rows in `customers`/`days` order); instants at which the
    outcomes say the customer had already churned (with no sign-up since) are marked `gone`."""
    n = len(customers)
    names = (
        "churn_risk_14d",
        "churn_risk_30d",
        "session_velocity",
        "first_session_success",
        "engaged_days_30d",
    )
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
            last_sign_up = _latest_at_or_before(
                np.sort(np.asarray(fact.sign_ups, dtype=np.int64)), t_us[rows]
            )
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
        return Examples(
            self.x[rows],
            {k: v[rows] for k, v in self.y.items()},
            self.customer[rows],
            self.t_us[rows],
            self.role[rows],
            self.after_cut[rows],
            self.summary,
        )

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
    x = np.concatenate(
        [p.x[k] for p, k in zip(parts, keep, strict=True)] + [np.zeros((0, len(FEATURE_NAMES)), np.float32)]
    )
    customer = np.asarray(
        [c for p, k in zip(parts, keep, strict=True) for c, kept in zip(p.customer, k, strict=True) if kept],
        dtype=object,
    )
    t_us = np.concatenate([p.t_us[k] for p, k in zip(parts, keep, strict=True)] + [np.zeros(0, np.int64)])
    labels = {
        name: np.concatenate([p.labels[name][k] for p, k in zip(parts, keep, strict=True)] + [np.zeros(0)])
        for name in (
            "churn_risk_14d",
            "churn_risk_30d",
            "session_velocity",
            "first_session_success",
            "engaged_days_30d",
        )
    }
    days = t_us // DAY_US
    health = np.full(len(t_us), np.nan)
    for day in np.unique(days).tolist():
        rows = days == day
        health[rows] = health_scores(
            labels["churn_risk_30d"][rows], labels["engaged_days_30d"][rows], references[day]
        )
    unique_days, inverse = np.unique(days, return_inverse=True)
    supply = (
        market.supply_demand(unique_days.tolist(), summary.first_day, summary.last_day)[inverse]
        if len(days)
        else np.zeros((0, 20))
    )
    y = {
        "first_session_success": labels["first_session_success"],
        "session_velocity": labels["session_velocity"],
        "churn_risk_14d": labels["churn_risk_14d"],
        "churn_risk_30d": labels["churn_risk_30d"],
        "supply_demand": supply.reshape(len(t_us), 20),
        "health_score": health,
    }
    role = np.asarray([split.role(c) for c in customer.tolist()], dtype=object)
    return Examples(
        x=x.astype(np.float32),
        y={k: np.asarray(v, dtype=np.float32) for k, v in y.items()},
        customer=customer,
        t_us=t_us.astype(np.int64),
        role=role,
        after_cut=(t_us // DAY_US) >= split.cut_day,
        summary={
            **summary.describe(),
            "duplicates_dropped": sum(p.duplicates for p in parts),
            "active_instants": sum(p.active_instants for p in parts),
        },
    )


@contextmanager
def scratch_dir(parent: Path | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="churn-examples-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
