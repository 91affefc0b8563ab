"""The monitoring jobs' CloudWatch EMF lines besides drift's: calibration. (CloudWatch takes metric
data up to two weeks old: the daily job publishes yesterday; a backfill of older days is dropped.)"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from jobs.monitoring.calibration import HeadCalibration
from jobs.monitoring.drift import emf_line


def calibration_lines(heads: Sequence[HeadCalibration], table_prefix: str) -> list[dict[str, Any]]:
    """`CalibrationError14d` / `CalibrationError30d` (ECE over the settled sampled rows), now."""
    from worker.emf import DIMENSION

    values = {f"CalibrationError{h.head.rsplit('_', 1)[-1]}": h.ece for h in heads if h.ece is not None}
    if not values:
        return []
    return [emf_line(int(time.time() * 1000), [[DIMENSION]], {DIMENSION: table_prefix}, values)]
