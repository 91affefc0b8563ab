"""The sweeper: scores customers who are due without an event (`features.due`), and re-publishes
claimed alerts whose publish never finished (the ledger's outbox).

Why: churners go quiet. A customer is scored when their events arrive, and also at least once per
`CHURN_RESCORE_INTERVAL_HOURS` while active (signed up, not churned, inside retention), so their
falling 7-day counts and growing `days_since_last_session` are read and SESSION_VELOCITY_DROP,
HIGH_CHURN_RISK and HEALTH_SCORE_CRITICAL can fire. Customers whose events were stored while the
endpoint was down are due at once and scored when it is back.

Each step: claim up to `batch_size` due customers (a lease each: `features.due.DueIndex`), read
their state, drop the ones no longer active from the index, score the rest through
`Pipeline.score_customers` with `trigger = "rescore"` (the same features, scorer, rules, ledger,
cooldowns and publisher as event-driven scoring), then move each scored customer's due time one
interval on, or release it if the endpoint could not score it. Work is bounded per step; while
more are due the next step starts at once, otherwise after `tick`, doubling while nobody is due up
to `max_idle` (a minute, or a tenth of the interval: an idle index costs 16 Queries a minute, not
16 per tick), and back to `tick` at once when this worker marks customers due (`wake`).
Back-pressure: one step at a time (a slow endpoint slows the sweep, not the event path), and none
while the scorer's circuit is open. A worker that dies mid-step loses nobody: its claims' leases end and the customers are due
again. Exactly-once across workers: a due customer is claimed by one conditional write.

Each step also re-publishes abandoned alert claims (the ledger's outbox), publishes the
resolutions of lifecycle alerts clear past their deadline (`worker.alerts.lifecycle`) and, once a
minute, expires alerts 30 days old without a churn and, every ten minutes, refreshes the
live-precision gauges from the ledger's counters (`worker.alerts.alert_outcomes`): bookkeeping whose
failure is logged and retried, never a reason to stop re-scoring. A completion notes when the
customer was scored (`scored_us`, in the same UpdateItem): where the next alert's "what changed"
starts.

Metrics (the infra alarms use these names): `churn_rescore_due_customers` (gauge), the age of the
oldest due customer `churn_rescore_lag_seconds` (gauge), `churn_customers_rescored_total`
(counter). `healthy()` is False while the lag exceeds twice the interval: `/readyz` turns red.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from features.activity import is_active, latest_event_us
from features.due import DueStats, lag_seconds
from features.state import CustomerState, to_us
from worker.exceptions import FatalAwsError
from worker.faultpoints import kill_point
from worker.metrics import Metrics
from worker.pipeline import Clock, Pipeline, wall_clock
from worker.ports import DueIndex, FeatureStore

log = structlog.get_logger(__name__)

REPUBLISH_LIMIT = 100  # abandoned alert claims re-published per step
RESOLVE_LIMIT = 100  # lifecycle alerts resolved per step
EXPIRE_LIMIT = 500  # alert outcomes expired per step (worker.alerts.alert_outcomes)
EXPIRE_EVERY_SECONDS = 60.0  # outcomes are a matter of days: a look a minute is plenty
PRECISION_EVERY_SECONDS = 600.0  # the live-precision gauges, from the ledger's daily counters


class Rescorer:
    def __init__(
        self,
        *,
        due: DueIndex,
        store: FeatureStore,
        pipeline: Pipeline,
        interval: timedelta,
        retention: timedelta,
        lease: timedelta = timedelta(minutes=2),
        batch_size: int = 100,
        tick: float = 5.0,
        metrics: Metrics | None = None,
        clock: Clock = wall_clock,
        endpoint_available: Callable[[], bool] = lambda: True,
    ) -> None:
        self._due = due
        self._store = store
        self._pipeline = pipeline
        self._interval = interval
        self._retention = retention
        self._lease = lease
        self._batch_size = batch_size
        self._tick = tick
        self.metrics = metrics or pipeline.metrics
        self._clock = clock
        self._endpoint_available = endpoint_available
        # The due count costs a Query per shard: refreshed every so often, not every step.
        self._stats_every = max(tick, min(30.0, interval.total_seconds() / 10))
        self._stats_at = float("-inf")
        self._max_idle = max(tick, min(60.0, interval.total_seconds() / 10))
        self._wake = asyncio.Event()
        self._expired_at = float("-inf")
        self._precision_at = float("-inf")
        self.claimed = 0  # customers the last step claimed
        self.lag = 0.0

    def wake(self) -> None:
        """Customers were just marked due (the endpoint failed them): sweep at the next tick."""
        self._wake.set()

    def healthy(self) -> bool:
        """False while the oldest due customer has waited more than twice the interval."""
        return self.lag <= 2 * self._interval.total_seconds()

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            "re-scoring sweeper started",
            interval_hours=self._interval.total_seconds() / 3600,
            batch_size=self._batch_size,
        )
        idle = self._tick
        while not stop.is_set():
            try:
                more = await self.step()
            except (FatalAwsError, asyncio.CancelledError):
                raise
            except Exception:  # an outage or a bug: the claims' leases end, the customers stay due
                log.exception("re-scoring step failed; trying again after the tick")
                self.metrics.inc("rescore_failures")
                more, self.claimed = False, 0
            if more:
                idle = self._tick
                continue
            idle = self._tick if self.claimed else min(idle * 2, self._max_idle)
            stopping = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(self._wake.wait())
            done, _ = await asyncio.wait({stopping, woken}, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
            for waiter in (stopping, woken):
                waiter.cancel()
            if woken in done:
                self._wake.clear()
                idle = self._tick

    async def step(self) -> bool:
        """One bounded step. True when more customers were due than it took."""
        now = self._clock()
        self.claimed = 0
        await self._refresh_stats(now)
        await self._pipeline.republish_abandoned(now, REPUBLISH_LIMIT)
        await self._pipeline.resolve_cleared(now, RESOLVE_LIMIT)
        await self._outcome_upkeep(now)
        if not self._endpoint_available():
            return False  # back-pressure: the customers stay due; the lag gauge shows it
        claims, more = await self._due.claim_due(now, self._batch_size, self._lease)
        self.claimed = len(claims)
        if not claims:
            return more
        kill_point("mid_sweep")
        states = await self._store.get([claim.customer_id for claim in claims])
        now = self._clock()
        active: dict[str, CustomerState] = {}
        for claim in claims:
            state = states[claim.customer_id]
            latest = latest_event_us(state.profile)
            as_of = to_us(now) if latest is None else max(to_us(now), latest)
            if is_active(state, as_of, self._retention):
                active[claim.customer_id] = state
            else:  # churned or silent past retention: nothing left to score, out of the index
                await self._due.complete(claim, None)
        outcome = await self._pipeline.score_customers(active, now, "rescore")
        next_due = to_us(now + self._interval)
        rescored = 0
        for claim in claims:
            if claim.customer_id not in active:
                continue
            if claim.customer_id in outcome.unscored:
                await self._due.release(claim)
            elif await self._due.complete(claim, next_due, scored_us=to_us(now)):
                rescored += 1
        if rescored:
            self.metrics.inc("customers_rescored", rescored)
        log.info(
            "customers re-scored",
            rescored=rescored,
            claimed=len(claims),
            not_active=len(claims) - len(active),
            unscored=len(outcome.unscored),
            alerts=len(outcome.alerts_published),
        )
        return more

    async def _outcome_upkeep(self, now: datetime) -> None:
        """The ledger's own upkeep (whether its churns are stamped yet), then expire alerts 30 days
        old without churn (a minute apart, at once again while a full batch expired), and refresh
        the live-precision gauges. Bookkeeping: a failure here is logged and retried later, never a
        reason to stop re-scoring customers."""
        try:
            await self._pipeline.ledger_upkeep(now)
            if time.monotonic() - self._expired_at >= EXPIRE_EVERY_SECONDS:
                expired = await self._pipeline.expire_alert_outcomes(now, EXPIRE_LIMIT)
                self._expired_at = time.monotonic() if expired < EXPIRE_LIMIT else float("-inf")
            if time.monotonic() - self._precision_at >= PRECISION_EVERY_SECONDS:
                self._precision_at = time.monotonic()
                await self._pipeline.refresh_live_precision(now)
        except FatalAwsError:
            raise
        except Exception:
            log.exception("alert outcome upkeep failed; trying again at the next step")
            self.metrics.inc("outcome_upkeep_failures")
            self._expired_at = time.monotonic()

    async def _refresh_stats(self, now: datetime) -> None:
        if time.monotonic() - self._stats_at < self._stats_every:
            return
        self._stats_at = time.monotonic()
        self._publish_stats(await self._due.stats(now), now)

    def _publish_stats(self, stats: DueStats, now: datetime) -> None:
        self.lag = lag_seconds(stats, now)
        self.metrics.set("rescore_due_customers", stats.due)
        self.metrics.set("rescore_lag_seconds", round(self.lag, 3))
