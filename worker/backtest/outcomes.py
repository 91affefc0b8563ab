"""Outcomes (CONTRACTS.md section 5): who churned when, and, where known, true health.

The file is JSON Lines, `{"customer_id": ..., "churned_at": ISO | null}` per line, extra fields
ignored; a customer absent from it did not churn. Health truth is optional: `churn-model simulate`
writes it beside the outcomes as `<stem>.truth.npz` (latent health of every customer at the end of
every simulated day), and real history has none, in which case the report says health MAE is n/a.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from features.state import DAY_US, to_us
from worker.exceptions import UsageError

NEVER = np.iinfo(np.int64).max  # churn time of a customer who did not churn
OUTCOMES_SUFFIX = ".outcomes.jsonl"


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

    def churn_us(self, customers: list[str]) -> np.ndarray:
        """Churn time per customer (in `customers` order), NEVER for those who did not churn."""
        return np.asarray([self.churned_at_us.get(cid, NEVER) for cid in customers], dtype=np.int64)


def load_outcomes(path: Path) -> Outcomes:
    churned: dict[str, int] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"outcomes file {path}: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                customer, when = row["customer_id"], row.get("churned_at")
                if not isinstance(customer, str) or not customer:
                    raise ValueError("customer_id must be a non-empty string")
                if when is not None:
                    moment = datetime.fromisoformat(when)
                    if moment.tzinfo is None:
                        raise ValueError("churned_at needs a UTC offset or Z")
                    churned[customer] = to_us(moment)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise UsageError(
                    f"{path}:{number}: not an outcome ({exc}); expected "
                    '{"customer_id": "c-1", "churned_at": "2026-11-20T00:00:00Z" or null}'
                ) from None
    return Outcomes(churned, _health_truth(path), path)


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
        raise UsageError(f"health truth {truth}: unreadable ({exc}); remove it or write it again") from None
    return HealthTruth(to_us(start) // DAY_US, {cid: i for i, cid in enumerate(ids)}, health)
