"""Test doubles shared by unit and functional tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from features.registry import FEATURE_INDEX


class FeatureScorer:
    """A `worker.scoring.Scorer` whose predictions move with the features, so every alert rule has
    something to threshold (backtest and tune tests)."""

    model_version = "fake-1"

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        def col(name: str) -> np.ndarray:
            return features[:, FEATURE_INDEX[name]]

        risk = np.clip(0.05 + 0.2 * col("ib_call_count_14d") + 0.02 * col("days_since_last_session"), 0, 1)
        return [{
            "first_session_success_prob": float(np.clip(0.3 + 0.1 * col("login_count_7d")[i], 0, 1)),
            "predicted_session_velocity": float(col("session_frequency_7d")[i]),
            "churn_risk_14d": float(risk[i] * 0.8), "churn_risk_30d": float(risk[i]),
            "supply_demand_scores": [0.0] * 20, "customer_health_score": float(100 * (1 - risk[i])),
            "feature_importance": [{"feature": "ib_call_count_14d", "importance": 0.5}], "model_version": "fake-1",
        } for i in range(len(features))]  # fmt: skip
