"""The seed's `generate_training_data` (docs/model.md), vectorised, with its label bug fixed.

Same four segments and probabilities (thriving 0.3, healthy 0.4, at_risk 0.2, churned 0.1), the same
per-segment distributions, the same 26 feature columns in the same order (they are the registry's
first 26 names) and the same labels. Where this deviates from the seed, and why:

- Randomness: one `numpy.random.Generator` (seed 42) drawing whole columns, instead of the legacy
  global `np.random.seed(42)` drawing row by row. Same distributions, different individual draws,
  100x faster and no global state.
- `supply_demand`: the seed draws a normal(20) per row but leaves it out of `y`, so that head never
  trains. Here it is a label like the others: columns `supply_demand_<subject>` in the frame and an
  [n, 20] array in `seed_arrays`' y.
- Counts: the seed's `int(session_freq_7d * 7)` (also 14, 30) goes negative when the normal draw
  does; a count cannot, so counts are floored at 0 (the seed already floors the frequencies).
  `session_velocity` stays the raw draw, as in the seed (it can be slightly negative).
- Labels kept as the seed has them, including one inconsistency: `churn_risk_14d` is 1 for at_risk
  and churned but `churn_risk_30d` only for churned, so an at_risk row "churns within 14 days but
  not within 30". `nested_churn_labels=True` sets 30d = max(14d, 30d) for anyone who wants them
  consistent; the default keeps the seed's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features.events import SUBJECTS
from features.registry import SEED_FEATURE_NAMES

SEGMENTS: tuple[str, ...] = ("thriving", "healthy", "at_risk", "churned")
SEGMENT_P: tuple[float, ...] = (0.3, 0.4, 0.2, 0.1)
LABELS: tuple[str, ...] = (
    "first_session_success",
    "session_velocity",
    "churn_risk_14d",
    "churn_risk_30d",
    "supply_demand",
    "health_score",
)
SUPPLY_DEMAND_COLUMNS: tuple[str, ...] = tuple(f"supply_demand_{s}" for s in SUBJECTS)

# Per segment, as in the seed: (mean, sd) of normals, [low, high) of uniforms and integers, Poisson rates.
_SESSION_FREQ = ((2.5, 0.5), (1.5, 0.5), (0.5, 0.3), None)  # churned: exactly 0
_RATING = ((4.5, 0.3), (4.0, 0.4), (3.5, 0.5), (3.0, 0.6))
_CALLS = (0.2, 0.5, 1.5, 2.5)
_DAYS_SINCE_SESSION = ((1, 4), (3, 8), (10, 20), (25, 60))
_PAYMENT_SUCCESS = ((0.95, 1.0), (0.9, 0.98), (0.7, 0.9), (0.4, 0.7))
_LOGIN = ((8, 2), (5, 2), (2, 1), None)  # churned: exactly 0
_HEALTH = ((80, 100), (60, 79), (40, 59), (0, 39))


def _by_segment(rng: np.random.Generator, seg: np.ndarray, params: tuple[Any, ...], draw: str) -> np.ndarray:
    out = np.zeros(len(seg))
    for k, p in enumerate(params):
        rows = np.flatnonzero(seg == k)
        if p is None:
            continue
        if draw == "normal":
            out[rows] = rng.normal(p[0], p[1], len(rows))
        elif draw == "uniform":
            out[rows] = rng.uniform(p[0], p[1], len(rows))
        elif draw == "integers":
            out[rows] = rng.integers(p[0], p[1], len(rows))
        else:
            out[rows] = rng.poisson(p, len(rows))
    return out


def generate_training_data(
    n_samples: int = 10_000, seed: int = 42, nested_churn_labels: bool = False
) -> pd.DataFrame:
    """One row per synthetic customer: the 26 seed features, the labels, and `segment`."""
    if n_samples < 1:
        raise ValueError("n_samples must be at least 1")
    rng = np.random.default_rng(seed)
    n = n_samples
    seg = rng.choice(len(SEGMENTS), n, p=SEGMENT_P)
    freq = _by_segment(rng, seg, _SESSION_FREQ, "normal")
    rating = _by_segment(rng, seg, _RATING, "normal")
    calls = _by_segment(rng, seg, _CALLS, "poisson")
    since_session = _by_segment(rng, seg, _DAYS_SINCE_SESSION, "integers")
    pay_rate = _by_segment(rng, seg, _PAYMENT_SUCCESS, "uniform")
    login = _by_segment(rng, seg, _LOGIN, "normal")
    rating_clipped = np.clip(rating, 1, 5)

    def count(weekly: np.ndarray, days: int) -> np.ndarray:
        counts: np.ndarray = np.maximum(0, np.trunc(weekly * days))  # the seed's int(): toward zero
        return counts

    features = {
        "session_count_7d": count(freq, 7),
        "session_frequency_7d": np.maximum(0, freq),
        "avg_rating_7d": rating_clipped,
        "cancellation_rate_7d": rng.beta(2, 8, n),
        "ib_call_count_7d": np.maximum(0, np.trunc(calls * 0.5)),
        "session_count_14d": count(freq, 14),
        "session_frequency_14d": np.maximum(0, freq),
        "avg_rating_14d": rating_clipped,
        "ib_call_count_14d": np.maximum(0, calls),
        "negative_calls_14d": np.maximum(0, np.trunc(calls * 0.6)),
        "session_count_30d": count(freq, 30),
        "session_frequency_30d": np.maximum(0, freq),
        "avg_rating_30d": rating_clipped,
        "ib_call_count_30d": np.maximum(0, np.trunc(calls * 2)),
        "days_since_last_session": since_session,
        "days_since_last_login": since_session + rng.integers(0, 3, n),
        "days_since_last_payment": rng.integers(1, 30, n).astype(float),
        "customer_tenure_days": rng.integers(30, 365, n).astype(float),
        "login_count_7d": np.maximum(0, np.trunc(login)),
        "message_count_7d": rng.poisson(3, n).astype(float),
        "payment_success_rate_30d": np.clip(pay_rate, 0, 1),
        "total_spend_lifetime": rng.uniform(500, 5000, n),
        "tutor_consistency": rng.uniform(0.5, 1.0, n),
        "primary_tutor_rating": rng.uniform(3.5, 5.0, n),
        "subscription_tier": rng.choice(3, n).astype(float),
        "first_session_was_success": rng.choice(2, n, p=[0.3, 0.7]).astype(float),
    }
    health = np.zeros(n)
    for k, (low, high) in enumerate(_HEALTH):
        rows = np.flatnonzero(seg == k)
        health[rows] = rng.uniform(low, high, len(rows))
    churn14 = np.isin(seg, [2, 3]).astype(float)
    churn30 = (seg == 3).astype(float)
    if nested_churn_labels:
        churn30 = np.maximum(churn14, churn30)
    supply_demand = rng.standard_normal((n, len(SUBJECTS)))
    frame = pd.DataFrame(features)
    frame["first_session_success"] = frame["first_session_was_success"]
    frame["session_velocity"] = freq
    frame["churn_risk_14d"] = churn14
    frame["churn_risk_30d"] = churn30
    frame[list(SUPPLY_DEMAND_COLUMNS)] = supply_demand
    frame["health_score"] = health
    frame["segment"] = np.array(SEGMENTS, dtype=object)[seg]
    return frame


def seed_arrays(
    n_samples: int = 10_000, seed: int = 42, nested_churn_labels: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(X float32 [n, 26] in the seed's column order, y with the six model outputs as float32)."""
    frame = generate_training_data(n_samples, seed, nested_churn_labels)
    X = frame[list(SEED_FEATURE_NAMES)].to_numpy(dtype=np.float32)
    y = {name: frame[name].to_numpy(dtype=np.float32) for name in LABELS if name != "supply_demand"}
    y["supply_demand"] = frame[list(SUPPLY_DEMAND_COLUMNS)].to_numpy(dtype=np.float32)
    return X, {name: y[name] for name in LABELS}
