"""Scoring client: one batched `invoke_endpoint` per pipeline batch, on aiobotocore.

- The request is `{"instances": [[150 numbers], ...]}` (docs/contracts.md, The model endpoint),
  split into chunks that stay under SageMaker's 6 MB payload limit.
- Throttling (429), 5xx and 530 are retried with full jitter; after `failure_threshold`
  consecutive failed calls the circuit opens for `open_seconds` and calls fail at once
  (`ScoringUnavailableError`), so an endpoint outage costs no latency per batch.
- A 4xx `ModelError` means the model refused the input: `ScoringRejectedError`, not an outage.
- Cold starts (a serverless endpoint idle for a while, or one scaling out, answers its first call
  after seconds, up to SageMaker's 60 s invocation limit): each attempt is bounded by `timeout`
  (10 s), except the first attempt of a call while the endpoint may be cold (no answer yet, or none
  for `cold_after` seconds) and the attempt after one that timed out, which get `cold_timeout`
  (60 s): at most one long wait per call. So a cold start costs latency once, not a rule-only batch,
  and never counts towards the circuit breaker; an endpoint that does not answer at all still fails
  the call after its attempts (10 + 60 + 10 + 10 s at most) and opens the circuit as before.
- The answer must hold one prediction per row; each row is checked against the contract by the
  caller (`Prediction.from_endpoint`), so one bad row costs that row only.
- Memory is bounded: the latest `LATENCY_SAMPLES` call latencies are kept, no more.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from pydantic_core import to_json

from features.events import loads_json
from plumbing.retry import RETRYABLE, backoff, classify, error_code, http_status
from worker.exceptions import ScoringRejectedError, ScoringUnavailableError
from worker.ports import Scorer

if TYPE_CHECKING:
    from types_aiobotocore_sagemaker_runtime.client import SageMakerRuntimeClient

log = structlog.get_logger(__name__)

LATENCY_SAMPLES = 1024

__all__ = ["CircuitBreaker", "SageMakerScorer", "Scorer"]

MAX_PAYLOAD_BYTES = 5_500_000  # SageMaker's limit is 6 MB; keep a margin for JSON framing
WARM_TIMEOUT = 10.0  # seconds an attempt may take on a warm endpoint (a batch is scored in well under 1 s)
COLD_TIMEOUT = 60.0  # SageMaker's own limit on an invocation: a cold start answers within it
COLD_AFTER = 300.0  # seconds without an answer after which a serverless endpoint may have scaled to zero


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 3, open_seconds: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        if self._opened_at is None:
            return False
        # past open_seconds the circuit is half-open: one call goes through to probe
        return time.monotonic() - self._opened_at < self.open_seconds

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = time.monotonic()


class SageMakerScorer:
    def __init__(
        self,
        client: SageMakerRuntimeClient,
        endpoint_name: str,
        *,
        max_attempts: int = 4,
        base_delay: float = 0.2,
        breaker: CircuitBreaker | None = None,
        timeout: float = WARM_TIMEOUT,
        cold_timeout: float = COLD_TIMEOUT,
        cold_after: float = COLD_AFTER,
    ) -> None:
        self._client = client
        self._endpoint = endpoint_name
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self.breaker = breaker or CircuitBreaker()
        self.timeout = timeout
        self.cold_timeout = max(cold_timeout, timeout)
        self.cold_after = cold_after
        self._answered_at: float | None = None  # monotonic time of the last answer
        self.cold_waits = 0  # attempts given the cold-start timeout (tests, metrics)
        self.invocations = 0
        self.latencies_ms: deque[float] = deque(maxlen=LATENCY_SAMPLES)  # the latest calls only

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        if len(features) == 0:
            return []
        if not np.isfinite(features).all():
            raise ScoringRejectedError("feature matrix holds NaN or infinity; refusing to send it")
        predictions: list[dict[str, Any]] = []
        for chunk in _chunks(features):
            predictions += await self._invoke(chunk)
        return predictions

    async def _invoke(self, rows: np.ndarray) -> list[dict[str, Any]]:
        if self.breaker.is_open:
            raise ScoringUnavailableError(f"endpoint {self._endpoint}: circuit open after repeated failures")
        # pydantic-core writes the same bytes as json.dumps(separators=(",", ":")), 6x faster
        body = to_json({"instances": rows.tolist()})
        last_error = ""
        cold = self._answered_at is None or time.monotonic() - self._answered_at > self.cold_after
        for attempt in range(self._max_attempts):
            started = time.perf_counter()
            patience = self.cold_timeout if cold else self.timeout
            if cold:
                self.cold_waits += 1
            cold = False  # one long wait per call at most
            try:
                self.invocations += 1
                payload = await asyncio.wait_for(self._call(body), patience)
            except ClientError as exc:
                message = exc.response.get("Error", {}).get("Message", "")
                code, status = error_code(exc), http_status(exc)
                if code == "ModelError" and 400 <= status < 500:
                    raise ScoringRejectedError(
                        f"endpoint {self._endpoint} refused the input: {message}"
                    ) from exc
                if classify(exc) not in RETRYABLE:
                    self.breaker.record_failure()
                    raise ScoringUnavailableError(f"endpoint {self._endpoint}: {code}: {message}") from exc
                last_error = f"{code} ({status})"
            except TimeoutError:
                last_error = f"no answer within {patience:g} s"
                # A cold start (scale-out, or back from zero) may be under way: wait long once.
                cold = patience < self.cold_timeout and attempt == 0
            except (BotoCoreError, OSError, json.JSONDecodeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                self._answered_at = time.monotonic()
                self.breaker.record_success()
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
                return _predictions(payload, len(rows))
            if attempt + 1 < self._max_attempts:
                await backoff(attempt, self._base_delay)
        self.breaker.record_failure()
        log.warning(
            "endpoint unavailable", endpoint=self._endpoint, error=last_error, attempts=self._max_attempts
        )
        raise ScoringUnavailableError(
            f"endpoint {self._endpoint}: {last_error} after {self._max_attempts} attempts"
        )

    async def _call(self, body: bytes) -> Any:
        response = await self._client.invoke_endpoint(
            EndpointName=self._endpoint,
            ContentType="application/json",
            Accept="application/json",
            Body=body,
        )
        return loads_json(await response["Body"].read())


def _chunks(features: np.ndarray) -> list[np.ndarray]:
    row_bytes = features.shape[1] * 24 + 4  # a float as JSON is at most ~24 characters
    per_chunk = max(1, MAX_PAYLOAD_BYTES // row_bytes)
    return [features[i : i + per_chunk] for i in range(0, len(features), per_chunk)]


def _predictions(payload: Any, expected: int) -> list[dict[str, Any]]:
    """The answer's rows. A wrong count cannot be matched to customers: the endpoint is broken, as
    an outage is. A row that is not an object is kept for the caller to refuse, row by row."""
    items = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        raise ScoringUnavailableError(f"endpoint answered {str(payload)[:120]!r}, not {expected} predictions")
    return items
