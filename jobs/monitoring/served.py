"""Reading the served-feature log back: `s3://<archive bucket>/served/` (or a local copy)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from features.eventfile import event_sources, open_text
from features.exceptions import UsageError
from features.registry import FEATURE_HASH, FEATURE_NAMES
from worker.served_log import served_uri


@dataclass(frozen=True)
class ServedRow:
    customer_id: str
    as_of: datetime
    model_version: str | None
    feature_hash: str
    features: np.ndarray  # float64, registry order
    outputs: dict[str, float]

    @property
    def day(self) -> str:
        return self.as_of.strftime("%Y-%m-%d")


def served_location(served: str | None, archive: str | None) -> str:
    """--served, else the `served/` prefix beside --archive (default CHURN_ARCHIVE_S3_URI)."""
    if served:
        return served
    if archive:
        return served_uri(archive) if archive.startswith("s3://") else archive
    raise UsageError(
        "no served-feature log: pass --served s3://bucket/served/ or --archive (or set CHURN_ARCHIVE_S3_URI)"
    )


def read_served(location: str | Sequence[str], since: str | None = None) -> Iterator[ServedRow]:
    """Every record from `since` (a UTC day) on. Rows of another feature registry are skipped:
    they cannot be compared column by column with this code's features."""
    for source in event_sources(location, since=since):
        with open_text(source) as handle:
            for line in handle:
                if not line.strip():
                    continue
                data = json.loads(line)
                if data.get("feature_hash") != FEATURE_HASH or len(data["features"]) != len(FEATURE_NAMES):
                    continue
                as_of = datetime.fromisoformat(data["as_of"].replace("Z", "+00:00"))
                if since is not None and as_of.strftime("%Y-%m-%d") < since:
                    continue
                yield ServedRow(
                    customer_id=data["customer_id"],
                    as_of=as_of,
                    model_version=data.get("model_version"),
                    feature_hash=data["feature_hash"],
                    features=np.asarray(data["features"], np.float64),
                    outputs={k: float(v) for k, v in data.get("outputs", {}).items()},
                )
