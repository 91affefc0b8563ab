"""Due customers: who must be scored without an event, and by when.

Churners go quiet, so every active customer (`features.activity.is_active`) is scored at least
once per re-scoring interval (`CHURN_RESCORE_INTERVAL_HOURS`) whether events come or not, and a
customer whose events were stored while the model endpoint was down is scored once it is back.
Both needs are one mechanism: each active customer carries a *due time*, and a sweeper
(`worker.rescore`) scores whoever is due.

Where the due time lives (DynamoDB, `features/STORE.md`): on the customer's `profile` item, as
`due_us` (epoch microseconds) with `due_shard` (a stable 2-digit shard of the customer id), which
put it in the sparse, keys-only global secondary index `due` (hash `due_shard`, range `due_us`). A
Query per shard for `due_us <= now` finds who is due: the cost follows the customers due, never
all customers, and nothing is ever scanned. The profile Put the store writes anyway for each batch
of new events sets the due time (`next_due_us`: no extra request), so an event-scored customer is
not re-scored before an interval has passed; a churned customer's profile is written without the
two attributes and so leaves the index.

The sweep, per customer (`DueIndex`):
- `claim_due`: a conditional update moves `due_us` from the value the index showed to
  now + lease (`due_owner` = a token of the claim). Only one worker wins a customer; the index is
  eventually consistent, so a stale entry just fails the condition. A worker that dies after the
  claim loses nobody: when the lease ends, the customer is due again.
- `complete`: scored (alerts claimed, published, marked sent): due again in one interval, or out
  of the index if the customer is no longer active. Conditional on still holding the claim.
- `release`: scoring failed (the endpoint is down): due again at the time it was due.
- `mark_due`: the event path stored a customer's events but could not score them: due now, so the
  records can be acknowledged at once (their effects are durable) and the sweeper scores the
  customer when the endpoint is back.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from features.activity import is_active, latest_event_us
from features.state import CustomerState, to_us
from plumbing.tables import IndexSpec, shard_names, shard_of

DUE_INDEX = "due"
DUE_SHARD = "due_shard"  # S: the index's hash key, a 2-digit shard of customer_id
DUE_AT = "due_us"  # N: the index's range key, epoch microseconds
DUE_OWNER = "due_owner"  # S: the token of the sweeper claim holding the customer, while it does
SCORED_AT = "scored_us"  # N: when the customer was last scored (the profile Put, or the completion)
# Index partitions. Part of the table's schema: a customer's shard is derived from its id, so this
# number must never change for a table (customers of a dropped shard would never be found again).
DUE_SHARDS = 16
DUE_INDEX_SPEC = IndexSpec(DUE_INDEX, DUE_SHARD, "S", DUE_AT, "N")


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def next_due_us(state: CustomerState, now_us: int, interval: timedelta, retention: timedelta) -> int | None:
    """When a customer whose events are being stored now is due next, or None (not active: leave
    the index). A due time already between half an interval and an interval away is kept, which
    spares the index a write per batch for a busy customer (the event path scores them anyway)."""
    latest = latest_event_us(state.profile)
    as_of = now_us if latest is None else max(now_us, latest)  # an event up to 5 minutes ahead counts
    if not is_active(state, as_of, retention):
        return None
    interval_us = _us(interval)
    current = state.profile.due_us
    if current is not None and now_us + interval_us // 2 <= current <= now_us + interval_us:
        return current
    return now_us + interval_us


@dataclass(frozen=True)
class DueClaim:
    """A due customer held by one sweeper until `lease_until_us`."""

    customer_id: str
    due_us: int  # when it was due (its lag is now - due_us)
    lease_until_us: int
    token: str


@dataclass(frozen=True)
class DueStats:
    due: int  # customers due now
    oldest_due_us: int | None  # the earliest due time among them


class DueIndex(Protocol):
    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> tuple[list[DueClaim], bool]:
        """Up to `limit` due customers, oldest first per shard, each claimed for `lease`; and
        whether more were due than claimed."""
        ...

    async def complete(self, claim: DueClaim, next_due_us: int | None, scored_us: int | None = None) -> bool:
        """Scored: due again at `next_due_us`, or out of the index (None). False if the claim was
        lost meanwhile (its lease ran out and someone else holds the customer, or events came).
        `scored_us`: when it was scored, noted on the profile in the same write."""
        ...

    async def release(self, claim: DueClaim) -> None:
        """Not scored: due again when it was."""
        ...

    async def mark_due(self, customer_ids: Iterable[str], now: datetime) -> None:
        """These customers' events are stored but they could not be scored: due now."""
        ...

    async def stats(self, now: datetime) -> DueStats: ...


@dataclass
class MemoryDueIndex:
    """The in-process twin of the `due` index, with the same request pattern counted as DynamoDB
    would bill it (`requests`): one Query per shard visited (a page of at most `page_items` keys),
    one UpdateItem per claim, completion, release or mark. Each shard is a heap of (due_us,
    customer) with stale entries skipped, so a claim costs O(log n): `make bench` sweeps a million
    customers' day with it."""

    page_items: int = 1000
    entries: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # customer -> (due_us, owner)
    requests: dict[str, int] = field(default_factory=lambda: {"Query": 0, "UpdateItem": 0})
    _heaps: dict[str, list[tuple[int, str]]] = field(default_factory=dict, repr=False)

    def _set(self, customer_id: str, due_us: int, owner: str | None) -> None:
        self.entries[customer_id] = (due_us, owner)
        heapq.heappush(self._heaps.setdefault(shard_of(customer_id, DUE_SHARDS), []), (due_us, customer_id))

    def _live(self, heap: list[tuple[int, str]]) -> tuple[int, str] | None:
        """The heap's earliest entry that is still current (stale ones are dropped on the way)."""
        while heap:
            due_us, cid = heap[0]
            entry = self.entries.get(cid)
            if entry is not None and entry[0] == due_us:
                return heap[0]
            heapq.heappop(heap)
        return None

    def put(self, customer_id: str, due_us: int | None) -> None:
        """What the feature store's profile Put does to the index (None: out of it)."""
        if due_us is None:
            self.entries.pop(customer_id, None)
        else:
            self._set(customer_id, due_us, None)

    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> tuple[list[DueClaim], bool]:
        """As the DynamoDB adapter: a Query on each shard in turn (empty ones too) until `limit`."""
        now_us = to_us(now)
        lease_until = now_us + _us(lease)
        claims: list[DueClaim] = []
        more = False
        for shard in shard_names(DUE_SHARDS):
            if len(claims) >= limit:
                more = True
                break
            self.requests["Query"] += 1
            heap = self._heaps.get(shard, [])
            page = min(limit - len(claims), self.page_items)
            while page and (top := self._live(heap)) is not None and top[0] <= now_us:
                due_us, cid = heapq.heappop(heap)
                self.requests["UpdateItem"] += 1
                token = uuid.uuid4().hex
                self._set(cid, lease_until, token)
                claims.append(DueClaim(cid, due_us, lease_until, token))
                page -= 1
            top = self._live(heap)
            more = more or (top is not None and top[0] <= now_us)
        return claims, more

    def _holds(self, claim: DueClaim) -> bool:
        return self.entries.get(claim.customer_id) == (claim.lease_until_us, claim.token)

    async def complete(self, claim: DueClaim, next_due_us: int | None, scored_us: int | None = None) -> bool:
        self.requests["UpdateItem"] += 1
        if not self._holds(claim):
            return False
        self.put(claim.customer_id, next_due_us)
        return True

    async def release(self, claim: DueClaim) -> None:
        self.requests["UpdateItem"] += 1
        if self._holds(claim):
            self._set(claim.customer_id, claim.due_us, None)

    async def mark_due(self, customer_ids: Iterable[str], now: datetime) -> None:
        now_us = to_us(now)
        for cid in customer_ids:
            self.requests["UpdateItem"] += 1
            entry = self.entries.get(cid)
            if entry is not None and entry[0] > now_us:  # IN_INDEX_NOT_YET_DUE
                self._set(cid, now_us, None)

    async def stats(self, now: datetime) -> DueStats:
        """Like DynamoDB's counting Query, the cost follows the customers due: a heap is walked
        only below `now`."""
        now_us = to_us(now)
        counted: set[str] = set()
        oldest = None
        self.requests["Query"] += DUE_SHARDS  # one (or two) per shard, as the adapter
        for heap in self._heaps.values():
            stack = [0]
            while stack:
                i = stack.pop()
                if i >= len(heap) or heap[i][0] > now_us:
                    continue
                due_us, cid = heap[i]
                entry = self.entries.get(cid)
                if entry is not None and entry[0] == due_us and cid not in counted:
                    counted.add(cid)
                    oldest = due_us if oldest is None else min(oldest, due_us)
                stack += (2 * i + 1, 2 * i + 2)
        return DueStats(len(counted), oldest)


def lag_seconds(stats: DueStats, now: datetime) -> float:
    """How long the oldest due customer has waited (0 when nobody is due)."""
    if stats.oldest_due_us is None:
        return 0.0
    return max(0.0, (to_us(now.astimezone(UTC)) - stats.oldest_due_us) / 1_000_000)
