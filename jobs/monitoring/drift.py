"""Drift: the population stability index of the served sample against the bundle's training
distribution (model/drift.py), per feature and per head, per UTC day of scoring.

Per day the job publishes few numbers, as CloudWatch EMF lines on stdout (namespace ChurnAlerts,
dimension TablePrefix, the worker's: worker/emf.py), so one alarm covers every feature:
`DriftMaxPSI` (the largest PSI of any feature or head: the metric infra/alarms.yaml's ModelDrift
alarm does its math on), `FeatureDriftMaxPSI`, `ScoreDriftMaxPSI`, `ServedRows`; and, with a
`Feature` dimension, `FeaturePSI` for the `top` largest features only (what to look at first).
A day with fewer than `min_rows` sampled rows is reported but not published: PSI over a handful
of rows is noise, and an alarm on noise is spam.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import numpy as np

from features.registry import FEATURE_NAMES
from jobs.monitoring.served import ServedRow
from model.drift import HEADS, column_psi
from worker.emf import DIMENSION, NAMESPACE

DEFAULT_THRESHOLD = 0.25  # the usual "a population the model was not trained on"
DEFAULT_MIN_ROWS = 200
TOP = 5


@dataclass
class DayDrift:
    day: str
    rows: int
    features: dict[str, float]  # PSI per feature
    heads: dict[str, float]  # PSI per head

    @property
    def max_feature(self) -> float:
        return max(self.features.values(), default=0.0)

    @property
    def max_head(self) -> float:
        return max(self.heads.values(), default=0.0)

    @property
    def max_psi(self) -> float:
        return max(self.max_feature, self.max_head)

    def top_features(self, n: int = TOP) -> list[tuple[str, float]]:
        return sorted(self.features.items(), key=lambda item: (-item[1], item[0]))[:n]


@dataclass
class DriftReport:
    days: list[DayDrift] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    min_rows: int = DEFAULT_MIN_ROWS

    def published(self) -> list[DayDrift]:
        return [day for day in self.days if day.rows >= self.min_rows]

    def as_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "min_rows": self.min_rows,
            "days": [
                {
                    "day": d.day,
                    "rows": d.rows,
                    "max_psi": d.max_psi,
                    "features": d.features,
                    "heads": d.heads,
                }
                for d in self.days
            ],
        }


def compute_drift(
    rows: Iterable[ServedRow],
    distribution: Mapping[str, Any],
    threshold: float = DEFAULT_THRESHOLD,
    min_rows: int = DEFAULT_MIN_ROWS,
) -> DriftReport:
    by_day: dict[str, list[ServedRow]] = defaultdict(list)
    for row in rows:
        by_day[row.day].append(row)
    report = DriftReport(threshold=threshold, min_rows=min_rows)
    for day, group in sorted(by_day.items()):
        x = np.stack([row.features for row in group])
        features = {
            name: column_psi(distribution["features"][name], x[:, i])
            for i, name in enumerate(FEATURE_NAMES)
            if name in distribution.get("features", {})
        }
        heads = {
            head: column_psi(distribution["heads"][head], np.asarray([row.outputs[head] for row in group]))
            for head in HEADS
            if head in distribution.get("heads", {}) and all(head in row.outputs for row in group)
        }
        report.days.append(DayDrift(day, len(group), features, heads))
    return report


def _day_end_ms(day: str) -> int:
    """A day's metrics are stamped at its last minute, so the alarm's daily period holds them."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return int((start + timedelta(days=1) - timedelta(minutes=1)).timestamp() * 1000)


def emf_lines(report: DriftReport, table_prefix: str, top: int = TOP) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for day in report.published():
        stamp = _day_end_ms(day.day)
        values = {
            "DriftMaxPSI": day.max_psi,
            "FeatureDriftMaxPSI": day.max_feature,
            "ScoreDriftMaxPSI": day.max_head,
            "ServedRows": float(day.rows),
        }
        lines.append(emf_line(stamp, [[DIMENSION]], {DIMENSION: table_prefix}, values))
        for name, value in day.top_features(top):
            lines.append(
                emf_line(
                    stamp,
                    [[DIMENSION, "Feature"]],
                    {DIMENSION: table_prefix, "Feature": name},
                    {"FeaturePSI": value},
                )
            )
    return lines


def emf_line(
    stamp: int, dimensions: list[list[str]], labels: dict[str, str], values: dict[str, float]
) -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": stamp,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": [
                        {"Name": name, "Unit": "Count" if name == "ServedRows" else "None"} for name in values
                    ],
                }
            ],
        },
        **labels,
        **values,
    }


def write_emf(lines: Iterable[Mapping[str, Any]], out: TextIO) -> None:
    for line in lines:
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
    out.flush()


def format_table(report: DriftReport, top: int = TOP) -> str:
    out = [f"drift (PSI against the training distribution; threshold {report.threshold:g})"]
    out.append(f"{'day':<11} {'rows':>6} {'max':>7}  {'heads':<60} top features")
    for day in report.days:
        heads = " ".join(f"{h}={v:.3f}" for h, v in sorted(day.heads.items()))
        tops = ", ".join(f"{n}={v:.3f}" for n, v in day.top_features(top))
        flag = " DRIFT" if day.max_psi > report.threshold and day.rows >= report.min_rows else ""
        few = " (few rows: not published)" if day.rows < report.min_rows else ""
        out.append(f"{day.day:<11} {day.rows:>6} {day.max_psi:>7.3f}  {heads:<60} {tops}{flag}{few}")
    if not report.days:
        out.append("(no served rows in the period)")
    return "\n".join(out)
