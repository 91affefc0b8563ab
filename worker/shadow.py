"""The shadow model: a candidate endpoint scores what the live one scores, in the background, and its
alerts go to a shadow log instead of the retention team.

With `CHURN_SHADOW_ENDPOINT_NAME` set, every batch the live model scored is handed here
(`ShadowScoring.submit`, which never awaits and never raises) and scored again on a task of its
own: one call to the shadow endpoint, with its own client and connection pool
(`plumbing.clients.SHADOW_RUNTIME`), its own timeout (`CHURN_SHADOW_TIMEOUT_SECONDS`) and its own
circuit breaker. The live path never waits for it, and nothing it does can fail or change a live
alert: it claims nothing in the ledger and starts no cooldown there. At most `MAX_IN_FLIGHT`
shadow scorings run at once; a batch arriving while they are all busy is dropped (counted), so a
slow shadow endpoint costs neither memory nor live latency. It is scored from the same feature
matrix, at the same instant, with the same rules and thresholds, and gets the same experiment
arm, so the two models' decisions differ only by the model.

Per customer and alert type the two decisions are compared: `churn_shadow_decisions_total{type,
agreement}` with agreement `both`, `live_only`, `shadow_only` or `neither`; agreement per type is
both / (both + live_only + shadow_only). `churn_shadow_latency_ms` (quantiles) and
`churn_shadow_batches_total{result}` (scored, timeout, unavailable, circuit_open, dropped, ...).

Shadow alerts pass a cooldown per (customer, type) kept in this worker's memory, not the ledger:
across workers or restarts one may repeat (the report counts customers, so repeats do not skew
it). Each goes to the shadow log as its alert body plus `"shadow": true`, `"live_alerted"` (did
the live model route the same type for the customer at that scoring) and `"live_model_version"`:
to `CHURN_SHADOW_TOPIC_ARN` when set, else as gzip JSON Lines under `shadow/` in the archive
bucket, one object per minute or 1,000 records (best effort: the last minute is lost in a crash).
Never to the retention topic (the worker refuses to start with the two topics the same).
`churn-worker shadow report` compares both models' alerts with outcomes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from features.registry import FEATURE_HASH, FeatureRow
from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import InvalidPredictionError
from worker.alerts.experiment import ExperimentConfig, assign_arm
from worker.alerts.rules import Alert, AlertType, Prediction, Trigger, route_alerts
from worker.exceptions import ScoringRejectedError, ScoringUnavailableError
from worker.metrics import Metrics
from worker.ports import Scorer, ShadowLog
from worker.scoring import CircuitBreaker

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 4  # shadow scorings at once; more batches than this are dropped, never queued
MAX_COOLDOWNS = 200_000  # (customer, type) cooldown entries kept before expired ones are pruned
TYPES = [alert_type.value for alert_type in AlertType]
# (live routed the type, shadow routed it) -> the agreement label of churn_shadow_decisions_total
AGREEMENT = {
    (True, True): "both",
    (True, False): "live_only",
    (False, True): "shadow_only",
    (False, False): "neither",
}


@dataclass(frozen=True)
class ShadowBatch:
    """What the live path scored: the rows of the customers it routed with the live model's
    prediction, and what it decided for each."""

    features: np.ndarray  # [customers, features], registry order
    customers: list[str]
    tiers: list[str | None]
    as_of: datetime
    trigger: Trigger
    live_types: list[set[str]]  # per customer, the alert types the live model routed
    live_model_version: str | None


@dataclass
class ShadowScoring:
    scorer: Scorer
    log: ShadowLog
    alerts: AlertsConfig
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    timeout: float = 5.0
    metrics: Metrics = field(default_factory=Metrics)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    max_in_flight: int = MAX_IN_FLIGHT
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _cooldowns: dict[tuple[str, str], datetime] = field(default_factory=dict, repr=False)

    def accepting(self) -> bool:
        """Whether a batch submitted now would be scored (checked before the caller builds one):
        not while `max_in_flight` scorings run (counted as dropped) or the circuit is open."""
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.inc("shadow_batches", result="dropped")
            return False
        if self.breaker.is_open:
            self.metrics.inc("shadow_batches", result="circuit_open")
            return False
        return True

    def submit(self, batch: ShadowBatch) -> None:
        """Score `batch` in the background; returns at once, whatever happens to it."""
        try:
            if not batch.customers or not self.accepting():
                return
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        except Exception:  # the shadow must never cost the live path anything, bugs included
            log.exception("shadow scoring could not start; the live path goes on")

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _run(self, batch: ShadowBatch) -> None:
        started = time.perf_counter()
        try:
            rows = await asyncio.wait_for(self.scorer.score(batch.features), self.timeout)
        except TimeoutError:
            self._failed("timeout", f"no answer within {self.timeout:g} s")
            return
        except ScoringUnavailableError as exc:
            self._failed("unavailable", str(exc))
            return
        except ScoringRejectedError as exc:
            self._failed("rejected", str(exc))
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug, or an answer we cannot read: counted, never raised
            self._failed("error", f"{type(exc).__name__}: {exc}")
            return
        self.breaker.record_success()
        self.metrics.observe("shadow_latency_ms", (time.perf_counter() - started) * 1000)
        self.metrics.inc("shadow_batches", result="scored")
        try:
            records = self._route(batch, rows)
            if records:
                await self.log.write(records)
                self.metrics.inc("shadow_alerts_logged", len(records))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("shadow log unavailable; shadow alerts dropped", error=str(exc))
            self.metrics.inc("shadow_batches", result="log_failed")

    def _failed(self, reason: str, detail: str) -> None:
        self.breaker.record_failure()
        self.metrics.inc("shadow_batches", result=reason)
        log.warning("shadow scoring failed; the live path is unaffected", reason=reason, error=detail)

    def _route(self, batch: ShadowBatch, rows: Sequence[Any]) -> list[dict[str, Any]]:
        """The same rules on the shadow's answer; agreement counted; shadow alerts past their
        in-memory cooldown become log records."""
        if len(rows) != len(batch.customers):
            self.metrics.inc("shadow_batches", result="invalid")
            return []
        records: list[dict[str, Any]] = []
        decisions: Counter[tuple[str, str]] = Counter()
        now = self.clock()
        for i, cid in enumerate(batch.customers):
            try:
                prediction = Prediction.from_endpoint(rows[i])
            except InvalidPredictionError:
                self.metrics.inc("shadow_invalid_predictions")
                continue
            routed = route_alerts(
                cid,
                FeatureRow(batch.features[i]),
                prediction,
                self.alerts,
                batch.as_of,
                batch.tiers[i],
                prediction.model_version,
                trigger=batch.trigger,
                feature_hash=FEATURE_HASH,
            )
            shadow_types = {alert.alert_type.value for alert in routed}
            live_types = batch.live_types[i]
            for alert_type in TYPES:
                decisions[alert_type, AGREEMENT[alert_type in live_types, alert_type in shadow_types]] += 1
            for alert in routed:
                if self._cooling(alert):
                    continue
                arm = assign_arm(cid, alert.alert_type.value, self.experiment)
                body = alert.model_copy(update={"arm": arm}).published_at(now).body()
                records.append(
                    {
                        **body,
                        "shadow": True,
                        "live_alerted": alert.alert_type.value in live_types,
                        "live_model_version": batch.live_model_version,
                    }
                )
        for (alert_type, agreement), count in decisions.items():
            self.metrics.inc("shadow_decisions", count, type=alert_type, agreement=agreement)
        return records

    def _cooling(self, alert: Alert) -> bool:
        """True while this (customer, type) had a shadow alert within its cooldown; else starts one."""
        key = (alert.customer_id, alert.alert_type.value)
        last = self._cooldowns.get(key)
        if last is not None and last + self.alerts.cooldown(alert.alert_type) > alert.as_of:
            return True
        if len(self._cooldowns) >= MAX_COOLDOWNS:
            self._prune(alert.as_of)
        self._cooldowns[key] = alert.as_of
        return False

    def _prune(self, now: datetime) -> None:
        longest = max(self.alerts.cooldown(t) for t in TYPES)
        self._cooldowns = {k: at for k, at in self._cooldowns.items() if at + longest > now}
        if len(self._cooldowns) >= MAX_COOLDOWNS:  # still full: forget the oldest half
            keep = sorted(self._cooldowns.items(), key=lambda item: item[1])[MAX_COOLDOWNS // 2 :]
            self._cooldowns = dict(keep)

    async def close(self, grace: float) -> None:
        """Let running shadow scorings finish within `grace` seconds (then cancel them) and flush
        the log. Called on shutdown, after the live work is settled."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.log.flush()
        except Exception as exc:
            log.warning("shadow log could not be flushed on shutdown", error=str(exc))
