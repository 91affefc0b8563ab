"""DynamoDB adapter of the feature store (aiobotocore). The item layout and the rules of a write are
`features/layout.py`'s; the layout, its guarantees and its cost are described in `features/STORE.md`.

A batch's customers are read and written together, not one by one:

1. Read. One strongly consistent BatchGetItem per 100 customers for their `profile` items, then one
   per 100 segments those profiles list that this worker does not hold at that version already
   (`SegmentCache`: a busy customer's older pages are read once, not at every batch); a Query only
   for a customer that still holds format-1 pages. A segment that is not the version its profile
   lists means another writer committed between our two reads: that customer is read again, so a
   scoring never sees a torn state.
2. Fold. The events are folded in memory with the memory store's code (`features/state.py`): an
   event whose digest is already in a page of its day is a duplicate.
3. Write. Each customer with new events gets a `Write`: its profile, and the segments that
   changed, each a Put conditional on what was read (the profile on its version, a segment on its
   own). A write of one item (the profile alone: most writes, between the rolls that move pages
   to a segment) is a conditional single-item write: atomic by itself, and half the write units
   of the same Put in a transaction; those go as PartiQL statements, 25 to a BatchExecuteStatement
   (`_statements`; a PutItem where no statement stands for the Put). Only writes of several items,
   which must land together (a profile listing segment versions that were not written would be a
   torn state for ever), go into transactions, packed into as few TransactWriteItems as fit (100
   items, 4 MB). A failed single-item condition is a lost race like a cancelled transaction's. A
   cancelled transaction says item by item why (`CancellationReasons`): a customer whose condition
   failed (another writer was first) or that collided is read again and retried in a transaction
   of its own, so a contended customer cannot hold the others back; the rest retry together. A
   throttled or unanswered transaction is retried after a back-off from a fresh read (an
   unanswered one may have been applied: the read then finds its events counted).

One customer's write is bounded (`MAX_ITEMS_PER_WRITE`, `MAX_BYTES_PER_WRITE`) whatever its batch
holds: when its events would need more, only the first part of them is folded and written, and the
rest follows in the next round, each part its own read, fold and transaction.

One worker's batches in flight at once take turns on the customers they share (`CustomerTurns`),
so they never race each other; races are left to two workers, and resolved as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from features.due import DUE_INDEX_SPEC, next_due_us
from features.events import Event
from features.exceptions import FeatureStoreError, StoreConflictError
from features.layout import (
    LEGACY_PREFIX,
    PROFILE_BUCKET,
    SEGMENT_VERSION,
    TTL_ATTRIBUTE,
    Segment,
    Stored,
    Write,
    attach_legacy,
    attach_segment,
    page_expiry,
    plan_write,
    profile_key,
    read_profile,
    segment_key,
    single_write_statement,
    state_from_items,
)
from features.state import CustomerState, before_events, to_us
from features.store import (
    DEFAULT_RETENTION,
    ApplyResult,
    apply_to_state,
    event_days,
    group_by_customer,
    oldest_kept_day,
)
from plumbing.retry import (
    Failure,
    backoff,
    backoff_delay,
    cancellation_reasons,
    classify,
    classify_cancellation,
    error_code,
    error_text,
    fatal_error,
    gather_limited,
    with_retries,
)
from plumbing.tables import ensure_table

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import QueryInputTypeDef

T = TypeVar("T")

__all__ = [
    "PROFILE_BUCKET",
    "TTL_ATTRIBUTE",
    "DynamoDBFeatureStore",
    "create_feature_table",
    "ensure_table",
    "state_from_items",
    "table_name",
]

MAX_ATTEMPTS = 8  # per customer: reads and writes that did not go through
MAX_KEYS_PER_READ = 100  # BatchGetItem's limit
MAX_TRANSACTION_ITEMS = 100  # TransactWriteItems' limits: 100 items, 4 MB
MAX_TRANSACTION_BYTES = 3_500_000
MAX_CONCURRENT_REQUESTS = 8
MAX_CONCURRENT_PUTS = 32  # single-item writes of one batch in flight at once
MAX_STATEMENTS = 25  # BatchExecuteStatement's limit
MAX_STATEMENT_BYTES = 1_000_000  # the items of one BatchExecuteStatement, well under its request limit
MAX_CONCURRENT_QUERIES = 16
SEGMENT_CACHE_ITEMS = 20_000  # ~4 KB each: up to ~80 MB, the segments of a few thousand busy customers
# A customer's first read of a batch is eventually consistent (half the read units) unless this process
# wrote it less than this long ago: DynamoDB's replicas agree within about a second, and our own
# last write is what a stale read would most likely miss. A stale read costs no event: every write is
# conditional on the version read, so it fails, and the retry reads strongly consistent.
CONSISTENT_AFTER_WRITE_S = 3.0


def table_name(prefix: str) -> str:
    return f"{prefix}features"


class Outcome(Enum):
    """What became of one customer's write in a transaction."""

    DONE = "done"
    LOST_RACE = "lost_race"  # its condition failed: another writer changed what we read
    CONFLICT = "conflict"  # collided with another transaction on one of its items
    INNOCENT = "innocent"  # fine, but another customer's item cancelled the transaction
    THROTTLED = "throttled"
    UNKNOWN = "unknown"  # no answer (or no reasons): it may have been applied; read again
    INVALID = "invalid"  # refused as malformed

    @property
    def retries_alone(self) -> bool:
        return self not in (Outcome.DONE, Outcome.INNOCENT)


class CustomerTurns:
    """This worker's concurrent batches take turns on a customer they share: one applies, the other
    waits, then reads what the first wrote. Without it they race like two workers would, and a lost
    race cancels a whole group transaction (a re-read and a transaction per loser). Locks are taken
    in customer order, so two batches never wait for each other; races remain only between workers."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: Counter[str] = Counter()  # batches holding or waiting for each customer's lock

    @contextlib.asynccontextmanager
    async def hold(self, customer_ids: Iterable[str]) -> AsyncIterator[None]:
        ids = sorted(customer_ids)
        for cid in ids:
            self._locks.setdefault(cid, asyncio.Lock())
            self._holders[cid] += 1
        taken: list[str] = []
        try:
            for cid in ids:
                await self._locks[cid].acquire()
                taken.append(cid)
            yield
        finally:
            for cid in taken:
                self._locks[cid].release()
            for cid in ids:
                self._holders[cid] -= 1
                if not self._holders[cid]:
                    del self._holders[cid], self._locks[cid]


class SegmentCache:
    """Segment items as this worker last read or wrote them, by (customer, segment number), each
    with its version. A read takes a segment from here when its profile (always read fresh) lists
    the version cached: a segment number is never reused and every write of a segment bumps its
    version on condition of the one read, so a version names one content. Only what DynamoDB
    returned or acknowledged goes in. Bounded: the least recently used go first."""

    def __init__(self, items: int) -> None:
        self._items = items
        self._cached: OrderedDict[tuple[str, str], tuple[int, dict[str, Any]]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, customer_id: str, segment: Segment) -> dict[str, Any] | None:
        key = (customer_id, segment.bucket)
        cached = self._cached.get(key)
        if cached is None or cached[0] != segment.version:
            self.misses += 1
            return None
        self._cached.move_to_end(key)
        self.hits += 1
        return cached[1]

    def put(self, item: dict[str, Any]) -> None:
        if self._items <= 0:
            return
        key = (item["customer_id"]["S"], item["bucket"]["S"])
        self._cached[key] = (int(item[SEGMENT_VERSION]["N"]), item)
        self._cached.move_to_end(key)
        while len(self._cached) > self._items:
            self._cached.popitem(last=False)


@dataclass
class _Read:
    """What one read of a customer returned, kept to fold again from scratch (`_fold`)."""

    profile: dict[str, Any] | None
    segments: dict[str, dict[str, Any]]
    legacy: list[dict[str, Any]] | None


class DynamoDBFeatureStore:
    """Feature store on one DynamoDB table; `client` is an open aiobotocore DynamoDB client.

    `rescore_interval`: every write puts an active customer in the `due` index to be scored
    without an event within this long (features/due.py); None leaves the index as it is.
    `query_page_items` limits the items per result page of the Query that reads format-1 pages
    (tests use it to interleave other writers; DynamoDB's own limit is 1 MB).
    `segment_cache_items`: segments kept in memory (`SegmentCache`, ~4 KB each; 0: none).
    `single_item_puts`: one-item writes outside transactions (False: in the transactions too, as
    before; tests of the group commit use it). `batch_statements`: those writes as PartiQL
    statements, 25 to a BatchExecuteStatement (False: one conditional PutItem each).
    `eventual_reads`: a batch's first read of a customer this process has not written in the last
    CONSISTENT_AFTER_WRITE_S is eventually consistent (False: every read strongly consistent)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        retention: timedelta = DEFAULT_RETENTION,
        *,
        rescore_interval: timedelta | None = None,
        query_page_items: int | None = None,
        segment_cache_items: int = SEGMENT_CACHE_ITEMS,
        single_item_puts: bool = True,
        batch_statements: bool = True,
        eventual_reads: bool = True,
    ) -> None:
        self._client = client
        self._table = table
        self._retention = retention
        self._rescore_interval = rescore_interval
        self._query_page_items = query_page_items
        self._single_item_puts = single_item_puts
        self._batch_statements = batch_statements
        self._eventual_reads = eventual_reads
        self._written_at: OrderedDict[str, float] = OrderedDict()  # customer -> monotonic time of our write
        self.segments = SegmentCache(segment_cache_items)
        self._turns = CustomerTurns()
        # for cost accounting and tests: requests by operation, retries included
        self.requests: dict[str, int] = {
            "BatchGetItem": 0,
            "Query": 0,
            "TransactWriteItems": 0,
            "PutItem": 0,
            "BatchExecuteStatement": 0,
        }

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        ids = list(dict.fromkeys(customer_ids))
        read = await self._read(ids, None, consistent=set(ids))
        return {cid: read[cid][0].state for cid in ids}

    async def apply(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        pending = group_by_customer(events)
        async with self._turns.hold(pending):
            return await self._apply(pending, now)

    async def _apply(self, pending: dict[str, list[Event]], now: datetime) -> ApplyResult:
        oldest = oldest_kept_day(now, self._retention)
        now_us = to_us(now)
        total = ApplyResult()
        attempts: Counter[str] = Counter()
        lost_races: Counter[str] = Counter()
        alone: set[str] = set()  # customers whose last write failed: next time in a transaction of their own
        while pending:
            # Strongly consistent: a customer this process wrote a moment ago (a stale copy would
            # fail its write), and every read after a failed write or a first part already written.
            consistent = {cid for cid in pending if attempts[cid] or self._wrote_lately(cid)}
            read = await self._read(list(pending), oldest, consistent=consistent)
            folded: list[tuple[Write, ApplyResult, list[Event]]] = []
            for cid, customer_events in list(pending.items()):
                part, write, rest = self._fold(cid, read[cid], customer_events, oldest, now_us)
                if write is None:  # the folded part was all duplicates: nothing to write for it
                    total.merge(part)
                    # A halved batch whose first part was already stored still has its rest to
                    # fold: dropping it here acknowledged events that were never written.
                    if rest:
                        pending[cid] = rest
                    else:
                        del pending[cid]
                else:
                    folded.append((write, part, rest))
            outcomes = await self._commit([write for write, _, _ in folded], alone)
            delay = 0.0
            for (write, part, rest), outcome in zip(folded, outcomes, strict=True):
                cid = write.customer_id
                if outcome is Outcome.DONE:
                    for action in write.actions:
                        if action["Put"]["Item"]["bucket"]["S"] != PROFILE_BUCKET:
                            self.segments.put(action["Put"]["Item"])
                    state = part.states[cid]
                    state.profile.version, state.profile.due_us = write.version, write.due_us
                    state.profile.scored_us = now_us
                    total.merge(part)
                    self._note_written(cid)
                    alone.discard(cid)
                    attempts[cid] = 0  # the next part of its events starts afresh
                    if rest:
                        pending[cid] = rest
                    else:
                        del pending[cid]
                    continue
                attempts[cid] += 1
                if outcome.retries_alone:
                    alone.add(cid)
                if outcome is Outcome.LOST_RACE:
                    lost_races[cid] += 1
                if outcome in (Outcome.LOST_RACE, Outcome.CONFLICT):
                    delay = max(delay, backoff_delay(attempts[cid] - 1, 0.02, 1.0))
                elif outcome in (Outcome.THROTTLED, Outcome.UNKNOWN):
                    # Throttled, a 5xx or no answer: back off longer. The write may have gone through
                    # (a response lost after the commit): the re-read then finds its events counted.
                    delay = max(delay, backoff_delay(attempts[cid] - 1, 0.1, 5.0))
                if attempts[cid] >= MAX_ATTEMPTS:
                    if lost_races[cid] * 2 >= MAX_ATTEMPTS:
                        raise StoreConflictError(
                            f"customer {cid}: {lost_races[cid]} conflicting writes on "
                            f"{self._table}; will retry later"
                        )
                    raise FeatureStoreError(
                        f"customer {cid}: no write after {MAX_ATTEMPTS} attempts on {self._table}"
                    )
            if delay:
                await asyncio.sleep(delay)
        return total

    def _note_written(self, customer_id: str) -> None:
        now = time.monotonic()
        self._written_at[customer_id] = now
        self._written_at.move_to_end(customer_id)
        while self._written_at:  # forget what is older than the window (oldest first)
            oldest, at = next(iter(self._written_at.items()))
            if now - at < CONSISTENT_AFTER_WRITE_S:
                break
            del self._written_at[oldest]

    def _wrote_lately(self, customer_id: str) -> bool:
        if not self._eventual_reads:
            return True
        at = self._written_at.get(customer_id)
        return at is not None and time.monotonic() - at < CONSISTENT_AFTER_WRITE_S

    def _fold(
        self, customer_id: str, read: tuple[Stored, _Read], events: list[Event], oldest_day: int, now_us: int
    ) -> tuple[ApplyResult, Write | None, list[Event]]:
        """Fold `events` and plan their write; when that write would be too big, fold only the
        first half of them (again from what was read), and so on. Returns what was folded, the
        write (None: all duplicates) and the events left for the next round."""
        stored, raw = read
        count = len(events)
        previous = before_events(stored.state, event_days(events))
        while True:
            part = ApplyResult()
            part.previous[customer_id] = previous
            touched = apply_to_state(stored.state, events[:count], part)
            part.states[customer_id] = stored.state
            if not touched:
                return part, None, events[count:]
            due_us = stored.state.profile.due_us
            if self._rescore_interval is not None:
                due_us = next_due_us(stored.state, now_us, self._rescore_interval, self._retention)
            write = plan_write(
                stored, touched, self._table, self._retention, oldest_day, due_us, scored_us=now_us
            )
            if write is not None:
                return part, write, events[count:]
            if count == 1:
                raise FeatureStoreError(f"customer {customer_id}: one event's write exceeds a transaction")
            count //= 2
            stored = self._decode(customer_id, raw, oldest_day)

    def _decode(self, customer_id: str, raw: _Read, oldest_day: int | None) -> Stored:
        """The customer again from the items read (an untouched copy to fold into)."""
        stored = read_profile(customer_id, raw.profile)
        for segment in stored.segments_to_read(oldest_day):
            attach_segment(stored, raw.segments.get(segment.bucket), segment)
        if raw.legacy is not None:
            attach_legacy(stored, raw.legacy)
        return stored

    # -- reading ----------------------------------------------------------------------------------

    async def _read(
        self, customer_ids: list[str], oldest_day: int | None, consistent: set[str]
    ) -> dict[str, tuple[Stored, _Read]]:
        """Each customer's state as of one instant: profiles first, then what they list. Segments
        older than `oldest_day` (None: none) are not read. The customers in `consistent` are read
        strongly consistent, the others eventually consistent; a view found torn (a segment not of
        the version its profile lists: another writer's commit, or a replica behind) is read again
        strongly consistent."""
        found: dict[str, tuple[Stored, _Read]] = {}
        todo = customer_ids
        for attempt in range(MAX_ATTEMPTS):
            profiles = await self._batch_get([profile_key(cid) for cid in todo], consistent)
            stored = {cid: read_profile(cid, profiles.get((cid, PROFILE_BUCKET))) for cid in todo}
            to_read = {cid: st.segments_to_read(oldest_day) for cid, st in stored.items()}
            segments: dict[tuple[str, str], dict[str, Any]] = {}
            wanted = []
            for cid in todo:
                for segment in to_read[cid]:
                    cached = self.segments.get(cid, segment)
                    if cached is not None:
                        segments[(cid, segment.bucket)] = cached
                    else:
                        wanted.append(segment_key(cid, segment.number))
            if wanted:
                fetched = await self._batch_get(wanted, consistent)
                for item in fetched.values():
                    self.segments.put(item)
                segments.update(fetched)
            with_legacy = [cid for cid, st in stored.items() if st.needs_legacy_read(oldest_day)]
            legacy = dict(
                zip(
                    with_legacy,
                    await gather_limited(
                        [self._query_legacy(cid) for cid in with_legacy], MAX_CONCURRENT_QUERIES
                    ),
                    strict=True,
                )
            )
            torn = []
            for cid, st in stored.items():
                mine = {
                    s.bucket: segments[(cid, s.bucket)] for s in to_read[cid] if (cid, s.bucket) in segments
                }
                whole = all(self._attach(st, mine.get(s.bucket), s) for s in to_read[cid])
                if whole and cid in legacy:
                    whole = attach_legacy(st, legacy[cid])
                if whole:
                    found[cid] = (st, _Read(profiles.get((cid, PROFILE_BUCKET)), mine, legacy.get(cid)))
                else:
                    torn.append(cid)
            if not torn:
                return found
            todo = torn  # another writer committed between our reads: read those customers again
            consistent = set(torn)
            await backoff(attempt, 0.01, 0.5)
        raise FeatureStoreError(
            f"customers {', '.join(todo[:5])}: changing under every read of {self._table}"
        )

    def _attach(self, stored: Stored, item: dict[str, Any] | None, segment: Segment) -> bool:
        """`attach_segment`, except that a missing segment past its expiry is no torn read: TTL
        deletes it (lazily, by the wall clock) while the profile of a customer quiet since still
        lists it, and its pages are all past retention. Reads that filter by the retention of
        their batch never ask for one; `get` (the sweeper, tools) asks for every listed segment."""
        if item is None and page_expiry(segment.newest_day, self._retention) <= time.time():
            del stored.segments[segment.number]
            return True
        return attach_segment(stored, item, segment)

    async def _batch_get(
        self, keys: list[dict[str, Any]], consistent: set[str]
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The items of `keys`; those of customers in `consistent` by strongly consistent reads
        (BatchGetItem sets that per table, so the two kinds go in requests of their own)."""
        strong = [key for key in keys if key["customer_id"]["S"] in consistent]
        eventual = [key for key in keys if key["customer_id"]["S"] not in consistent]
        chunks = [
            (kind[i : i + MAX_KEYS_PER_READ], flag)
            for kind, flag in ((strong, True), (eventual, False))
            for i in range(0, len(kind), MAX_KEYS_PER_READ)
        ]
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for items in await gather_limited(
            [self._batch_get_chunk(chunk, flag) for chunk, flag in chunks], MAX_CONCURRENT_REQUESTS
        ):
            for item in items:
                found[(item["customer_id"]["S"], item["bucket"]["S"])] = item
        return found

    async def _batch_get_chunk(self, keys: list[dict[str, Any]], consistent: bool) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for attempt in range(MAX_ATTEMPTS):
            response = await self._call(
                "reading",
                partial(
                    self._client.batch_get_item,
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": consistent}},
                ),
                "BatchGetItem",
            )
            items += response.get("Responses", {}).get(self._table, [])
            unprocessed = response.get("UnprocessedKeys", {}).get(self._table)
            keys = list(unprocessed["Keys"]) if unprocessed else []
            if not keys:
                return items
            await backoff(attempt, 0.1, 5.0)  # unprocessed keys: the table is throttling us
        raise FeatureStoreError(
            f"reading table {self._table}: {len(keys)} keys still unprocessed (throttled)"
        )

    async def _query_legacy(self, customer_id: str) -> list[dict[str, Any]]:
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "customer_id = :c AND begins_with(#bucket, :pages)",
            "ExpressionAttributeNames": {"#bucket": "bucket"},
            "ExpressionAttributeValues": {":c": {"S": customer_id}, ":pages": {"S": LEGACY_PREFIX}},
            "ConsistentRead": True,
        }
        if self._query_page_items is not None:
            kwargs["Limit"] = self._query_page_items
        items: list[dict[str, Any]] = []
        while True:
            response = await self._call("reading", lambda: self._client.query(**kwargs), "Query")
            items += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def _call(self, doing: str, call: Callable[[], Awaitable[T]], operation: str) -> T:
        def counted() -> Awaitable[T]:
            self.requests[operation] += 1
            return call()

        try:
            return await with_retries(
                counted, resource=f"feature table {self._table}", attempts=MAX_ATTEMPTS, base=0.05, cap=2.0
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise FeatureStoreError(f"{doing} table {self._table}: {error_text(exc)}") from exc

    # -- writing ----------------------------------------------------------------------------------

    async def _commit(self, writes: list[Write], alone: set[str]) -> list[Outcome]:
        """Commit the writes: each of one item as a conditional PutItem, the others in as few
        transactions as fit; the outcome of each, in order."""
        groups: list[list[Write]] = []
        current: list[Write] = []
        singles = [write for write in writes if len(write.actions) == 1 and self._single_item_puts]
        items = size = 0
        for write in writes:
            if len(write.actions) == 1 and self._single_item_puts:
                continue
            if write.customer_id in alone:
                groups.append([write])
                continue
            if current and (
                items + len(write.actions) > MAX_TRANSACTION_ITEMS
                or size + write.bytes > MAX_TRANSACTION_BYTES
            ):
                groups.append(current)
                current, items, size = [], 0, 0
            current.append(write)
            items, size = items + len(write.actions), size + write.bytes
        if current:
            groups.append(current)
        outcomes: dict[str, Outcome] = {}
        statements: list[tuple[Write, tuple[str, list[dict[str, Any]]]]] = []
        puts: list[Write] = []
        for write in singles:
            statement = single_write_statement(write.actions[0]["Put"]) if self._batch_statements else None
            if statement is None:
                puts.append(write)
            else:
                statements.append((write, statement))
        batches: list[list[tuple[Write, tuple[str, list[dict[str, Any]]]]]] = []
        size = 0
        for entry in statements:
            if (
                not batches
                or len(batches[-1]) == MAX_STATEMENTS
                or size + entry[0].bytes > MAX_STATEMENT_BYTES
            ):
                batches.append([])
                size = 0
            batches[-1].append(entry)
            size += entry[0].bytes
        requests = [
            *(self._transact(group) for group in groups),
            *(self._statements(batch) for batch in batches),
        ]
        for result in await gather_limited(requests, MAX_CONCURRENT_REQUESTS):
            outcomes.update(result)
        outcomes.update(await self._put_each(puts))
        return [outcomes[write.customer_id] for write in writes]

    async def _statements(
        self, batch: list[tuple[Write, tuple[str, list[dict[str, Any]]]]]
    ) -> dict[str, Outcome]:
        """Up to 25 customers' one-item writes as PartiQL statements in one BatchExecuteStatement:
        the units of single conditional writes, one request. Each statement succeeds or fails on its
        own, answered in order, and each answer means what the same PutItem's would: a failed
        condition (or DuplicateItem: the new customer exists) is a lost race. A statement DynamoDB
        refuses as invalid, or a batch refused whole as invalid, is written again as a PutItem,
        which names the customer if it is refused too."""
        self.requests["BatchExecuteStatement"] += 1
        try:
            response = await self._client.batch_execute_statement(
                Statements=[{"Statement": text, "Parameters": params} for _, (text, params) in batch]
            )
        except ClientError as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, f"feature table {self._table}") from exc
            if kind is Failure.INVALID:
                return await self._put_each([write for write, _ in batch])
            failed = Outcome.THROTTLED if kind is Failure.THROTTLED else Outcome.UNKNOWN
            return {write.customer_id: failed for write, _ in batch}
        except (BotoCoreError, OSError, TimeoutError):
            return {write.customer_id: Outcome.UNKNOWN for write, _ in batch}
        answers = list(response.get("Responses", []))
        if len(answers) != len(batch):  # cannot tell which went through: read again
            return {write.customer_id: Outcome.UNKNOWN for write, _ in batch}
        outcomes: dict[str, Outcome] = {}
        refused: list[Write] = []
        for (write, _), answer in zip(batch, answers, strict=True):
            error = answer.get("Error")
            if not error:
                outcomes[write.customer_id] = Outcome.DONE
                continue
            kind = classify_cancellation([str(error.get("Code", ""))])
            if kind is Failure.INVALID:
                refused.append(write)
            else:
                outcomes[write.customer_id] = _OUTCOME_OF_FAILURE[kind]
        if refused:
            outcomes.update(await self._put_each(refused))
        return outcomes

    async def _put_each(self, writes: list[Write]) -> dict[str, Outcome]:
        answers = await gather_limited([self._put(write) for write in writes], MAX_CONCURRENT_PUTS)
        return {write.customer_id: outcome for write, outcome in zip(writes, answers, strict=True)}

    async def _put(self, write: Write) -> Outcome:
        """A one-item write as a conditional PutItem (the same Put, condition and all, as it would
        be in a transaction, at half the write units). The outcomes are a transaction's."""
        put: Any = dict(write.actions[0]["Put"])
        put.pop("ReturnValuesOnConditionCheckFailure", None)
        self.requests["PutItem"] += 1
        try:
            await self._client.put_item(**put)
        except ClientError as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, f"feature table {self._table}") from exc
            if kind is Failure.INVALID:
                raise FeatureStoreError(
                    f"writing customer {write.customer_id} to {self._table}: {error_text(exc)}"
                ) from exc
            return _OUTCOME_OF_FAILURE[kind]
        except (BotoCoreError, OSError, TimeoutError):
            return Outcome.UNKNOWN  # no answer: it may have been applied; the re-read tells
        return Outcome.DONE

    async def _transact(self, group: list[Write]) -> dict[str, Outcome]:
        actions = [action for write in group for action in write.actions]
        self.requests["TransactWriteItems"] += 1
        try:
            await self._client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except ClientError as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, f"feature table {self._table}") from exc
            if error_code(exc) == "TransactionCanceledException":
                reasons = cancellation_reasons(exc, len(actions))
                outcomes, at = {}, 0
                for write in group:
                    outcomes[write.customer_id] = _why(reasons[at : at + len(write.actions)])
                    at += len(write.actions)
                if all(outcome is Outcome.INNOCENT for outcome in outcomes.values()):  # no reason given
                    outcomes = dict.fromkeys(outcomes, Outcome.UNKNOWN)
            elif kind is Failure.INVALID:
                outcomes = {write.customer_id: Outcome.INVALID for write in group}
            else:
                outcomes = {
                    write.customer_id: Outcome.THROTTLED if kind is Failure.THROTTLED else Outcome.UNKNOWN
                    for write in group
                }
            if len(group) == 1 and outcomes[group[0].customer_id] is Outcome.INVALID:
                raise FeatureStoreError(
                    f"writing customer {group[0].customer_id} to {self._table}: {error_text(exc)}"
                ) from exc
            return outcomes
        except (BotoCoreError, OSError, TimeoutError):
            return {write.customer_id: Outcome.UNKNOWN for write in group}
        return {write.customer_id: Outcome.DONE for write in group}


def _why(reasons: Sequence[str]) -> Outcome:
    """One customer's outcome from the reasons DynamoDB gave for its items."""
    if all(reason == "None" for reason in reasons):
        return Outcome.INNOCENT
    return _OUTCOME_OF_FAILURE[classify_cancellation(reasons)]


_OUTCOME_OF_FAILURE = {
    Failure.CONDITION_FAILED: Outcome.LOST_RACE,
    Failure.THROTTLED: Outcome.THROTTLED,
    Failure.CONFLICT: Outcome.CONFLICT,
    Failure.INVALID: Outcome.INVALID,
    Failure.TRANSIENT: Outcome.UNKNOWN,
}


async def create_feature_table(client: DynamoDBClient, table: str) -> bool:
    """Create the feature table with TTL on `expires_at` and the `due` index, if missing (an
    existing table gets the index). True when it was created now."""
    return await ensure_table(client, table, "customer_id", "bucket", TTL_ATTRIBUTE, indexes=[DUE_INDEX_SPEC])
