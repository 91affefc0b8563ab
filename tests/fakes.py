"""Test doubles shared by unit and functional tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from features.registry import FEATURE_INDEX
from worker.exceptions import ScoringUnavailableError
from worker.ports import Record

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


class FeatureScorer:
    """A `worker.scoring.Scorer` whose predictions move with the features, so every alert rule has
    something to threshold (backtest and tune tests)."""

    model_version = "fake-1"

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        def col(name: str) -> np.ndarray:
            return features[:, FEATURE_INDEX[name]]

        risk = np.clip(0.05 + 0.2 * col("ib_call_count_14d") + 0.02 * col("days_since_last_session"), 0, 1)
        return [
            {
                "first_session_success_prob": float(np.clip(0.3 + 0.1 * col("login_count_7d")[i], 0, 1)),
                "predicted_session_velocity": float(col("session_frequency_7d")[i]),
                "churn_risk_14d": float(risk[i] * 0.8),
                "churn_risk_30d": float(risk[i]),
                "supply_demand_scores": [0.0] * 20,
                "customer_health_score": float(100 * (1 - risk[i])),
                "feature_importance": [{"feature": "ib_call_count_14d", "importance": 0.5}],
                "model_version": "fake-1",
            }
            for i in range(len(features))
        ]


class FakeScorer:
    """Answers like the endpoint; `down` makes it fail like an outage."""

    def __init__(self, churn_30d: float = 0.1) -> None:
        self.down = False
        self.churn_30d = churn_30d
        self.calls = 0

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        if self.down:
            raise ScoringUnavailableError("endpoint test: 503 after 4 attempts")
        return [
            {
                "first_session_success_prob": 0.9,
                "predicted_session_velocity": 2.0,
                "churn_risk_14d": 0.1,
                "churn_risk_30d": self.churn_30d,
                "supply_demand_scores": [0.0] * 20,
                "customer_health_score": 80.0,
                "feature_importance": [{"feature": "ib_call_count_14d", "importance": 0.5}],
                "model_version": "test-model",
            }
            for _ in features
        ]


class ListDlq:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, str]] = []
        self.down = False

    async def quarantine(self, record: Record, error_code: str, error_detail: str) -> None:
        if self.down:
            raise OSError("DLQ unreachable")
        self.items.append((record.body, error_code))


def record(data: dict[str, Any] | str, n: int = 0) -> Record:
    body = data if isinstance(data, str) else json.dumps(data)
    return Record(body=body.encode(), handle=f"h{n}", source_id=f"m{n}")


def event(cid: str, kind: str, days_ago: float, n: int, **fields: Any) -> Record:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return record(
        {"event_id": f"{cid}-{n}", "customer_id": cid, "type": kind, "occurred_at": when, **fields}, n
    )
