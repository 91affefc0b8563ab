"""Live calibration: the served sample's churn probabilities against what happened since.

A row's outcome is known once its horizon after `as_of` has passed: observed 1 with a churn inside
it, 0 without; a row whose horizon has not passed is unsettled and left out, churned or not. (The
alert ledger confirms an alert at its churn, which is right for one alert; for calibration, keeping
the early churners while their stayers wait would read the last 30 days as all churners, as
`features/labels.py` explains, and show a well calibrated model as under-predicting.) The evidence
is the archive's `customer_churned` events (the same events the worker's ledger confirms from), for
every sampled customer, alerted or not: calibration of the scores, not precision of the alerts.
Per head, ten equal-width probability bins: rows, mean predicted, observed rate; and the expected
calibration error (ECE, the row-weighted mean of |predicted - observed|), the one number the job
publishes (`CalibrationError30d`, EMF).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from features.events import Event
from jobs.monitoring.served import ServedRow

HORIZONS = {"churn_risk_14d": timedelta(days=14), "churn_risk_30d": timedelta(days=30)}
BINS = 10


@dataclass
class HeadCalibration:
    head: str
    settled: int = 0
    unsettled: int = 0
    bins: list[dict[str, Any]] = field(default_factory=list)  # low, high, rows, predicted, observed

    @property
    def ece(self) -> float | None:
        rows = sum(b["rows"] for b in self.bins)
        if not rows:
            return None
        return float(
            sum(b["rows"] * abs(b["predicted"] - b["observed"]) for b in self.bins if b["rows"]) / rows
        )


def churn_times(events: Mapping[str, Sequence[Event]]) -> dict[str, list[datetime]]:
    return {
        cid: sorted(e.occurred_at for e in evs if e.type == "customer_churned") for cid, evs in events.items()
    }


def calibrate(
    rows: Iterable[ServedRow], churns: Mapping[str, Sequence[datetime]], evidence_until: datetime
) -> list[HeadCalibration]:
    """`evidence_until`: the latest instant the archive covers (its newest event)."""
    rows = list(rows)
    out: list[HeadCalibration] = []
    for head, horizon in HORIZONS.items():
        result = HeadCalibration(head)
        predicted: list[float] = []
        observed: list[float] = []
        for row in rows:
            if head not in row.outputs:
                continue
            end = row.as_of + horizon
            if end > evidence_until:
                result.unsettled += 1
                continue
            churned = any(row.as_of < t <= end for t in churns.get(row.customer_id, ()))
            predicted.append(row.outputs[head])
            observed.append(1.0 if churned else 0.0)
        result.settled = len(predicted)
        p, o = np.asarray(predicted), np.asarray(observed)
        which = np.minimum((p * BINS).astype(np.int64), BINS - 1) if len(p) else np.zeros(0, np.int64)
        for b in range(BINS):
            mask = which == b
            n = int(mask.sum())
            result.bins.append(
                {
                    "low": b / BINS,
                    "high": (b + 1) / BINS,
                    "rows": n,
                    "predicted": float(p[mask].mean()) if n else None,
                    "observed": float(o[mask].mean()) if n else None,
                }
            )
        out.append(result)
    return out


def format_table(heads: Sequence[HeadCalibration]) -> str:
    out = ["calibration (served sample; outcomes from the archive's churn events)"]
    for h in heads:
        ece = "n/a" if h.ece is None else f"{h.ece:.3f}"
        out.append(f"  {h.head}: {h.settled} settled rows, {h.unsettled} unsettled, ECE {ece}")
        for b in h.bins:
            if b["rows"]:
                out.append(
                    f"    [{b['low']:.1f}, {b['high']:.1f})  rows {b['rows']:>6}  predicted {b['predicted']:.3f}"
                    f"  observed {b['observed']:.3f}"
                )
    return "\n".join(out)
