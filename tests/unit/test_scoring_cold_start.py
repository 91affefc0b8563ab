"""The scorer's attempt timeouts: warm calls are bounded by `timeout`, a call while the endpoint may
be cold (none answered yet, or none for `cold_after`) and the attempt after a timed-out one wait up
to `cold_timeout` (a serverless endpoint's cold start), once per call; the circuit breaker counts
whole failed calls only. (tests/faults/test_endpoint_and_alert_faults.py `endpoint_cold_starts`
runs the same against the worker and a delaying proxy.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from worker.exceptions import ScoringUnavailableError
from worker.scoring import CircuitBreaker, SageMakerScorer

ROWS = np.zeros((2, 150))


class SlowEndpoint:
    """Answers each call after the next of `delays` (seconds; 0 once they run out)."""

    def __init__(self, *delays: float) -> None:
        self.delays = list(delays)
        self.calls = 0

    async def invoke_endpoint(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(self.delays.pop(0) if self.delays else 0)
        body = json.dumps({"predictions": [{"churn_risk_30d": 0.1}] * len(ROWS)}).encode()

        class Body:
            async def read(self) -> bytes:
                return body

        return {"Body": Body()}


def scorer(endpoint: SlowEndpoint, **kwargs: Any) -> SageMakerScorer:
    return SageMakerScorer(
        endpoint,  # type: ignore[arg-type]
        "churn-health",
        base_delay=0.001,
        timeout=0.05,
        cold_timeout=0.5,
        breaker=CircuitBreaker(failure_threshold=1),
        **kwargs,
    )


async def test_the_first_call_waits_out_a_cold_start() -> None:
    endpoint = SlowEndpoint(0.2)  # longer than the warm timeout, within the cold one
    s = scorer(endpoint)
    assert len(await s.score(ROWS)) == 2
    assert endpoint.calls == 1 and s.cold_waits == 1 and not s.breaker.is_open


async def test_a_warm_call_that_times_out_is_tried_once_more_with_the_cold_wait() -> None:
    endpoint = SlowEndpoint(0, 0.2, 0.2)  # warm, then a scale-out: a new container starting
    s = scorer(endpoint)
    await s.score(ROWS)
    assert len(await s.score(ROWS)) == 2  # 0.05 s timed out, then waited up to 0.5 s
    assert endpoint.calls == 3 and s.cold_waits == 2 and not s.breaker.is_open


async def test_after_a_long_idle_the_first_attempt_is_patient_again() -> None:
    endpoint = SlowEndpoint(0, 0.2)
    s = scorer(endpoint, cold_after=0.0)  # every gap counts as long enough to scale to zero
    await s.score(ROWS)
    await asyncio.sleep(0.01)
    await s.score(ROWS)
    assert endpoint.calls == 2 and s.cold_waits == 2


async def test_an_endpoint_that_never_answers_still_fails_the_call_and_opens_the_circuit() -> None:
    endpoint = SlowEndpoint(*[1.0] * 10)
    s = scorer(endpoint, max_attempts=3)
    with pytest.raises(ScoringUnavailableError, match="no answer within"):
        await s.score(ROWS)
    assert endpoint.calls == 3 and s.cold_waits == 1  # one long wait per call, no more
    assert s.breaker.is_open
