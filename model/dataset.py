"""Point-in-time training examples from a simulation.

Features come from the worker's own code: every event is replayed in time order through one
`MemoryFeatureStore` (`apply_sync`, one UTC day per batch, `now` = the batch's last event time) and
the registry is read at snapshot instants, the last microsecond of a UTC day, with
`compute_features_batch` (what `compute_features` runs, for many customers at once). Windows count
whole UTC days up to the day of `as_of` (features/windows.py) and the replay has applied nothing
later when it reads, so a snapshot sees exactly the events up to `as_of`, lifetime profile included.

A snapshot is taken only while the customer is active (signed up, not churned) and only where the
30-day label horizon ends inside the simulation. Labels look only after `as_of`:
- churn_risk_14d / churn_risk_30d: churned_at in (as_of, as_of + 14 or 30 days];
- session_velocity: sessions completed in (as_of, as_of + 14 days], per week;
- health_score, supply_demand and the oracle churn probabilities: the simulator's truth at as_of;
- first_session_success: the customer's first-session outcome whenever it happens (the seed's
  label); 0 when the customer never completes a session, and `meta.first_session_known` says which.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.events import validate_event
from features.registry import FEATURE_HASH, FEATURE_NAMES, compute_features_batch
from features.state import DAY_US, CustomerState, from_us, to_us
from features.store import MemoryFeatureStore
from model.simulator import SEGMENTS, Simulation, event_columns, frame_to_events, load_simulation

LABELS: tuple[str, ...] = (
    "first_session_success", "session_velocity", "churn_risk_14d", "churn_risk_30d", "supply_demand", "health_score",
)  # fmt: skip
HORIZON_DAYS = 30


@dataclass
class Examples:
    X: np.ndarray  # float32 [n, len(FEATURE_NAMES)], registry order
    y: dict[str, np.ndarray]  # LABELS; float32, [n] each, supply_demand [n, 20]
    oracle: dict[str, np.ndarray]  # true churn probabilities: churn_risk_14d, churn_risk_30d
    meta: pd.DataFrame  # customer_id, as_of, day, segment, first_session_known
    feature_hash: str = FEATURE_HASH

    def __len__(self) -> int:
        return len(self.X)

    def subset(self, rows: np.ndarray) -> Examples:
        return Examples(self.X[rows], {k: v[rows] for k, v in self.y.items()},
                        {k: v[rows] for k, v in self.oracle.items()}, self.meta.iloc[rows].reset_index(drop=True),
                        self.feature_hash)  # fmt: skip


def snapshot_days(days: int, every: int, warmup: int, phase: int = 0) -> np.ndarray:
    """Day indices whose end is a snapshot: after `warmup` whole days, every `every` days, while the
    30-day label horizon still ends inside the simulation."""
    return np.arange(warmup - 1 + phase, days - HORIZON_DAYS, every)


def build_examples(source: Simulation | str | Path, snapshot_every_days: int = 7, warmup_days: int = 30,
                   seed: int | None = 0, progress: bool | None = None) -> Examples:  # fmt: skip
    """Examples for every active customer at every snapshot of a simulation (or its events file).

    seed: each customer's snapshots start at a random phase within the first `snapshot_every_days`, so
    snapshots (and the daily supply_demand label) spread over all days; None puts every customer on
    the same days."""
    if snapshot_every_days < 1 or warmup_days < 1:
        raise ValueError("snapshot_every_days and warmup_days must be at least 1")
    sim = source if isinstance(source, Simulation) else load_simulation(source)
    truth, frame = sim.truth, sim.frame
    n = len(truth.customer_ids)
    rng = np.random.default_rng(seed)
    phases = rng.integers(0, snapshot_every_days, n) if seed is not None else np.zeros(n, np.int64)
    as_of_us = to_us(sim.start) + (np.arange(sim.days) + 1) * DAY_US - 1  # last microsecond of each day
    # Who is snapshotted when: on their schedule and active at the end of the day.
    active = (truth.segment >= 0) & (truth.segment < SEGMENTS.index("churned"))
    due = np.zeros_like(active)
    for phase in range(snapshot_every_days):
        days = snapshot_days(sim.days, snapshot_every_days, warmup_days, phase)
        due[np.ix_(phases == phase, days)] = True
    due &= active

    # Replay every event up to the last snapshot, one UTC day per batch, in time order.
    occurred = frame["occurred_us"].to_numpy()
    columns = event_columns(frame)
    store = MemoryFeatureStore()
    states: dict[str, CustomerState] = {}
    applied = 0
    blocks: list[tuple[np.ndarray, int, np.ndarray]] = []  # (truth rows, day, features) per snapshot day
    snapshot_on = np.flatnonzero(due.any(axis=0))
    show = progress if progress is not None else (sys.stderr.isatty() and len(frame) >= 200_000)
    for d in tqdm(
        snapshot_on.tolist(), desc="examples", unit="snapshot day", file=sys.stderr, disable=not show
    ):
        upto = int(np.searchsorted(occurred, as_of_us[d], side="right"))
        for lo, hi in _day_batches(occurred, applied, upto):
            events = [validate_event(e) for e in frame_to_events(columns, np.arange(lo, hi))]
            states.update(store.apply_sync(events, now=from_us(int(occurred[hi - 1]))).states)
        applied = upto
        rows = np.array(
            [i for i in np.flatnonzero(due[:, d]) if str(truth.customer_ids[i]) in states], np.int64
        )
        if len(rows):  # an active simulated customer always has events (the sign-up at least)
            batch = [states[str(truth.customer_ids[i])] for i in rows]
            blocks.append((rows, d, compute_features_batch(batch, from_us(int(as_of_us[d])))))

    ti = np.concatenate([rows for rows, _, _ in blocks] + [np.zeros(0, np.int64)])
    day = np.concatenate([np.full(len(rows), d) for rows, d, _ in blocks] + [np.zeros(0, np.int64)])
    X = np.concatenate([x for _, _, x in blocks] + [np.zeros((0, len(FEATURE_NAMES)))])
    return _assemble(sim, X, ti, day, as_of_us[day])


def _day_batches(occurred: np.ndarray, lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) cut where the UTC day changes: each batch is applied with `now` = its last event."""
    if hi <= lo:
        return []
    days = occurred[lo:hi] // DAY_US
    cuts = lo + np.flatnonzero(np.diff(days)) + 1
    edges = [lo, *cuts.tolist(), hi]
    return list(itertools.pairwise(edges))


def future_labels(as_of_us: np.ndarray, churn_us: np.ndarray, completed_us: list[np.ndarray]) -> np.ndarray:
    """[n, 3]: churned within 14 days, within 30 days, completed sessions per week over 14 days, all
    strictly after as_of. churn_us: the customer's churn instant (int64 max if never); completed_us:
    each row's customer's completed-session instants, sorted."""
    h14, h30 = as_of_us + 14 * DAY_US, as_of_us + 30 * DAY_US
    churn14 = (churn_us > as_of_us) & (churn_us <= h14)
    churn30 = (churn_us > as_of_us) & (churn_us <= h30)
    sessions = np.array([np.searchsorted(t, b, side="right") - np.searchsorted(t, a, side="right")
                         for t, a, b in zip(completed_us, as_of_us.tolist(), h14.tolist(), strict=True)])  # fmt: skip
    return np.stack([churn14, churn30, sessions.reshape(-1) / 2.0], axis=1).astype(np.float32)


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _assemble(
    sim: Simulation, X: np.ndarray, ti: np.ndarray, day: np.ndarray, as_of_us: np.ndarray
) -> Examples:
    truth = sim.truth
    n = len(ti)
    ids = truth.customer_ids[ti].astype(str)
    never = np.iinfo(np.int64).max
    churn_at = {o["customer_id"]: to_us(_parse(o["churned_at"])) for o in sim.outcomes if o.get("churned_at")}
    first = {o["customer_id"]: o.get("first_session_success") for o in sim.outcomes}
    frame = sim.frame
    done = frame[frame["type"] == "session_completed"]
    completed = {cid: np.sort(group.to_numpy()) for cid, group in done.groupby("customer_id")["occurred_us"]}
    empty = np.zeros(0, np.int64)
    labels = future_labels(as_of_us, np.array([churn_at.get(c, never) for c in ids], dtype=np.int64),
                           [completed.get(c, empty) for c in ids]).reshape(n, 3)  # fmt: skip
    fs = [first.get(c) for c in ids]
    y = {
        "first_session_success": np.array([1.0 if v else 0.0 for v in fs], dtype=np.float32),
        "session_velocity": labels[:, 2],
        "churn_risk_14d": labels[:, 0],
        "churn_risk_30d": labels[:, 1],
        "supply_demand": truth.supply_demand[day].astype(np.float32).reshape(n, 20),
        "health_score": truth.health[ti, day].astype(np.float32),
    }
    oracle = {"churn_risk_14d": truth.churn_prob_14d[ti, day].astype(np.float32),
              "churn_risk_30d": truth.churn_prob_30d[ti, day].astype(np.float32)}  # fmt: skip
    meta = pd.DataFrame({
        "customer_id": ids.astype(object),
        "as_of": [from_us(int(u)) for u in as_of_us],
        "day": day,
        "segment": np.array(SEGMENTS, dtype=object)[truth.segment[ti, day]],
        "first_session_known": np.array([v is not None for v in fs], dtype=bool),
    })  # fmt: skip
    return Examples(X.astype(np.float32).reshape(n, len(FEATURE_NAMES)), y, oracle, meta)


def split_by_customer(
    examples: Examples, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Examples, Examples]:
    """(train, test) with whole customers held out: no customer has examples on both sides."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    customers = np.unique(examples.meta["customer_id"].to_numpy().astype(str))
    held = np.random.default_rng(seed).permutation(customers)[: max(1, round(len(customers) * test_fraction))]
    is_test = examples.meta["customer_id"].isin(set(held.tolist())).to_numpy()
    return examples.subset(np.flatnonzero(~is_test)), examples.subset(np.flatnonzero(is_test))


def save_examples(examples: Examples, path: str | Path) -> None:
    """One .npz with X, every label, the oracle and the meta columns."""
    m = examples.meta
    arrays: dict[str, np.ndarray] = {
        "X": examples.X, "feature_hash": np.array(examples.feature_hash),
        **{f"y_{k}": v for k, v in examples.y.items()}, **{f"oracle_{k}": v for k, v in examples.oracle.items()},
        "customer_id": m["customer_id"].to_numpy().astype(str), "day": m["day"].to_numpy(),
        "as_of_us": np.array([to_us(t) for t in m["as_of"]], dtype=np.int64),
        "segment": m["segment"].to_numpy().astype(str), "first_session_known": m["first_session_known"].to_numpy(),
    }  # fmt: skip
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly


def load_examples(path: str | Path) -> Examples:
    with np.load(path, allow_pickle=False) as z:
        y = {k: z[f"y_{k}"] for k in LABELS}
        oracle = {k: z[f"oracle_{k}"] for k in ("churn_risk_14d", "churn_risk_30d")}
        meta = pd.DataFrame({
            "customer_id": z["customer_id"].astype(object), "as_of": [from_us(int(u)) for u in z["as_of_us"]],
            "day": z["day"], "segment": z["segment"].astype(object), "first_session_known": z["first_session_known"],
        })  # fmt: skip
        return Examples(z["X"], y, oracle, meta, str(z["feature_hash"]))
