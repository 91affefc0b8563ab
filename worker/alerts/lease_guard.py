"""The claims' leases held for as long as their alerts are being published, and no longer.

A claim's lease (default 2 minutes) says how long its alert is this worker's to send; when it
ends unsent, the sweeper of any worker takes the claim over and publishes the same `alert_id`.
`keep_live` leaves at least half a lease when a publish starts, but a publish has no upper bound
of its own: one hung `PublishBatch` waits botocore's read timeout (30 s) on each of its attempts,
then the publisher's own retries. Without a guard a slow SNS made the sweeper publish a second
copy of an alert no worker had dropped.

`LeaseGuard.publish(send)`:
- renews every held claim each third of a lease while `send` runs (conditional on the claim's
  token, as `renew` always is), so a slow publish keeps its claims and the sweep leaves them alone;
- bounds `send` by the leases it holds: it is cancelled a margin before the earliest lease ends
  unless a renewal moved that end (renewals failing for most of a lease: the ledger unreachable).
  The claims are then left to expire and the sweep re-publishes them, rather than two workers
  publishing one alert at once;
- `holds(alert)` tells the publisher, before any retry, whether the alert is still ours: a claim
  a renewal found taken over is never sent again by this worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import structlog

from worker.alerts.claims import Claim
from worker.alerts.rules import Alert
from worker.exceptions import FatalAwsError
from worker.ports import AlertLedger

T = TypeVar("T")
log = structlog.get_logger(__name__)

RENEWALS_PER_LEASE = 3
MARGIN_SHARE = 0.1  # of a lease: the publish stops this long before its earliest lease would end


class LeaseEndingError(Exception):
    """The publish was stopped before the leases it held ran out (they could not be renewed)."""


class LeaseGuard:
    def __init__(
        self,
        ledger: AlertLedger,
        claims: Sequence[Claim],
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._ledger = ledger
        self._held = {claim.alert.message_id: claim for claim in claims}
        self._clock = clock
        self._sleep = sleep
        self._lease = ledger.lease_length
        self.lost: list[Claim] = []  # taken over by another worker while we published
        self.renewals = 0

    def holds(self, alert: Alert) -> bool:
        return alert.message_id in self._held

    def _seconds_left(self) -> float:
        """Until the publish must stop: the earliest held lease's end, less the margin."""
        ends = [claim.lease_until for claim in self._held.values() if claim.lease_until is not None]
        if not ends:
            return self._lease.total_seconds() * (1 - MARGIN_SHARE)
        left = min(ends) - self._clock() - self._lease * MARGIN_SHARE
        return max(0.0, left.total_seconds())

    async def publish(self, send: Awaitable[T]) -> T:
        """`await send`, with the held claims renewed meanwhile and cancelled before they end."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + self._seconds_left()) as scope:
                renewer = asyncio.create_task(self._keep_renewing(scope))
                try:
                    return await send
                finally:
                    renewer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewer
        except TimeoutError:
            raise LeaseEndingError(
                f"publishing stopped: the leases of {len(self._held)} claim(s) could not be renewed"
            ) from None

    async def _keep_renewing(self, scope: asyncio.Timeout) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._sleep(self._lease.total_seconds() / RENEWALS_PER_LEASE)
            try:
                await self._renew_all()
            except FatalAwsError:
                raise
            except Exception as exc:  # the ledger unreachable: the deadline stays, the publish may end
                log.warning("could not renew the leases of claims being published", error=str(exc))
                continue
            scope.reschedule(loop.time() + self._seconds_left())

    async def _renew_all(self) -> None:
        now = self._clock()
        claims = list(self._held.values())
        renewed = await asyncio.gather(*(self._ledger.renew(claim, now) for claim in claims))
        self.renewals += 1
        for claim, fresh in zip(claims, renewed, strict=True):
            if fresh is None:  # another worker's now: never sent again by us
                del self._held[claim.alert.message_id]
                self.lost.append(claim)
                log.warning(
                    "claim taken over while its alert was being published",
                    alert_id=claim.alert.alert_id,
                    type=claim.alert.alert_type.value,
                )
            else:
                self._held[claim.alert.message_id] = fresh
