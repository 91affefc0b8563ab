"""Honest splits: out of customer and out of time (a cut day).

Which customers are held out: by default the ones who appeared last in the log (the latest
`validation_fraction + test_fraction` of customers by first event, divided between validation and
test by a stable hash of the id). New customers are who a model meets after training, and they
differ from the old ones (shorter tenure, often more churn), so validating, calibrating and testing
on them is the honest reading; `holdout="random"` (a hash of the id alone) is the other choice.

Training mode:
- train: every instant of customers hashed to `train`, flagged before / after the cut: the model's
  earlier-instants member learns from those before the cut only (out of time), its every-instant
  member from all of them (model/training.py `fit_ensemble` says why);
- validation: instants at or after the cut, of other customers (early stopping, calibration);
- test: every instant of a third group of customers; the report reads it twice, at or after the cut
  (out of time and out of customer) and over the whole log (out of customer only).

Evaluation mode keeps every instant of every customer, except those `excluded` (the customers a
bundle was trained on, when the log is the one it was trained on).

The cut is placed where `cut_fraction` of the log's labelled activity (events on days whose 30-day
horizon lies inside the data) lies before it, so it adapts to logs that start with sparse history.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from features.state import DAY_US

ROLES: tuple[str, ...] = ("train", "validation", "test")
EXCLUDED = "excluded"
SALT = "churn-split-v1"
HORIZON_DAYS = 30


@functools.lru_cache(maxsize=1 << 20)
def unit_hash(text: str, salt: str = SALT) -> float:
    """A stable number in [0, 1) for `text` (same on every machine and run)."""
    digest = hashlib.blake2b(f"{salt}|{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class SplitPlan:
    cut_day: int  # UTC day number: instants on this day or later are "after the cut"
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    mode: str = "training"  # training | evaluation
    excluded: frozenset[str] = field(default_factory=frozenset)
    salt: str = SALT
    held_out: frozenset[str] | None = None  # the customers validation and test draw from; None: any, by hash

    def role(self, customer_id: str) -> str:
        if customer_id in self.excluded:
            return EXCLUDED
        if self.held_out is not None:
            if customer_id not in self.held_out:
                return "train"
            share = self.test_fraction / max(self.test_fraction + self.validation_fraction, 1e-9)
            return "test" if unit_hash(customer_id, self.salt) < share else "validation"
        u = unit_hash(customer_id, self.salt)
        if u < self.test_fraction:
            return "test"
        if u < self.test_fraction + self.validation_fraction:
            return "validation"
        return "train"

    def wanted(self, role: str, after_cut: bool) -> bool:
        if role == EXCLUDED:
            return False
        if self.mode == "evaluation" or role in ("test", "train"):
            return True
        return after_cut if role == "validation" else not after_cut

    def phase(self, customer_id: str, every: int) -> int:
        return int(unit_hash(customer_id, self.salt + "|phase") * every) if every > 1 else 0

    def describe(self) -> dict[str, object]:
        return {
            "cut": _iso_day(self.cut_day),
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "salt": self.salt,
            "held_out": "random" if self.held_out is None else "latest customers",
        }


def latest_customers(first_seen: dict[str, int], fraction: float) -> frozenset[str]:
    """The `fraction` of customers whose first event came last (ties by id)."""
    ordered = sorted(first_seen, key=lambda cid: (first_seen[cid], cid))
    count = round(len(ordered) * fraction)
    return frozenset(ordered[len(ordered) - count :]) if count else frozenset()


def _iso_day(day: int) -> str:
    from features.state import from_us

    return from_us(day * DAY_US).strftime("%Y-%m-%d")


def choose_cut_day(day_events: dict[int, int], last_us: int, fraction: float) -> int:
    """The first day after `fraction` of the events on labelled days (30-day horizon inside the data)."""
    last_labelled = (last_us - HORIZON_DAYS * DAY_US) // DAY_US - 1
    days = sorted(day for day in day_events if day <= last_labelled)
    if not days:
        return last_labelled + 1
    total = sum(day_events[day] for day in days)
    running = 0
    for day in days:
        running += day_events[day]
        if running >= fraction * total:
            return day + 1
    return days[-1] + 1
