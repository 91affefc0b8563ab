"""The alert ledger's contract: which alert of which type each customer was last sent, so cooldowns
hold and nothing is sent twice across redeliveries, crashes and concurrent workers. The port and
its shared rules live here; `ledger.py` has the in-memory twin, `dynamodb_ledger.py` the adapter.

An outbox-style claim per (customer, alert type), in table `<prefix>alerts` (PK `customer_id`, SK
`alert_type`; a `#churned` item marks a churned customer):

1. `claim(alert, now, cooldown)` writes, in one transaction conditional on the customer not having
   churned, a `pending` record with the window start (`now`), the alert id, the alert body and a
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

Alert records. Each NEW claim also writes, in its own transaction, an alert record that outlives
the claim item (`worker.alerts.alert_outcomes`, `worker.alerts.dynamodb_alert_outcomes`): the alerts of the last
30 days, for live outcomes (confirmed on churn, expired after 30 days) and `churn-worker uplift
--ledger`. Claim items and records carry the alert's `arm`, `model_version` and `feature_hash`.

Churn and return. The `#churned` item holds the latest churn's event time and, once the customer
signs up again at or after it, that sign-up's time. A churn and a sign-up at the same instant mean
the customer is back (`features.activity.has_churned`: ties go to the sign-up). Both writes only
ever move forward in event time, so a redelivered or late event cannot undo a newer one, and they
commute: a worker that saw the return may write it before another worker, still holding the older
state, writes the churn it already covers (the return carries its churn time, and an equal churn
time is not newer).

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
from worker.alerts.config import AlertsConfig
from worker.alerts.rules import Alert
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

    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim:
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

    async def claim_all(self, alerts: Sequence[Alert], now: datetime, config: AlertsConfig) -> list[Claim]:
        claims = [self.claim(a, now, config.cooldown(a.alert_type)) for a in alerts]
        return await gather_limited(claims, MAX_CONCURRENT_CLAIMS)

    async def mark_all_sent(self, alerts: Sequence[Alert]) -> list[bool]:
        return await gather_limited([self.mark_sent(a) for a in alerts], MAX_CONCURRENT_CLAIMS)


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
