"""The pipeline: one delivery in, durable effects out, then a settlement for the source.

Per batch: validate, apply to the feature store (idempotent), compute features for every touched
customer, score them in one batched endpoint call, route alerts, claim them in the ledger, publish,
mark them sent, and only then report records as done.

What holds after a crash, a redelivery or a bad event:
- A bad event is copied to the DLQ with `error_code`/`error_detail` and acknowledged; if the DLQ
  cannot be written, the record fails and comes back: never dropped.
- Redelivered events are duplicates in the store, so windows are not double-counted; their
  customers are still scored and routed, so a crash after the store write but before publishing
  loses no alert, and the ledger's claims keep a second alert from going out.
- When the endpoint is down, rule-only alerts (IB_CALL_SPIKE) still go out, marked as such, and
  the records fail so they are scored when the endpoint is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog

from features.activity import has_churned
from features.events import TIERS, Event, check_event_time, parse_event
from features.exceptions import EventParseError, FeaturesError
from features.registry import FeatureRow, compute_features_batch
from features.state import CustomerState, from_us
from features.store import FeatureStore
from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import AlertPublishError
from worker.alerts.ledger import AlertLedger, ClaimStatus
from worker.alerts.publisher import AlertPublisher
from worker.alerts.rules import Alert, Prediction, route_alerts
from worker.exceptions import ScoringRejectedError, ScoringUnavailableError
from worker.metrics import Metrics
from worker.ports import DeadLetterQueue, Record, Settlement
from worker.scoring import Scorer

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    def __init__(
        self,
        *,
        store: FeatureStore,
        scorer: Scorer | None,
        ledger: AlertLedger,
        publisher: AlertPublisher,
        dlq: DeadLetterQueue,
        alerts: AlertsConfig,
        retention: timedelta,
        metrics: Metrics | None = None,
        clock: Clock = wall_clock,
    ) -> None:
        self._store = store
        self._scorer = scorer
        self._ledger = ledger
        self._publisher = publisher
        self._dlq = dlq
        self._alerts = alerts
        self._retention = retention
        self.metrics = metrics or Metrics()
        self._clock = clock

    async def process(self, records: Sequence[Record]) -> Settlement:
        now = self._clock()
        settlement = Settlement()
        good: list[tuple[Record, Event]] = []
        for record in records:
            self.metrics.inc("events_in")
            try:
                event = parse_event(record.body)
                rejection = check_event_time(event, now, self._retention)
                if rejection is not None:
                    raise rejection
            except EventParseError as exc:
                await self._quarantine(record, exc, settlement)
                continue
            good.append((record, event))
        if not good:
            return settlement

        try:
            applied = await self._store.apply([event for _, event in good], now)
        except (FeaturesError, OSError) as exc:
            log.warning("feature store unavailable; batch left for redelivery", error=str(exc), events=len(good))
            self.metrics.inc("batches_failed", reason="store")
            settlement.failed += [record for record, _ in good]
            return settlement
        self.metrics.inc("events_applied", len(applied.applied))
        self.metrics.inc("events_duplicate", len(applied.duplicates))

        scored, in_flight = await self._route_and_publish(applied.states, now, good)
        for record, event in good:
            if scored and event.customer_id not in in_flight:
                settlement.done.append(record)
            else:
                settlement.failed.append(record)
        return settlement

    async def rescore(self, customer_ids: Sequence[str]) -> bool:
        """Score customers no event brought (quiet customers at a scoring instant), at the clock's
        now, through the same features, scorer, rules, ledger and publisher as an event batch.
        Returns whether the endpoint scored them (if not, only rule-based alerts went out)."""
        now = self._clock()
        states = await self._store.get(customer_ids)
        scored, _ = await self._route_and_publish(states, now, [])
        return scored

    async def _quarantine(self, record: Record, error: EventParseError, settlement: Settlement) -> None:
        try:
            await self._dlq.quarantine(record, error.error_code, error.error_detail)
        except Exception as exc:  # the DLQ is down: keep the record, it will come back
            log.warning("dead-letter queue unavailable", error=str(exc), source_id=record.source_id)
            settlement.failed.append(record)
            return
        log.info("event quarantined", error_code=error.error_code, error_detail=error.error_detail,
                 source_id=record.source_id)  # fmt: skip
        self.metrics.inc("events_quarantined", reason=error.error_code)
        settlement.quarantined.append(record)

    async def _route_and_publish(
        self, states: dict[str, CustomerState], now: datetime, good: list[tuple[Record, Event]]
    ) -> tuple[bool, set[str]]:
        """Score, route, claim, publish. Returns whether the endpoint scored the batch (if not, the
        records must come back) and the customers whose alert is in flight elsewhere."""
        customers = sorted(states)
        matrix = compute_features_batch([states[cid] for cid in customers], now)
        predictions: list[Prediction | None] = [None] * len(customers)
        scored = True
        if self._scorer is not None:
            started = time.perf_counter()
            try:
                raw = await self._scorer.score(matrix)
                predictions = [Prediction.from_json(item) for item in raw]
                self.metrics.observe("scoring_latency_ms", (time.perf_counter() - started) * 1000)
            except ScoringUnavailableError as exc:
                log.warning("endpoint unavailable; rule-only alerts, batch left for redelivery", error=str(exc))
                self.metrics.inc("scoring_failures", reason="unavailable")
                scored = False
            except ScoringRejectedError as exc:
                # Retrying cannot fix a refused input: alert on rules only and move on, loudly.
                log.error("endpoint refused the batch; rule-only alerts", error=str(exc), customers=len(customers))
                self.metrics.inc("scoring_failures", reason="rejected")

        alerts: list[Alert] = []
        for row, cid in enumerate(customers):
            state = states[cid]
            last = state.profile.last_us
            if has_churned(state.profile):
                await self._ledger.record_churn(cid, from_us(last["customer_churned"]))
                continue
            tier = TIERS[state.profile.tier[2]] if state.profile.tier else None
            prediction = predictions[row]
            routed = route_alerts(
                cid, FeatureRow(matrix[row]), prediction, self._alerts, now, tier,
                prediction.model_version if prediction else None,
            )  # fmt: skip
            if routed and "customer_churned" in last:  # churned once, signed up again since
                await self._ledger.record_return(cid, from_us(last["customer_churned"]), from_us(last["customer_signed_up"]))
            alerts += routed
        in_flight = await self._publish(alerts, now, good)
        return scored, in_flight

    async def _publish(self, alerts: list[Alert], now: datetime, good: list[tuple[Record, Event]]) -> set[str]:
        """Claim, publish, mark sent. Returns customers whose alert another worker is still sending
        (a live claim): their records must come back, so the alert is not lost if that worker died."""
        if not alerts:
            return set()
        claims = await self._ledger.claim_all(alerts, now, self._alerts)
        to_send = [claim.alert for claim in claims if claim.should_publish]
        in_flight = {claim.alert.customer_id for claim in claims if claim.status is ClaimStatus.IN_FLIGHT}
        for claim in claims:
            if not claim.should_publish:
                self.metrics.inc("alerts_not_sent", type=claim.alert.alert_type.value, reason=claim.status.value)
        if not to_send:
            return in_flight
        try:
            published = await self._publisher.publish(to_send)
        except AlertPublishError as exc:
            # What did go out is marked sent; the rest stays claimed (pending) and the records come
            # back, so the next attempt re-publishes exactly the unsent alerts, with the same ids.
            await self._ledger.mark_all_sent(exc.published)
            log.warning("publishing alerts failed; records left for redelivery", error=str(exc),
                        failed=len(exc.failed))  # fmt: skip
            return in_flight | {alert.customer_id for alert in exc.failed}
        sent_at = time.time()
        await self._ledger.mark_all_sent(published)
        oldest: dict[str, float] = {}  # per customer, the earliest enqueue time of this batch's events
        for record, event in good:
            if record.enqueued_at is not None:
                cid = event.customer_id
                oldest[cid] = min(oldest.get(cid, record.enqueued_at), record.enqueued_at)
        for alert in published:
            self.metrics.inc("alerts_published", type=alert.alert_type.value)
            if alert.customer_id in oldest:
                self.metrics.observe("event_to_alert_latency_ms", (sent_at - oldest[alert.customer_id]) * 1000)
            log.info("alert published", alert_id=alert.alert_id, type=alert.alert_type.value,
                     customer_id=alert.customer_id, scoring=alert.scoring)  # fmt: skip
        return in_flight

