"""In-memory twins for a backtest that also write down what the pipeline scored.

The report's model metrics and `tune`'s threshold sweeps need, for every scoring instant (a
customer scored at a batch's time, or re-scored at a day's end), the model's prediction and the few
features the rules read. The pipeline does not hand those out, but it does call two ports in a fixed
way per batch: the store's `apply` (events) or `get` (re-scoring), whose customers, sorted, are the
rows of the matrix it computes next, and then the scorer's `score(matrix)`. Wrapping both records
each row with its customer, time and trigger, without touching the pipeline.

A customer whose state shows churn is not routed by the pipeline and not alerted until they sign
up again (the ledger remembers); their rows in between are left out of the log for the same reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from features.activity import EVENT_TRIGGER, RESCORE_TRIGGER, has_churned
from features.events import Event
from features.registry import FEATURE_INDEX
from features.state import CustomerState, to_us
from features.store import ApplyResult, MemoryFeatureStore
from worker.ports import Record
from worker.scoring import Scorer

# Features the alert rules read (worker/alerts/rules.py), kept per scoring instant for `tune`.
RULE_FEATURES = ("ib_call_count_14d", "has_first_session", "session_frequency_30d")
# Prediction fields kept per scoring instant (the rules' inputs and the report's model metrics).
PREDICTION_FIELDS = (
    "churn_risk_14d",
    "churn_risk_30d",
    "customer_health_score",
    "first_session_success_prob",
    "predicted_session_velocity",
)


SCORING_GROUPS = 64  # customer groups scored in calls of their own; shard counts must divide this


def scoring_group(customer_id: str) -> int:
    """The customer's group in [0, SCORING_GROUPS): a stable hash, the same in every process (the
    shards of a sharded backtest are unions of these: shard = group % shards)."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SCORING_GROUPS


TRIGGERS = (EVENT_TRIGGER, RESCORE_TRIGGER)  # the log's `trigger` column holds an index into this


@dataclass
class Quarantined:
    line: int | None  # the line (or Parquet row) number the backtest gave the record as its handle
    error_code: str
    error_detail: str


@dataclass
class MemoryDeadLetterQueue:
    """The DLQ twin: keeps what the pipeline quarantined, with the record's line number."""

    items: list[Quarantined] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    async def quarantine(self, record: Record, error_code: str, error_detail: str) -> None:
        line = record.handle if isinstance(record.handle, int) else None
        self.items.append(Quarantined(line, error_code, error_detail))
        self.counts[error_code] += 1

    def take(self) -> list[Quarantined]:
        items, self.items = self.items, []
        return items


@dataclass
class ScoringLog:
    """Columns, one row per scoring instant of a customer not (yet) churned (`tier`: the customer's
    tier then, as an index into features.events.TIERS, -1 when unknown)."""

    customers: list[str] = field(default_factory=list, repr=False)  # index -> customer id
    index: dict[str, int] = field(default_factory=dict, repr=False)
    parts: list[dict[str, np.ndarray]] = field(default_factory=list, repr=False)
    model_version: str | None = None  # as the scorer's predictions name it
    _pending: list[str] = field(default_factory=list, repr=False)  # rows of the next matrix, in order
    _keep: list[bool] = field(default_factory=list, repr=False)
    _tiers: list[int] = field(default_factory=list, repr=False)  # per row: TIERS index, -1 unknown
    _trigger: int = 0

    @property
    def pending(self) -> list[str]:
        """The customers of the next matrix's rows, in row order."""
        return self._pending

    def customer_index(self, customer_id: str) -> int:
        position = self.index.get(customer_id)
        if position is None:
            position = self.index[customer_id] = len(self.customers)
            self.customers.append(customer_id)
        return position

    def expect(self, states: dict[str, CustomerState], trigger: str = EVENT_TRIGGER) -> None:
        self._pending = sorted(states)  # the pipeline's row order
        self._keep = []
        self._tiers = []
        self._trigger = TRIGGERS.index(trigger)
        for cid in self._pending:
            self.customer_index(cid)
            self._keep.append(not has_churned(states[cid].profile))  # only these are routed (and claimable)
            tier = states[cid].profile.tier
            self._tiers.append(tier[2] if tier else -1)  # the customer's segment, for per-tier tuning

    def add(self, features: np.ndarray, predictions: Sequence[dict[str, Any]], now: datetime) -> None:
        if len(self._pending) != len(features):
            raise RuntimeError("scoring log out of step with the pipeline: a matrix without its apply")
        keep = np.asarray(self._keep, dtype=bool)
        if predictions and self.model_version is None:
            version = predictions[0].get("model_version")
            self.model_version = str(version) if version is not None else None
        part: dict[str, np.ndarray] = {
            "customer": np.asarray([self.index[c] for c in self._pending], dtype=np.int64)[keep],
            "t_us": np.full(int(keep.sum()), to_us(now), dtype=np.int64),
            "trigger": np.full(int(keep.sum()), self._trigger, dtype=np.int8),
            "tier": np.asarray(self._tiers, dtype=np.int8)[keep],
        }
        for name in RULE_FEATURES:
            part[name] = np.asarray(features[:, FEATURE_INDEX[name]], dtype=np.float64)[keep]
        for name in PREDICTION_FIELDS:
            part[name] = np.asarray([float(p[name]) for p in predictions], dtype=np.float64)[keep]
        self.parts.append(part)
        self._pending, self._keep, self._tiers = [], [], []

    @classmethod
    def merged(cls, logs: Sequence[ScoringLog]) -> ScoringLog:
        """One log of several shards' (disjoint customers): customers in id order, rows by (time,
        customer), so the result is the same however the customers were split."""
        merged = cls()
        for cid in sorted({cid for log in logs for cid in log.customers}):
            merged.customer_index(cid)
        parts = []
        for log in logs:
            columns = log.columns()
            remap = np.asarray([merged.index[cid] for cid in log.customers], dtype=np.int64)
            columns["customer"] = remap[columns["customer"]] if len(remap) else columns["customer"]
            parts.append(columns)
        if parts:
            names = list(parts[0])
            joined = {name: np.concatenate([part[name] for part in parts]) for name in names}
            order = np.lexsort((joined["trigger"], joined["customer"], joined["t_us"]))
            merged.parts = [{name: values[order] for name, values in joined.items()}]
        merged.model_version = next((log.model_version for log in logs if log.model_version), None)
        return merged

    def columns(self) -> dict[str, np.ndarray]:
        """Every row so far, as one array per column (customer, t_us, trigger, features, predictions)."""
        names = ["customer", "t_us", "trigger", "tier", *RULE_FEATURES, *PREDICTION_FIELDS]
        if not self.parts:
            kinds = {"customer": np.int64, "t_us": np.int64, "trigger": np.int8, "tier": np.int8}
            return {name: np.zeros(0, dtype=kinds.get(name, np.float64)) for name in names}
        return {name: np.concatenate([part[name] for part in self.parts]) for name in names}


class RecordingStore:
    """A MemoryFeatureStore that tells the log which customers the next matrix holds.

    It also keeps every customer's state (the memory store's own objects, not copies), so the
    backtest can find who is active at a day's end, and `get` (what the pipeline reads to re-score
    quiet customers) hands those objects out without the memory store's defensive deep copy:
    nothing in a backtest mutates a state outside `apply`."""

    def __init__(self, inner: MemoryFeatureStore, log: ScoringLog) -> None:
        self.inner = inner
        self._log = log
        self.states: dict[str, CustomerState] = {}
        self.last_applied: list[str] = []  # the customers of the latest `apply`

    async def apply(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        result = self.inner.apply_sync(events, now)
        self.states.update(result.states)
        self.last_applied = list(result.states)
        self._log.expect(result.states, EVENT_TRIGGER)
        return result

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        found = {cid: self.states[cid] for cid in customer_ids if cid in self.states}
        self._log.expect(found, RESCORE_TRIGGER)
        return found


class RecordingScorer:
    """Any Scorer (in process or an endpoint), with every scored row written to the log.

    Rows are scored in one call per customer group (`scoring_group`), not all at once: a model's
    float32 arithmetic depends, in its last bits, on which other rows share its matrix (the BLAS
    kernels block the work by the matrix's shape), and a backtest split into shards by customer
    must give byte-identical alerts and reports for any number of shards. A shard is a union of
    whole groups, so every call holds the same rows in the same order however the work is split."""

    def __init__(self, inner: Scorer, log: ScoringLog, clock: Callable[[], datetime]) -> None:
        self.inner = inner
        self._log = log
        self._clock = clock

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        groups = np.asarray([scoring_group(cid) for cid in self._log.pending], dtype=np.int64)
        if len(groups) != len(features):
            raise RuntimeError("scoring log out of step with the pipeline: a matrix without its customers")
        predictions: list[dict[str, Any]] = [{}] * len(features)
        for group in np.unique(groups).tolist():
            rows = np.flatnonzero(groups == group)
            for row, prediction in zip(rows.tolist(), await self.inner.score(features[rows]), strict=True):
                predictions[row] = prediction
        self._log.add(features, predictions, self._clock())
        return predictions
