"""`churn-model monitor`, `skew` and `drift`: the served sample read once, then each check."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from features.eventfile import event_sources
from features.store import DEFAULT_RETENTION
from jobs.monitoring import calibration as calib
from jobs.monitoring import drift as drift_job
from jobs.monitoring import skew as skew_job
from jobs.monitoring.served import ServedRow, read_served
from model.drift import HEADS, load_distribution


@dataclass
class MonitorResult:
    rows: list[ServedRow]
    distribution: dict[str, Any] | None = None
    drift: drift_job.DriftReport | None = None
    skew: skew_job.SkewReport | None = None
    calibration: list[calib.HeadCalibration] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def served_scores(self) -> dict[str, list[float]]:
        return {head: [r.outputs[head] for r in self.rows if head in r.outputs] for head in HEADS}

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": len(self.rows),
            "notes": self.notes,
            "drift": self.drift.as_json() if self.drift else None,
            "skew": self.skew.as_json() if self.skew else None,
            "calibration": [
                {"head": h.head, "settled": h.settled, "unsettled": h.unsettled, "ece": h.ece, "bins": h.bins}
                for h in self.calibration or []
            ],
        }


def load_rows(served: str, since: str) -> list[ServedRow]:
    return list(read_served(served, since))


def drift_of(
    result: MonitorResult, bundle_dir: Path, threshold: float, min_rows: int
) -> drift_job.DriftReport | None:
    distribution = load_distribution(bundle_dir)
    result.distribution = distribution
    if distribution is None:
        result.notes["drift"] = (
            f"the bundle at {bundle_dir} has no training distribution (trained before it was recorded): "
            "drift skipped; retrain to get one"
        )
        return None
    versions = sorted({r.model_version for r in result.rows if r.model_version})
    if versions and distribution.get("model_version") not in versions:
        result.notes["drift_version"] = (
            f"the served rows are of model {', '.join(versions)}, the distribution of {distribution.get('model_version')}"
        )
    result.drift = drift_job.compute_drift(result.rows, distribution, threshold, min_rows)
    return result.drift


def archive_checks(
    result: MonitorResult,
    archive: str,
    max_share: float,
    retention: timedelta = DEFAULT_RETENTION,
    skew: bool = True,
    calibration: bool = True,
) -> None:
    """Skew and calibration, from one read of the archive (only the sampled customers' events kept)."""
    customers = {row.customer_id for row in result.rows}
    events, latest = skew_job.archived_events(event_sources(archive), customers)
    if skew:
        result.skew = skew_job.check_skew(result.rows, events, max_share, retention)
    if calibration and latest is not None:
        result.calibration = calib.calibrate(result.rows, calib.churn_times(events), latest)


def format_all(result: MonitorResult) -> str:
    parts = [f"{len(result.rows)} served rows"]
    for key in ("drift", "drift_version", "skew", "calibration"):
        if key in result.notes:
            parts.append(f"note: {result.notes[key]}")
    if result.drift is not None:
        parts.append(drift_job.format_table(result.drift))
    if result.calibration is not None:
        parts.append(calib.format_table(result.calibration))
    if result.skew is not None:
        parts.append(skew_job.format_table(result.skew))
    return "\n\n".join(parts)
