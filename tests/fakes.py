"""Test doubles shared by unit, functional and end-to-end tests: scorers, a dead-letter queue in
memory, clocks a test moves by hand, and `wait_until`, which polls a condition instead of sleeping a
fixed time (a test waits as long as the thing takes, and fails with a message if it never happens)."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable
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
    """A `worker.ports.DeadLetterQueue` in memory: `items` (body, error code), `records` (the record,
    code and detail as given); `down` makes it fail like an unreachable queue."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, str]] = []
        self.records: list[tuple[Record, str, str]] = []
        self.down = False

    async def quarantine(self, record: Record, error_code: str, error_detail: str) -> None:
        if self.down:
            raise OSError("DLQ unreachable")
        self.items.append((record.body, error_code))
        self.records.append((record, error_code, error_detail))


class Clock:
    """A wall clock (aware datetimes) that stands still until the test sets `now` or `advance`s it;
    for code that takes `clock: Callable[[], datetime]`."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


class FakeClock:
    """Seconds that move only when the test says so: pass it where the code takes a `monotonic` or
    `clock` function (a time that never passes by itself: whatever the code decides by elapsed time
    happens exactly when the test `advance`s it). `sleep` is an async sleep that advances this
    clock instead of waiting, and notes each delay in `sleeps`."""

    def __init__(self, start: float = 10_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:  # where a module's `time` is swapped for this clock
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # still a suspension point, as the real one is


Condition = Callable[[], bool | Awaitable[bool]]


async def wait_until(
    condition: Condition, within: float = 15.0, *, interval: float = 0.05, what: str = "condition"
) -> None:
    """Poll `condition` (a function, sync or async) until it is true; AssertionError after `within`
    seconds. That limit only bounds a hang: a test never depends on how long the wait took."""
    deadline = time.monotonic() + within
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_blocking(
    condition: Callable[[], bool],
    timeout: float = 60.0,
    *,
    interval: float = 0.2,
    what: str = "condition",
    details: Callable[[], str] | None = None,
) -> None:
    """`wait_until` for synchronous tests (whole processes): `details()` is added to the failure
    message, e.g. the last lines of the processes' output."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


def record(data: dict[str, Any] | str, n: int = 0) -> Record:
    body = data if isinstance(data, str) else json.dumps(data)
    return Record(body=body.encode(), handle=f"h{n}", source_id=f"m{n}")


def event(cid: str, kind: str, days_ago: float, n: int, **fields: Any) -> Record:
    when = (NOW - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return record(
        {"event_id": f"{cid}-{n}", "customer_id": cid, "type": kind, "occurred_at": when, **fields}, n
    )
