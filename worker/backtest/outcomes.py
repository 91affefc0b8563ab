"""Outcomes for backtests and `tune`: `features.outcomes`, with the worker's usage error (exit 2).

The parsing lives in `features/outcomes.py` so `churn-model` (training, evaluation) and the worker
read outcomes files the same way.
"""

from __future__ import annotations

from pathlib import Path

from features.outcomes import NEVER, OUTCOMES_SUFFIX, ChurnTimes, HealthTruth, Outcomes, OutcomesError
from features.outcomes import load_outcomes as _load_outcomes
from worker.exceptions import UsageError

__all__ = ["NEVER", "OUTCOMES_SUFFIX", "ChurnTimes", "HealthTruth", "Outcomes", "load_outcomes"]


def load_outcomes(path: Path) -> Outcomes:
    try:
        return _load_outcomes(path)
    except OutcomesError as exc:
        raise UsageError(str(exc)) from None
