"""The pipeline: one delivery in, durable effects out, then a settlement for the source.

Per batch: validate, apply to the feature store (idempotent), compute features for every touched
customer, score them in one batched endpoint call, route alerts, claim them in the ledger, publish,
mark them sent, and only then report records as done. `score_customers` (features, score, route,
claim, publish, mark sent) is also what the re-scoring sweeper (`worker.rescore`) runs for due
customers: one code path for both triggers, so rules, cooldowns and the ledger hold for both.

What holds after a crash, a redelivery or a bad event:
- A bad event costs its record only: whatever fails in parsing or validation, the record is copied
  to the DLQ with `error_code`/`error_detail` and acknowledged; if the DLQ cannot be written, the
  record fails and comes back: never dropped.
- Redelivered events are duplicates in the store, so windows are not double-counted; their
  customers are still scored and routed, so a crash after the store write but before publishing
  loses no alert, and the ledger's claims keep a second alert from going out.
- Scoring is decoupled from acknowledgement: when the endpoint cannot score (an outage, the
  circuit open), rule-only alerts (IB_CALL_SPIKE) still go out, marked as such, the customers are
  marked due (`features.due`) and the records are acknowledged; the sweeper scores those customers
  when the endpoint is back. Nothing is acknowledged before the store write, the alert claims
  (each holds its alert, an outbox entry the sweeper re-publishes if its publish never finishes)
  and the due marks are durable. Without a due index (in-process runs) the records fail instead.
- One bad row of an endpoint answer (outside the contract) costs that customer's model alerts
  for this scoring, never the batch.

The improvement loop (docs/architecture.md, The improvement loop), each in a method of its own:
- `_archive_events`: the batch's accepted events to the event archive (`worker.archive`) before
  the records are acknowledged; a failed write fails the records.
- `_with_arms` / `_withhold`: every alert's experiment arm (`worker.alerts.experiment`); control
  alerts are claimed like treatment ones and marked sent, but published only to the control
  topic, if any, never to the retention topic.
- `_record_churn`: a churn confirms the customer's alerts of the 30 days before it;
  `expire_alert_outcomes` and `refresh_live_precision` are the sweeper's (`worker.alerts.alert_outcomes`).
- `_submit_to_shadow`: the customers the live model scored, handed to the shadow model
  (`worker.shadow`), which never holds up, fails or changes this path.

What a retention team acts on (docs/architecture.md, Alerts people act on):
- `explain` (`worker.alerts.changes`): every alert says what changed since the customer's previous
  scoring; one extra scoring call per batch that alerts, bounded, never failing the batch.
- budgets (`worker.alerts.budgets`): `claim_all` claims each budget's alerts by expected value;
  `_defer_until_tomorrow` marks the customers of DEFERRED claims due at the next UTC day's start.
- the lifecycle (`worker.alerts.lifecycle`): escalations come back from the claims as NEW claims and
  are published like any alert; `resolve_cleared` (the sweeper's) publishes resolutions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import structlog

from features.activity import has_churned, is_active, latest_event_us
from features.events import MAX_FUTURE_SKEW, TIERS, Event, check_event_time, parse_event
from features.exceptions import EventParseError, FeaturesError
from features.registry import FEATURE_HASH, FeatureRow, compute_features_batch
from features.state import CustomerState, from_us, to_us
from worker.alerts.alert_outcomes import live_precision, precision_window
from worker.alerts.budgets import BudgetsConfig, expected_value, next_day_start
from worker.alerts.changes import explain
from worker.alerts.claims import Claim, ClaimStatus
from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import AlertPublishError, InvalidPredictionError
from worker.alerts.experiment import CONTROL, ExperimentConfig, assign_arm
from worker.alerts.lease_guard import LeaseEndingError, LeaseGuard
from worker.alerts.rules import Alert, Prediction, Trigger, route_alerts
from worker.exceptions import FatalAwsError, ScoringRejectedError, ScoringUnavailableError
from worker.faultpoints import kill_point
from worker.metrics import Metrics
from worker.ports import (
    AlertLedger,
    AlertPublisher,
    DeadLetterQueue,
    DueIndex,
    EventArchive,
    FeatureStore,
    Record,
    Scorer,
    Settlement,
)
from worker.served_log import ServedLog
from worker.shadow import ShadowBatch, ShadowScoring

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


def scoring_instant(now: datetime, states: Iterable[CustomerState]) -> datetime:
    """The instant features are computed at: now, or the latest stored event when it lies ahead of
    now (events up to 5 minutes in the future are accepted; just before UTC midnight, windows ending
    at now would not see one from just after it)."""
    latest = max((latest_event_us(state.profile) or 0 for state in states), default=0)
    ahead = min(latest, to_us(now + MAX_FUTURE_SKEW))
    return max(now, from_us(ahead)) if ahead > to_us(now) else now


@dataclass
class ScoreOutcome:
    """What `score_customers` did."""

    unscored: set[str] = field(default_factory=set)  # not churned, not scored (endpoint down): due again
    alerts_published: list[Alert] = field(default_factory=list)  # treatment: to the retention topic
    alerts_withheld: list[Alert] = field(default_factory=list)  # control: recorded, not sent to retention


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
        due: DueIndex | None = None,
        metrics: Metrics | None = None,
        clock: Clock = wall_clock,
        archive: EventArchive | None = None,
        experiment: ExperimentConfig | None = None,
        control_publisher: AlertPublisher | None = None,
        shadow: ShadowScoring | None = None,
        budgets: BudgetsConfig | None = None,
        explainer: Scorer | None = None,
    ) -> None:
        self._store = store
        self._scorer = scorer
        self._ledger = ledger
        self._publisher = publisher
        self._dlq = dlq
        self._alerts = alerts
        self._retention = retention
        self._due = due
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._archive = archive
        self._experiment = experiment or ExperimentConfig()
        self._control_publisher = (
            control_publisher  # control-arm alerts, for audit (never the retention topic)
        )
        self.shadow = shadow  # the shadow model, best effort in the background (worker.shadow)
        self.on_marked_due: Callable[[], None] | None = None  # the sweeper's wake-up
        self._budgets = budgets  # capacity budgets (worker.alerts.budgets)
        self._explainer = explainer  # scores "what changed" (worker.alerts.changes); None: no shares
        self.served_log: ServedLog | None = None  # a sample of what was scored (worker.served_log)

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
                await self._quarantine(record, exc.error_code, exc.error_detail, settlement, exc.field)
                continue
            except Exception as exc:  # a bug in reading one record must cost that record only
                log.error("event could not be read", error=type(exc).__name__, source_id=record.source_id)
                await self._quarantine(
                    record, "invalid_field", f"could not be read ({type(exc).__name__})", settlement
                )
                continue
            good.append((record, event))
        if not good:
            return settlement

        try:
            applied = await self._store.apply([event for _, event in good], now)
        except FatalAwsError:
            raise
        except (FeaturesError, OSError) as exc:
            log.warning(
                "feature store unavailable; batch left for redelivery", error=str(exc), events=len(good)
            )
            self.metrics.inc("batches_failed", reason="store")
            settlement.failed += [record for record, _ in good]
            return settlement
        kill_point("after_store_commit")
        self.metrics.inc("events_applied", len(applied.applied))
        self.metrics.inc("events_duplicate", len(applied.duplicates))

        enqueued: dict[str, float] = {}  # per customer, the earliest enqueue time of this batch's events
        for record, event in good:
            if record.enqueued_at is not None:
                cid = event.customer_id
                enqueued[cid] = min(enqueued.get(cid, record.enqueued_at), record.enqueued_at)
        outcome = await self.score_customers(applied.states, now, "event", enqueued, applied.previous)
        retry = await self._mark_unscored_due(outcome.unscored, now)
        if not await self._archive_events([event for _, event in good]):
            retry = {event.customer_id for _, event in good}
        for record, event in good:
            (settlement.failed if event.customer_id in retry else settlement.done).append(record)
        return settlement

    async def _archive_events(self, events: list[Event]) -> bool:
        """Write the batch's accepted events to the archive (`worker.archive`), the store's
        duplicates too: one may be an event whose archive write a crash cut short. False: the write
        failed and the records must come back (the archive may then hold some of them twice, which
        its readers remove by event_id)."""
        if self._archive is None:
            return True
        try:
            await self._archive.write(events)
        except FatalAwsError:
            raise
        except Exception as exc:
            log.warning(
                "event archive unavailable; the batch's records come back", error=str(exc), events=len(events)
            )
            self.metrics.inc("archive_failures")
            return False
        self.metrics.inc("events_archived", len(events))
        return True

    async def _quarantine(
        self,
        record: Record,
        error_code: str,
        error_detail: str,
        settlement: Settlement,
        field: str | None = None,
    ) -> None:
        try:
            await self._dlq.quarantine(record, error_code, error_detail)
        except FatalAwsError:
            raise
        except Exception as exc:  # the DLQ is down: keep the record, it will come back
            log.warning("dead-letter queue unavailable", error=str(exc), source_id=record.source_id)
            settlement.failed.append(record)
            return
        # Never the body, not even a part of it: error_detail may quote a value, so it goes to the
        # DLQ (with the body) and the log names the field only.
        log.info("event quarantined", error_code=error_code, field=field, source_id=record.source_id)
        self.metrics.inc("events_quarantined", reason=error_code)
        settlement.quarantined.append(record)

    async def _mark_unscored_due(self, customers: set[str], now: datetime) -> set[str]:
        """Customers whose events are stored but who were not scored: due now, so their records can
        be acknowledged. Returns those whose records must come back instead."""
        if not customers:
            return set()
        if self._due is None:
            return customers  # nobody would score them later: redelivery will
        try:
            await self._due.mark_due(sorted(customers), now)
        except FatalAwsError:
            raise
        except Exception as exc:
            log.warning(
                "could not mark customers due; their records come back",
                error=str(exc),
                customers=len(customers),
            )
            return customers
        self.metrics.inc("customers_marked_due", len(customers))
        if self.on_marked_due is not None:
            self.on_marked_due()
        log.info("endpoint unavailable; customers marked due, records acknowledged", customers=len(customers))
        return set()

    async def score_customers(
        self,
        states: Mapping[str, CustomerState],
        now: datetime,
        trigger: Trigger = "event",
        enqueued: Mapping[str, float] | None = None,
        previous: Mapping[str, CustomerState] | None = None,
    ) -> ScoreOutcome:
        """Features at `scoring_instant(now)`, one endpoint call, routing, claims, publishing and
        marks, for every customer in `states` (churned ones are recorded, not alerted). Customers
        the endpoint could not score get rule-only alerts and come back in `unscored`.
        `previous`: the customers as they were before this batch's events (what changed is
        measured from their previous scoring); None: `states` themselves (a re-scoring)."""
        outcome = ScoreOutcome()
        customers = sorted(states)
        if not customers:
            return outcome
        as_of = scoring_instant(now, states.values())
        matrix = compute_features_batch([states[cid] for cid in customers], as_of)
        predictions: list[Prediction | None] = [None] * len(customers)
        scored = True
        if self._scorer is not None:
            started = time.perf_counter()
            try:
                raw = await self._scorer.score(matrix)
                self.metrics.observe("scoring_latency_ms", (time.perf_counter() - started) * 1000)
                predictions = [self._prediction(row, customers[i]) for i, row in enumerate(raw)]
            except ScoringUnavailableError as exc:
                log.warning(
                    "endpoint unavailable; rule-only alerts", error=str(exc), customers=len(customers)
                )
                self.metrics.inc("scoring_failures", reason="unavailable")
                scored = False
            except ScoringRejectedError as exc:
                # Retrying cannot fix a refused input: alert on rules only and move on, loudly.
                log.error(
                    "endpoint refused the batch; rule-only alerts", error=str(exc), customers=len(customers)
                )
                self.metrics.inc("scoring_failures", reason="rejected")
        if scored and self._scorer is not None and self.served_log is not None:
            self.served_log.record(customers, matrix, predictions, as_of, trigger)  # returns at once

        alerts: list[Alert] = []
        compared: dict[int, tuple[str | None, set[str]]] = {}  # row -> (tier, live types): for the shadow
        for row, cid in enumerate(customers):
            state = states[cid]
            last = state.profile.last_us
            if has_churned(state.profile):
                await self._record_churn(cid, from_us(last["customer_churned"]))
                continue
            if not scored:
                outcome.unscored.add(cid)
            tier = TIERS[state.profile.tier[2]] if state.profile.tier else None
            prediction = predictions[row]
            routed = route_alerts(
                cid,
                FeatureRow(matrix[row]),
                prediction,
                self._alerts,
                as_of,
                tier,
                prediction.model_version if prediction else None,
                trigger=trigger,
                feature_hash=FEATURE_HASH,
            )
            if (
                routed and "customer_churned" in last
            ):  # churned once, signed up again since (or at that instant)
                await self._ledger.record_return(
                    cid, from_us(last["customer_churned"]), from_us(last["customer_signed_up"])
                )
            value = expected_value(prediction.churn_risk_30d if prediction else None, FeatureRow(matrix[row]))
            alerts += self._with_arms(
                [alert.model_copy(update={"expected_value": value}) for alert in routed]
            )
            if prediction is not None:
                compared[row] = (tier, {alert.alert_type.value for alert in routed})
        self._submit_to_shadow(matrix, customers, compared, predictions, as_of, trigger)
        alerts = await explain(
            alerts, customers, matrix, predictions, states, previous, as_of, self._explainer
        )
        if scored:  # where the next scoring's "what changed" starts (in process; the store writes it)
            for cid in customers:
                states[cid].profile.scored_us = to_us(as_of)
        outcome.alerts_published, outcome.alerts_withheld = await self._claim_and_publish(
            alerts, enqueued or {}
        )
        return outcome

    def _submit_to_shadow(
        self,
        matrix: np.ndarray,
        customers: list[str],
        compared: Mapping[int, tuple[str | None, set[str]]],
        predictions: Sequence[Prediction | None],
        as_of: datetime,
        trigger: Trigger,
    ) -> None:
        """Hand the customers the live model scored to the shadow model (`worker.shadow`): it scores
        them in the background and returns at once; nothing it does reaches the live path."""
        if self.shadow is None or not compared or not self.shadow.accepting():
            return
        rows = sorted(compared)
        live = predictions[rows[0]]
        self.shadow.submit(
            ShadowBatch(
                features=matrix[rows],
                customers=[customers[r] for r in rows],
                tiers=[compared[r][0] for r in rows],
                as_of=as_of,
                trigger=trigger,
                live_types=[compared[r][1] for r in rows],
                live_model_version=live.model_version if live is not None else None,
            )
        )

    async def _record_churn(self, customer_id: str, churned_at: datetime) -> None:
        """No more alerts for the customer, and their alerts of the 30 days before the churn are
        confirmed (live outcomes, `worker.alerts.alert_outcomes`; idempotent, so a redelivery is harmless)."""
        await self._ledger.record_churn(customer_id, churned_at)
        for resolution in await self._ledger.confirm_churn(customer_id, churned_at):
            self.metrics.inc("alerts_confirmed", type=resolution.alert_type, arm=resolution.arm)
            if resolution.was is not None:  # a late churn event turned an expiry over (counters only go up)
                self.metrics.inc("alerts_expiries_reversed", type=resolution.alert_type, arm=resolution.arm)

    async def ledger_upkeep(self, now: datetime) -> None:
        """The ledger's own bookkeeping (the sweeper calls this each step; it bounds itself)."""
        await self._ledger.upkeep(now)

    async def expire_alert_outcomes(self, now: datetime, limit: int) -> int:
        """Alerts whose 30 days passed without a churn are expired (the sweeper calls this)."""
        expired = await self._ledger.expire_outcomes(now, limit)
        for resolution in expired:
            self.metrics.inc("alerts_expired", type=resolution.alert_type, arm=resolution.arm)
        if expired:
            log.info("alert outcomes expired", alerts=len(expired))
        return len(expired)

    async def refresh_live_precision(self, now: datetime) -> dict[str, float]:
        """The `live_precision{type}` gauges: confirmed / resolved over the 30 latest settled alert
        days (every outcome known), from the ledger's counters, so every worker reports the same."""
        today = now.astimezone(UTC).date()
        since, until = precision_window(today)
        precision = live_precision(await self._ledger.outcome_stats(since, until), today)
        for alert_type, value in precision.items():
            self.metrics.set("live_precision", value, type=alert_type)
        return precision

    def _with_arms(self, alerts: list[Alert]) -> list[Alert]:
        """Each alert's experiment arm (`worker.alerts.experiment`): a pure function of the salt,
        the customer and the type, so every worker, redelivery and backtest agrees on it."""
        if not self._experiment.active:
            return alerts  # every alert is treatment
        return [
            alert.model_copy(
                update={"arm": assign_arm(alert.customer_id, alert.alert_type.value, self._experiment)}
            )
            for alert in alerts
        ]

    def _prediction(self, row: object, customer_id: str) -> Prediction | None:
        try:
            return Prediction.from_endpoint(row)
        except InvalidPredictionError as exc:
            log.error(
                "endpoint answer outside the contract; rule-only alerts for this customer",
                error=str(exc),
                customer_id=customer_id,
            )
            self.metrics.inc("scoring_failures", reason="invalid_prediction")
            return None

    async def _claim_and_publish(
        self, alerts: list[Alert], enqueued: Mapping[str, float]
    ) -> tuple[list[Alert], list[Alert]]:
        if not alerts:
            return [], []
        # The claim's own time, not the batch's: after long retries a lease from the batch's start
        # could be over before the claim is written, and another worker would send it too.
        claims = await self._ledger.claim_all(alerts, self._clock(), self._alerts, self._budgets)
        kill_point("after_alert_claim")
        for claim in claims:
            if not claim.should_publish:
                self.metrics.inc(
                    "alerts_not_sent", type=claim.alert.alert_type.value, reason=claim.status.value
                )
        await self._defer_until_tomorrow([c for c in claims if c.status is ClaimStatus.DEFERRED])
        return await self._publish(await self._still_ours(claims), enqueued)

    async def _defer_until_tomorrow(self, deferred: Sequence[Claim]) -> None:
        """Customers whose alerts a budget deferred are due at the next UTC day's start, so the
        sweeper routes them again then, events or not (the deferral itself is in the ledger)."""
        if not deferred:
            return
        for claim in deferred:
            log.info(
                "alert deferred: its budget is spent for the day",
                type=claim.alert.alert_type.value,
                customer_id=claim.alert.customer_id,
                budget=claim.alert.budget.name if claim.alert.budget else None,
            )
        if self._due is None:
            return  # in process (backtests): every active customer is scored each day anyway
        customers = sorted({claim.alert.customer_id for claim in deferred})
        try:
            await self._due.mark_due(customers, next_day_start(self._clock()))
        except FatalAwsError:
            raise
        except Exception as exc:  # they are due within an interval anyway: never fail the batch for it
            log.warning(
                "could not mark deferred customers due tomorrow", error=str(exc), customers=len(customers)
            )

    @property
    def has_lifecycle(self) -> bool:
        """Whether any rule escalates or resolves (`worker.alerts.lifecycle`)."""
        return self._alerts.lifecycle

    async def resolve_cleared(self, now: datetime, limit: int) -> int:
        """Publish the resolutions of lifecycle alerts clear past their deadline (the sweeper calls
        this): each a message of its own, same alert_id, `status: resolved`. Returns how many.

        Only on evidence: the customer was scored at least `resolve_after` after the rule last
        fired (that scoring found it clear, or its heartbeat would have moved the deadline). One
        not scored since (the workers were down, the sweep is behind) is marked due now instead,
        and resolved at a later pass if its scoring finds the condition still clear. A customer
        nobody scores any more (churned, silent past retention) is resolved on the deadline."""
        candidates = await self._ledger.resolution_candidates(now, limit)
        if not candidates:
            return 0
        # In process (no due index: backtests) every active customer is scored each day anyway.
        wanted = sorted({alert.customer_id for alert in candidates}) if self._due is not None else []
        states = await self._store.get(wanted) if wanted else {}
        ready: list[Alert] = []
        unseen: set[str] = set()
        for alert in candidates:
            state = states.get(alert.customer_id)
            after = timedelta(seconds=alert.resolve_after_s or 0)
            fired = alert.last_firing_at or alert.window_start or alert.as_of
            scored = state.profile.scored_us if state is not None else None
            quiet = state is not None and not is_active(state, to_us(now), self._retention)
            if self._due is None or quiet or (scored is not None and scored >= to_us(fired + after)):
                ready.append(alert)
            else:
                unseen.add(alert.customer_id)
        if unseen and self._due is not None:
            await self._due.mark_due(sorted(unseen), now)
            if self.on_marked_due is not None:
                self.on_marked_due()
        claims = [claim for alert in ready if (claim := await self._ledger.resolve(alert, now)) is not None]
        published, withheld = await self._publish(await self._still_ours(claims), {})
        for alert in published + withheld:
            self.metrics.inc("alerts_resolved", type=alert.alert_type.value)
        return len(published) + len(withheld)

    async def _still_ours(self, claims: Sequence[Claim]) -> list[Claim]:
        """The publishable claims we still hold with half a lease ahead (renewed if need be): a
        claim the sweep took over while this batch was slowed is its to publish now."""
        publishable = [claim for claim in claims if claim.should_publish]
        live = await self._ledger.keep_live(publishable, self._clock())
        kept = {claim.alert.alert_id for claim in live}
        for claim in publishable:
            if claim.alert.alert_id not in kept:
                self.metrics.inc("alerts_not_sent", type=claim.alert.alert_type.value, reason="lease_lost")
        return live

    async def republish_abandoned(self, now: datetime, limit: int) -> int:
        """Publish claims whose lease ran out unsent (their worker died, or their publish failed):
        the outbox sweep. Returns how many were published."""
        claims = await self._ledger.abandoned(now, limit)
        published, withheld = await self._publish(await self._still_ours(claims), {})
        if published or withheld:
            self.metrics.inc("alerts_republished", len(published) + len(withheld))
        return len(published) + len(withheld)

    async def _publish(
        self, to_send: list[Claim], enqueued: Mapping[str, float]
    ) -> tuple[list[Alert], list[Alert]]:
        """Treatment alerts to the retention topic, control alerts withheld from it: (published,
        withheld). Both arms were claimed alike; both end marked sent in the ledger."""
        treatment = [claim for claim in to_send if claim.alert.arm != CONTROL]
        control = [claim for claim in to_send if claim.alert.arm == CONTROL]
        published = await self._send(self._publisher, treatment, enqueued) if treatment else []
        withheld = await self._withhold(control) if control else []
        return published, withheld

    async def _withhold(self, control: list[Claim]) -> list[Alert]:
        """Control-arm alerts: to `CHURN_CONTROL_TOPIC_ARN` when set (an audit trail, outside the
        retention team's topic), else only recorded. Either way they are marked sent, so the
        ledger's cooldowns hold for them exactly as for treatment alerts."""
        if self._control_publisher is not None:
            return await self._send(self._control_publisher, control, {}, withheld=True)
        now = self._clock()
        stamped = [claim.alert.published_at(now) for claim in control]
        await self._ledger.mark_all_sent(stamped)
        for alert in stamped:
            self.metrics.inc("alerts_withheld", type=alert.alert_type.value, trigger=alert.trigger)
            log.info(
                "alert withheld (control arm)",
                alert_id=alert.alert_id,
                type=alert.alert_type.value,
                customer_id=alert.customer_id,
                trigger=alert.trigger,
            )
        return stamped

    async def _send(
        self,
        publisher: AlertPublisher,
        claims: list[Claim],
        enqueued: Mapping[str, float],
        withheld: bool = False,
    ) -> list[Alert]:
        """Publish while holding the claims' leases (`LeaseGuard`), then mark sent what went out.
        What did not is released (its lease ends now), so the next sweep re-publishes it with the
        same alert_id; a claim another worker took over meanwhile is its to send."""
        fatal: FatalAwsError | None = None
        failed: list[Alert] = []
        guard = LeaseGuard(self._ledger, claims, self._clock)
        try:
            published = await guard.publish(publisher.publish([c.alert for c in claims], guard.holds))
        except AlertPublishError as exc:
            published, failed = exc.published, [alert for alert in exc.failed if guard.holds(alert)]
            fatal = exc.__cause__ if isinstance(exc.__cause__, FatalAwsError) else None
            log.warning(
                "publishing alerts failed; they are re-sent by the sweep", error=str(exc), failed=len(failed)
            )
        except LeaseEndingError as exc:
            # Whether some went out is unknown: their leases run out and the sweep re-publishes them.
            published = []
            self.metrics.inc("alerts_publish_stopped", len(claims))
            log.warning(
                "publishing alerts stopped before their leases ended", error=str(exc), alerts=len(claims)
            )
        for claim in guard.lost:
            self.metrics.inc("alerts_not_sent", type=claim.alert.alert_type.value, reason="lease_lost")
        if published:
            kill_point("after_publish")
            await self._ledger.mark_all_sent(published)
            kill_point("after_mark_sent")
        if failed:
            try:
                await self._ledger.release(failed, self._clock())
            except FatalAwsError:
                raise
            except Exception as exc:  # their leases end on their own: the sweep still finds them
                log.warning("could not release unsent alerts", error=str(exc), alerts=len(failed))
        if fatal is not None:
            raise fatal
        sent_at = time.time()
        for alert in published:
            if withheld:
                self.metrics.inc("alerts_withheld", type=alert.alert_type.value, trigger=alert.trigger)
                log.info(
                    "alert withheld (control arm), sent to the control topic",
                    alert_id=alert.alert_id,
                    type=alert.alert_type.value,
                    customer_id=alert.customer_id,
                    trigger=alert.trigger,
                )
                continue
            self.metrics.inc("alerts_published", type=alert.alert_type.value, trigger=alert.trigger)
            if alert.customer_id in enqueued:
                self.metrics.observe(
                    "event_to_alert_latency_ms", (sent_at - enqueued[alert.customer_id]) * 1000
                )
            log.info(
                "alert published",
                alert_id=alert.alert_id,
                type=alert.alert_type.value,
                customer_id=alert.customer_id,
                scoring=alert.scoring,
                trigger=alert.trigger,
            )
        return published
