"""The alert ledger's contract: which alert of which type each customer was last sent, so cooldowns
hold and nothing is sent twice across redeliveries, crashes and concurrent workers. The port and
its shared rules live here; `ledger.py` has the in-memory twin, `dynamodb_ledger.py` the adapter.

An outbox-style claim per (customer, alert type), in table `<prefix>alerts` (PK `customer_id`, SK
`alert_type`; a `#churned` item marks a churned customer):

1. `claim(alert, now, cooldown)` writes, in one transaction conditional on the customer not having
   churned (in DynamoDB: a churn is stamped on the customer's claim items, so the claim's own
   condition says it; see `dynamodb_ledger.py`, CHURN STAMPS), a `pending` record with the window start (`now`), the alert id, the alert body and a
   lease (`lease`, default 2 minutes, from `now`: callers pass the time of the claim, not of the
   batch, so a claim made after long retries is not born expired), if there is no record of that
   type or the previous window has ended (`window_start + cooldown <= now`). The result says what
   to do:
   - NEW: the window is ours; publish `claim.alert` (stamped with the window, hence its id).
   - PENDING: a claim in this window was never marked sent and its lease ran out, i.e. its worker
     crashed or stalled between claim and `mark_sent`, or its publish failed. We now hold the
     lease; re-publish `claim.alert`, the stored alert with the same `alert_id`.
   - IN_FLIGHT: another worker holds a live lease on this window's alert: do not publish. If that
     worker dies, the claim is found again when its lease ends (below): nobody has to wait for it.
   - SUPPRESSED: this window's alert was sent; nothing to do until the cooldown ends.
   - CHURNED: the customer churned (`record_churn`) and has not signed up again since
     (`record_return`); no alert is sent for them.
2. Publish what was NEW or PENDING, then `mark_sent(alert)`: status `sent`, conditional on the same
   alert id (a later window's claim is never marked by an old publish). A publish that failed
   `release`s its claims: their lease ends now, so they are re-published at the next sweep.
   Just before publishing, `keep_live` renews every claim with less than half its lease left
   (conditional on the claim token it was taken with: a take-over writes a new token) and drops
   the ones another worker took over meanwhile. A batch slowed by retries (one slow claim holds up
   the others) would otherwise publish alerts whose lease ended, which the sweep may have
   re-published already: two copies of one alert_id without any crash. While the publish runs,
   `worker.alerts.lease_guard` keeps renewing the claims and bounds the publish by their leases,
   so a slow SNS does not hand them to the sweep either.
3. `abandoned(now, limit)`: claims still pending after their lease ran out, taken over (PENDING)
   for the caller to publish and mark sent. The worker's sweeper calls it every tick, so a claimed
   alert is published even when the events that routed it never come back (they were acknowledged,
   or a redelivery no longer routes it): the claim itself is the outbox entry. In DynamoDB a sparse
   index finds them (`pending_shard`, `lease_until_us`; `mark_sent` removes the item from it).

Batches. `claim_all` may claim a batch's alerts together (the DynamoDB ledger: one transaction
for up to 25 claims, each with its record): that changes the number of requests, not the rules. A claim that the shared transaction cannot open is answered one by one as above; a
transaction whose answer was lost hands each of its claims the token it was sent with, so a claim
that went through is NEW for its caller, never IN_FLIGHT.

Alert records. Each NEW claim also writes, in its own transaction, an alert record that outlives
the claim item (`worker.alerts.alert_outcomes`, `worker.alerts.dynamodb_alert_outcomes`): the alerts of the last
30 days, for live outcomes (confirmed on churn, expired after 30 days) and `churn-worker uplift
--ledger`. Claim items and records carry the alert's `arm`, `model_version` and `feature_hash`.

Churn and return. The `#churned` item holds the latest churn's event time and, once the customer
signs up again at or after it, that sign-up's time (and each of the customer's claim items holds a
copy, written in the same transaction). A churn and a sign-up at the same instant mean
the customer is back (`features.activity.has_churned`: ties go to the sign-up). Both writes only
ever move forward in event time, so a redelivered or late event cannot undo a newer one, and they
commute: a worker that saw the return may write it before another worker, still holding the older
state, writes the churn it already covers (the return carries its churn time, and an equal churn
time is not newer).

Capacity budgets (`worker.alerts.budgets`). A claim under a budget (`budget=BudgetSlot`) that
would open a new window also takes one unit of its budget's day, in the same transaction
(`BUDGET_LEFT`: the count is below `max_per_day`). With the day spent the claim is DEFERRED:
nothing opens, nothing is published, and a deferral record (once per customer, type and day) and
its counter are written instead; the caller marks the customer due at the next UTC day's start.
`claim_all` claims each budget's alerts one at a time in descending expected value. A claim that
finds a window open (SUPPRESSED, IN_FLIGHT, PENDING) never touches the budget, so a unit is taken
exactly once per alert, whatever the redeliveries, workers and take-overs.

The lifecycle (`worker.alerts.lifecycle`). A claim with `resolve_after` opens a window that only
a resolution closes (a cooldown window otherwise: the mode is the claim's, kept with the item):
- SUPPRESSED claims of an alert that went out do the rest: when this scoring crossed the rule's
  escalation threshold (`alert.escalating`) and the alert was never escalated, the claim item is
  turned into the escalation message (pending, a new token and lease, in the unsent index) and the
  claim comes back NEW holding it; otherwise, for a lifecycle alert whose `last_firing` is older
  than a quarter of `resolve_after`, `last_firing` is written (the heartbeat), moving its deadline.
- `mark_sent` of an open or escalated lifecycle message puts the item in the resolution part of the
  sparse index (deadline `last_firing + 1.25 resolve_after`); `resolutions_due(now, limit)` turns
  items past it into their resolution messages (NEW claims to publish and mark sent) and counts the
  resolution (and its time since opening) on the alert's day.
- `mark_sent` is conditional on the message (alert id and status), never only on the alert id.

The guarantee. Every alert of one (customer, type, window) has one `alert_id`, and one worker at a
time holds its claim. Redelivered events and concurrent workers alone never produce a second
alert. The only duplicate possible is the same `alert_id` published again after a worker crashed
(or stalled past the lease) between publishing and `mark_sent`. With a FIFO topic
(`MessageDeduplicationId = alert_id`) SNS drops that re-publish when it comes within its 5-minute
deduplication interval of the first (the lease is 2 minutes, so a prompt re-publish does); with a
standard topic, or a later re-publish, consumers dedupe by `alert_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from features.state import to_us
from plumbing.retry import gather_limited
from worker.alerts.budgets import BudgetsConfig, BudgetSlot, slot_for
from worker.alerts.config import AlertsConfig
from worker.alerts.rules import Alert, BudgetTag
from worker.ports import AlertLedger

__all__ = ["AlertLedger", "Batching", "Claim", "ClaimStatus"]

CHURN_MARKER = "#churned"  # sort key of the churned marker; alert types are upper-case names
DEFAULT_LEASE = timedelta(minutes=2)
MAX_CONCURRENT_CLAIMS = 32


class ClaimStatus(StrEnum):
    NEW = "new"
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SUPPRESSED = "suppressed"
    CHURNED = "churned"
    DEFERRED = "deferred"  # the alert's budget is spent for the day: recorded, not published


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    alert: Alert  # NEW: the alert stamped with its window; otherwise the stored one (CHURNED: the input)
    token: str | None = None  # NEW / PENDING: the claim token this holder took it with
    lease_until: datetime | None = None  # NEW / PENDING: when this holder's lease ends

    @property
    def should_publish(self) -> bool:
        return self.status in (ClaimStatus.NEW, ClaimStatus.PENDING)


class Batching:
    """claim_all / mark_all_sent on top of claim / mark_sent, concurrently."""

    async def claim(
        self,
        alert: Alert,
        now: datetime,
        cooldown: timedelta,
        *,
        resolve_after: timedelta | None = None,
        budget: BudgetSlot | None = None,
    ) -> Claim:
        raise NotImplementedError

    async def mark_sent(self, alert: Alert) -> bool:
        raise NotImplementedError

    async def renew(self, claim: Claim, now: datetime) -> Claim | None:
        """The claim with a fresh lease from `now`, or None if it is no longer ours (taken over,
        sent or replaced)."""
        raise NotImplementedError

    @property
    def lease_length(self) -> timedelta:
        raise NotImplementedError

    async def keep_live(self, claims: Sequence[Claim], now: datetime) -> list[Claim]:
        """The publishable claims still ours, each with at least half a lease ahead: claims nearer
        their lease's end are renewed first (requests only for those), lost ones left out."""
        now = utc(now)
        half = self.lease_length / 2

        async def live(claim: Claim) -> Claim | None:
            if claim.lease_until is not None and claim.lease_until - now >= half:
                return claim
            return await self.renew(claim, now)

        kept = await gather_limited([live(c) for c in claims if c.should_publish], MAX_CONCURRENT_CLAIMS)
        return [claim for claim in kept if claim is not None]

    async def claim_all(
        self,
        alerts: Sequence[Alert],
        now: datetime,
        config: AlertsConfig,
        budgets: BudgetsConfig | None = None,
    ) -> list[Claim]:
        """One claim per alert, in order. Alerts without a budget are claimed concurrently; the
        alerts of each budget one at a time, highest expected value first, so none is deferred
        while a lower-valued one of this batch takes a unit of the same day."""
        results: list[Claim | None] = [None] * len(alerts)
        loose: list[int] = []
        grouped: dict[str, list[tuple[int, Alert, BudgetSlot]]] = {}
        for i, alert in enumerate(alerts):
            slot = slot_for(budgets, alert.alert_type.value, alert.customer_tier, now)
            if slot is None:
                loose.append(i)
                continue
            tag = BudgetTag(
                name=slot.name,
                day=slot.day,
                max_per_day=slot.max_per_day,
                expected_value=alert.expected_value,
            )
            grouped.setdefault(slot.name, []).append((i, alert.model_copy(update={"budget": tag}), slot))

        async def one(i: int, alert: Alert, slot: BudgetSlot | None) -> None:
            tier = alert.customer_tier
            results[i] = await self.claim(
                alert,
                now,
                config.cooldown(alert.alert_type, tier),
                resolve_after=config.resolve_after(alert.alert_type, tier),
                budget=slot,
            )

        async def in_order(group: list[tuple[int, Alert, BudgetSlot]]) -> None:
            for i, alert, slot in sorted(group, key=lambda g: (-g[1].expected_value, g[1].customer_id, g[0])):
                await one(i, alert, slot)

        work = [one(i, alerts[i], None) for i in loose] + [in_order(group) for group in grouped.values()]
        await gather_limited(work, MAX_CONCURRENT_CLAIMS)
        return [claim for claim in results if claim is not None]

    async def mark_all_sent(self, alerts: Sequence[Alert]) -> list[bool]:
        return await gather_limited([self.mark_sent(a) for a in alerts], MAX_CONCURRENT_CLAIMS)


def under_budget(alert: Alert, slot: BudgetSlot | None) -> Alert:
    """The alert tagged with the budget it counts against (as published, or as deferred)."""
    if slot is None or (alert.budget is not None and alert.budget.day == slot.day):
        return alert
    tag = BudgetTag(
        name=slot.name, day=slot.day, max_per_day=slot.max_per_day, expected_value=alert.expected_value
    )
    return alert.model_copy(update={"budget": tag})


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment.astimezone(UTC)


def return_times(churned_at: datetime, signed_up_at: datetime) -> tuple[int, int]:
    """(churned_us, returned_us) of a return; a sign-up at the churn's instant is a return."""
    churned_us, returned_us = to_us(utc(churned_at)), to_us(utc(signed_up_at))
    if returned_us < churned_us:
        raise ValueError("a return is a sign-up at or after the churn")
    return churned_us, returned_us
