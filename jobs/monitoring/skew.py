"""Training/serving skew: the served sample's features recomputed offline, from the event archive.

For every sampled row (customer, as_of) the customer's archived events (duplicates dropped by
event_id) are folded through `MemoryFeatureStore.apply_sync` with `now` = the row's instant and the
registry is read with `compute_features_batch` at that instant: the fold training examples and the
backtest use (model/examples.py), so a difference is a difference between what the model was
trained on and what it was served. Only events that occurred at or before the instant count, the
worker's own rule. A difference has two usual causes, and the report cannot tell them apart, only
size them: the live path did not have an event yet (it arrived late; the archive has it now), or
the live and offline feature code differ (a deploy of one without the other).

Per feature: rows whose values differ beyond `atol + rtol * |offline|`, their share, the largest
absolute difference, and a few example rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from features.eventfile import EventSource, read_events
from features.events import Event
from features.exceptions import EventParseError
from features.registry import FEATURE_NAMES, compute_features_batch
from features.state import CustomerState
from features.store import DEFAULT_RETENTION, MemoryFeatureStore
from jobs.monitoring.served import ServedRow

ATOL = 1e-6
RTOL = 1e-6
DEFAULT_MAX_SHARE = 0.01
EXAMPLES = 3


@dataclass
class FeatureSkew:
    name: str
    differing: int
    max_diff: float
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SkewReport:
    rows: int
    features: list[FeatureSkew]  # every feature, registry order
    max_share: float = DEFAULT_MAX_SHARE
    customers_without_events: int = 0

    def share(self, feature: FeatureSkew) -> float:
        return feature.differing / self.rows if self.rows else 0.0

    def skewed(self) -> list[FeatureSkew]:
        """Features that differ on any row, most differing first."""
        return sorted((f for f in self.features if f.differing), key=lambda f: (-f.differing, f.name))

    @property
    def failed(self) -> bool:
        return any(self.share(f) > self.max_share for f in self.features)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "max_share": self.max_share,
            "failed": self.failed,
            "customers_without_events": self.customers_without_events,
            "features": [
                {
                    "name": f.name,
                    "differing": f.differing,
                    "share": self.share(f),
                    "max_diff": f.max_diff,
                    "examples": f.examples,
                }
                for f in self.skewed()
            ],
        }


def archived_events(
    sources: Sequence[EventSource], customers: set[str]
) -> tuple[dict[str, list[Event]], datetime | None]:
    """The served customers' archived events, each event_id once, in event-time order; and the
    archive's newest event time (how far its evidence reaches, for calibration). Only the served
    customers' events are kept: memory is the sample's, not the archive's."""
    found: dict[str, dict[str, Event]] = defaultdict(dict)
    latest: datetime | None = None
    for item in read_events(sources):
        event = item.item
        if isinstance(event, EventParseError):  # a bad line: the archive's readers skip it too
            continue
        if latest is None or event.occurred_at > latest:
            latest = event.occurred_at
        if event.customer_id in customers:
            found[event.customer_id].setdefault(event.event_id, event)
    return {cid: sorted(evs.values(), key=lambda e: e.occurred_at) for cid, evs in found.items()}, latest


def offline_features(
    rows: Sequence[ServedRow], events: Sequence[Event], retention: timedelta = DEFAULT_RETENTION
) -> np.ndarray:
    """One customer's rows (any order) recomputed from their events; returns rows in the given order."""
    store = MemoryFeatureStore(retention)
    order = sorted(range(len(rows)), key=lambda i: rows[i].as_of)
    out = np.empty((len(rows), len(FEATURE_NAMES)))
    state = CustomerState(rows[0].customer_id) if rows else None
    applied = 0
    for i in order:
        row = rows[i]
        upto = applied
        while upto < len(events) and events[upto].occurred_at <= row.as_of:
            upto += 1
        if upto > applied:
            state = store.apply_sync(list(events[applied:upto]), now=row.as_of).states[row.customer_id]
            applied = upto
        assert state is not None
        out[i] = compute_features_batch([state], row.as_of)[0]
    return out


def check_skew(
    rows: Iterable[ServedRow],
    events: dict[str, list[Event]],
    max_share: float = DEFAULT_MAX_SHARE,
    retention: timedelta = DEFAULT_RETENTION,
    atol: float = ATOL,
    rtol: float = RTOL,
) -> SkewReport:
    by_customer: dict[str, list[ServedRow]] = defaultdict(list)
    for row in rows:
        by_customer[row.customer_id].append(row)
    differing = np.zeros(len(FEATURE_NAMES), np.int64)
    max_diff = np.zeros(len(FEATURE_NAMES))
    examples: dict[int, list[dict[str, Any]]] = defaultdict(list)
    total = 0
    missing = 0
    for cid, group in sorted(by_customer.items()):
        if cid not in events:
            missing += 1
        served = np.stack([row.features for row in group])
        offline = offline_features(group, events.get(cid, []), retention)
        diff = np.abs(served - offline)
        bad = diff > atol + rtol * np.abs(offline)
        differing += bad.sum(axis=0)
        max_diff = np.maximum(max_diff, np.where(bad, diff, 0.0).max(axis=0))
        for r, c in zip(*np.nonzero(bad), strict=True):
            if len(examples[int(c)]) < EXAMPLES:
                examples[int(c)].append(
                    {
                        "customer_id": cid,
                        "as_of": group[int(r)].as_of.isoformat(),
                        "served": float(served[r, c]),
                        "offline": float(offline[r, c]),
                    }
                )
        total += len(group)
    features = [
        FeatureSkew(name, int(differing[i]), float(max_diff[i]), examples.get(i, []))
        for i, name in enumerate(FEATURE_NAMES)
    ]
    return SkewReport(total, features, max_share, missing)


def format_table(report: SkewReport, limit: int = 20) -> str:
    out = [
        f"skew: {report.rows} served rows recomputed from the archive "
        f"(fail above a share of {report.max_share:g} per feature)"
    ]
    if report.customers_without_events:
        out.append(
            f"  {report.customers_without_events} customers have no archived events (archive starts later?)"
        )
    skewed = report.skewed()
    if not skewed:
        out.append("  no feature differs beyond float tolerance: 0 rows on every feature")
    else:
        out.append(f"  {'feature':<40} {'rows':>6} {'share':>8} {'max diff':>10}")
        for f in skewed[:limit]:
            out.append(f"  {f.name:<40} {f.differing:>6} {report.share(f):>8.2%} {f.max_diff:>10.4g}")
        if len(skewed) > limit:
            out.append(f"  ... and {len(skewed) - limit} more features")
    out.append("FAIL: skew above the share" if report.failed else "OK")
    return "\n".join(out)
