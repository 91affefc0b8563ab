"""Calibration of the probability heads, fitted on the validation period, applied inside the model.

Platt scaling on the logit: `p' = sigmoid(a * logit(p) + b)`, fitted by maximum likelihood on the
validation rows whose label is known. Two numbers per head, strictly increasing for a > 0, so the
ranking (AUC) is untouched while the level moves to what the validation period saw: a model
trained on a period with 6% churn that will be used in one with 10% gets its probabilities moved
up. A head with too few labelled validation rows, or one class only, keeps the identity.

The exported serving signature applies the same formula (model/export.py), so the endpoint returns
calibrated probabilities and the alert thresholds mean what they say.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_ROWS = 200
MIN_PER_CLASS = 20
EPSILON = 1e-6


@dataclass(frozen=True)
class Platt:
    a: float = 1.0
    b: float = 0.0
    rows: int = 0  # labelled validation rows it was fitted on (0: identity)

    @property
    def is_identity(self) -> bool:
        return self.a == 1.0 and self.b == 0.0

    def apply(self, p: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * logit(p) + self.b)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Platt:
        return cls(float(data.get("a", 1.0)), float(data.get("b", 0.0)), int(data.get("rows", 0)))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPSILON, 1 - EPSILON)
    logits: np.ndarray = np.log(p) - np.log1p(-p)
    return logits


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, dtype=np.float64), -500, 500)))


def _log_loss(z: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    """The negative log-likelihood of labels y under sigmoid(a z + b), computed stably."""
    s = a * z + b
    return float(np.sum(np.logaddexp(0.0, s) - y * s))


def enough_labels(y: np.ndarray) -> bool:
    """Whether labels `y` (NaN unknown) can support a fit: MIN_ROWS, MIN_PER_CLASS of each class."""
    y = np.asarray(y, dtype=np.float64).ravel()
    y = y[~np.isnan(y)]
    positives = int(y.sum())
    return len(y) >= MIN_ROWS and positives >= MIN_PER_CLASS and len(y) - positives >= MIN_PER_CLASS


def fit_platt(p: np.ndarray, y: np.ndarray) -> Platt:
    """Platt parameters for predictions `p` of labels `y` (NaN labels ignored); identity when the
    data cannot support a fit."""
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    known = ~np.isnan(y)
    p, y = p[known], y[known]
    if not enough_labels(y):
        return Platt()
    z = logit(p)
    a, b = 1.0, 0.0
    loss = _log_loss(z, y, a, b)
    for _ in range(100):  # Newton's method on the log-likelihood of sigmoid(a z + b): convex, converges fast
        q = _sigmoid(a * z + b)
        w = q * (1 - q) + 1e-12
        gradient = np.array([np.sum((q - y) * z), np.sum(q - y)])
        hessian = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(
            2
        )
        step = np.linalg.solve(hessian, gradient)
        # A full Newton step can overshoot from a = 1 when the logits are wide (a tree ensemble's,
        # say) and then diverge; halve it until the likelihood does not get worse.
        for _ in range(30):
            trial = _log_loss(z, y, a - step[0], b - step[1])
            if trial <= loss + 1e-12:
                break
            step = step / 2
        else:
            break  # no step improves on (a, b): it is the optimum to float precision
        a, b, loss = a - step[0], b - step[1], trial
        if np.abs(step).max() < 1e-9:
            break
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:
        return Platt()  # a fit that reverses or flattens the ranking is not a calibration
    return Platt(float(a), float(b), len(y))
