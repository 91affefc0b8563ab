"""Outcomes (docs/contracts.md, Outcomes files): who churned when, for training, evaluation and
backtests.

The file is JSON Lines, `{"customer_id": ..., "churned_at": ISO | null}` per line, extra fields
ignored; a customer absent from it did not churn. One reader for everyone: `churn-model`
(training, `evaluate`, `compare`) and `churn-worker backtest` / `tune` (through
`features.churn_outcomes`, which re-exports this with the worker's error type).

Churn *instants*: the file holds one `churned_at` per customer (the latest churn after the latest
sign-up). A customer who churned and came back has `null` there but a `customer_churned` event in
the log; `ChurnTimes` joins both sources, so every churn counts at the moment it happened.

Optionally `<stem>.truth.npz` beside `<stem>.outcomes.jsonl` (what `churn-model simulate` writes)
carries the simulator's latent health; real history has none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from features.exceptions import FeaturesError, UsageError
from features.state import DAY_US, to_us

NEVER = np.iinfo(np.int64).max  # churn time of a customer who did not churn
OUTCOMES_SUFFIX = ".outcomes.jsonl"
EXAMPLE_IDS = 3  # how many offending ids an error message names


class OutcomesError(FeaturesError, UsageError, ValueError):
    """An outcomes file that cannot be read or does not fit the events; one line, says what to do."""


@dataclass(frozen=True)
class HealthTruth:
    start_day: int  # days since the epoch of column 0
    row: dict[str, int]
    health: np.ndarray  # float [customers, days], NaN where unknown

    def at(self, customers: list[str], customer: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        """True health for each (customer index, time) pair, NaN where the truth has none."""
        rows = np.asarray([self.row.get(cid, -1) for cid in customers], dtype=np.int64)[customer]
        days = t_us // DAY_US - self.start_day
        ok = (rows >= 0) & (days >= 0) & (days < self.health.shape[1])
        out = np.full(len(customer), np.nan)
        out[ok] = self.health[rows[ok], days[ok]]
        return out


@dataclass(frozen=True)
class Outcomes:
    churned_at_us: dict[str, int]  # customers who churned; everyone else did not
    health: HealthTruth | None
    path: Path
    listed: frozenset[str] = field(default_factory=frozenset)  # every customer id the file names

    def churn_us(self, customers: list[str]) -> np.ndarray:
        """Churn time per customer (in `customers` order), NEVER for those who did not churn."""
        return np.asarray([self.churned_at_us.get(cid, NEVER) for cid in customers], dtype=np.int64)


def load_outcomes(path: Path) -> Outcomes:
    """Read an outcomes file; `OutcomesError` names the line and the fix."""
    churned: dict[str, int] = {}
    listed: set[str] = set()
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise OutcomesError(f"outcomes file {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                customer, moment = _parse_line(line, path, number)
                listed.add(customer)
                if moment is not None:
                    churned[customer] = moment
        except UnicodeDecodeError:
            raise OutcomesError(f"outcomes file {path}: not UTF-8 text; expected JSON Lines") from None
    return Outcomes(churned, _health_truth(path), path, frozenset(listed))


def _parse_line(line: str, path: Path, number: int) -> tuple[str, int | None]:
    try:
        row = json.loads(line)
        customer, when = row["customer_id"], row.get("churned_at")
        if not isinstance(customer, str) or not customer:
            raise ValueError("customer_id must be a non-empty string")
        if when is None:
            return customer, None
        if not isinstance(when, str):
            raise ValueError("churned_at must be an ISO-8601 string or null")
        moment = datetime.fromisoformat(when)
        if moment.tzinfo is None:
            raise ValueError("churned_at needs a UTC offset or Z")
        return customer, to_us(moment)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OutcomesError(
            f"{path}:{number}: not an outcome ({exc}); expected "
            '{"customer_id": "c-1", "churned_at": "2026-11-20T00:00:00Z" or null}'
        ) from None


def _health_truth(path: Path) -> HealthTruth | None:
    name = path.name
    if not name.endswith(OUTCOMES_SUFFIX):
        return None
    truth = path.with_name(name[: -len(OUTCOMES_SUFFIX)] + ".truth.npz")
    if not truth.exists():
        return None
    try:
        with np.load(truth, allow_pickle=False) as z:
            start = datetime.fromisoformat(str(z["start"]))
            ids = [str(cid) for cid in z["customer_ids"]]
            health = np.asarray(z["health"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise OutcomesError(
            f"health truth {truth}: unreadable ({exc}); remove it or write it again"
        ) from None
    return HealthTruth(to_us(start) // DAY_US, {cid: i for i, cid in enumerate(ids)}, health)


def check_against_events(
    outcomes: Outcomes,
    first_sign_up_us: Mapping[str, int],
    customers_seen: Iterable[str] | None,
    allow_unknown: bool = False,
) -> list[str]:
    """Refuse outcomes that do not fit the log: a churn before the customer's first sign-up in the
    log (always), and customers the log never mentions (unless `allow_unknown`: an outcomes
    export covering more customers than the events). Returns warnings for what was allowed."""
    early = sorted(
        cid
        for cid, moment in outcomes.churned_at_us.items()
        if cid in first_sign_up_us and moment < first_sign_up_us[cid]
    )
    if early:
        raise OutcomesError(
            f"{outcomes.path}: {len(early)} customers churned before they signed up "
            f"(e.g. {', '.join(early[:EXAMPLE_IDS])}): are these the outcomes of this event log?"
        )
    if customers_seen is None:
        return []
    seen = customers_seen if isinstance(customers_seen, set | frozenset) else set(customers_seen)
    unknown = sorted(cid for cid in outcomes.listed if cid not in seen)
    if not unknown:
        return []
    if not allow_unknown:
        raise OutcomesError(
            f"{outcomes.path}: {len(unknown)} of {len(outcomes.listed)} customers never appear in the events "
            f"(e.g. {', '.join(unknown[:EXAMPLE_IDS])}): pass the outcomes of this log, or "
            "--ignore-unknown-outcomes if the file covers more customers than the events"
        )
    return [f"{len(unknown)} customers of {outcomes.path} never appear in the events; ignored"]


class ChurnTimes:
    """Every churn instant of every customer: the outcomes file's `churned_at` joined with the
    log's `customer_churned` events (sorted, each instant once per customer)."""

    def __init__(self, by_customer: Mapping[str, Sequence[int]]) -> None:
        self._times = {
            cid: np.unique(np.asarray(times, dtype=np.int64))
            for cid, times in by_customer.items()
            if len(times)
        }

    @classmethod
    def join(cls, outcomes: Outcomes | None, events: Mapping[str, Sequence[int]] | None = None) -> ChurnTimes:
        merged: dict[str, list[int]] = {cid: list(times) for cid, times in (events or {}).items()}
        for cid, moment in (outcomes.churned_at_us if outcomes else {}).items():
            merged.setdefault(cid, []).append(moment)
        return cls(merged)

    def of(self, customer: str) -> np.ndarray:
        return self._times.get(customer, np.zeros(0, np.int64))

    def churned_ever(self, customers: Sequence[str]) -> np.ndarray:
        return np.asarray([customer in self._times for customer in customers], dtype=bool)

    def next_after(self, customers: Sequence[str], customer: np.ndarray, t_us: np.ndarray) -> np.ndarray:
        """Per row, the customer's first churn strictly after `t_us` (NEVER if none)."""
        out = np.full(len(t_us), NEVER, dtype=np.int64)
        if not len(t_us):
            return out
        order = np.argsort(customer, kind="stable")
        sorted_customers = customer[order]
        bounds = np.flatnonzero(np.diff(sorted_customers)) + 1
        for rows in np.split(order, bounds):
            times = self._times.get(customers[int(customer[rows[0]])])
            if times is None:
                continue
            position = np.searchsorted(times, t_us[rows], side="right")
            found = position < len(times)
            out[rows[found]] = times[position[found]]
        return out
