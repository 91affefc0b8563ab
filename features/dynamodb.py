"""DynamoDB adapter of the feature store (aiobotocore). Layout and cost: `features/STORE.md`.

One table, partition key `customer_id`, sort key `bucket`:
- `profile`                 the lifetime profile, the customer's optimistic-concurrency `version`,
                            and its place in the `due` index (features/due.py)
- `d#YYYY-MM-DD#NNNN`       a day page: integer aggregates, the digests of its events, its own
                            version `pv` (TTL'd)

Per batch and customer: one strongly consistent Query reads the whole partition (profile and the
~35 days of pages), the events are folded in memory with the same code as the memory store, and
one TransactWriteItems puts the profile and every page that gained events.

Why every Put is conditional. A Query that spans several result pages is not a snapshot, and even
one result page is only read-committed against transactions: another writer may commit between
(or during) our reads, so the profile we read can be older or newer than a page we read. The
transaction therefore checks everything it overwrites: the profile's `version` as read, and each
page's `pv` as read (or that the page still does not exist). If any of them moved, the whole
transaction is cancelled and we re-read: we never write a page built on a stale copy (which would
drop the other writer's acknowledged events) and never count an event the other writer counted
(which would double its lifetime counters). Pages we read but do not write only feed the features
of this one scoring and the duplicate check of their day, which stays exact: an event is only ever
added to the first page of its day with room, and a full page never changes again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from features.due import DUE_AT, DUE_INDEX_SPEC, DUE_SHARD, DUE_SHARDS, next_due_us
from features.events import Event
from features.exceptions import FeatureStoreError, StoreConflictError
from features.state import DIGEST_BYTES, CustomerState, DayPage, Profile, to_us
from features.store import DEFAULT_RETENTION, ApplyResult, apply_to_state, group_by_customer
from features.tables import ensure_table, shard_of

__all__ = ["DynamoDBFeatureStore", "create_feature_table", "ensure_table", "table_name"]
from worker.retry import Failure, backoff, classify, error_text, fatal_error, gather_limited

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import QueryInputTypeDef, TransactWriteItemTypeDef

PROFILE_BUCKET = "profile"
TTL_ATTRIBUTE = "expires_at"
PAGE_VERSION = "pv"
# A page outlives retention by two days, so a redelivered event is either still deduplicated by
# its page or rejected as too old before it reaches the store; never counted twice.
TTL_SLACK = timedelta(days=2)
PAGE_ITEM_LIMIT_BYTES = 400 * 1024  # DynamoDB's item size limit; PAGE_CAPACITY keeps pages far below it
MAX_ATTEMPTS = 8
MAX_CONCURRENT_CUSTOMERS = 32
MAX_EVENTS_PER_WRITE = 5000  # per customer and transaction: see _apply_in_chunks

# Conditions of the transaction. Every write of a customer's items goes through one transaction
# with the profile Put, and each Put checks that what it replaces is what we read.
CUSTOMER_NOT_YET_WRITTEN = "attribute_not_exists(customer_id)"  # first write: nobody created it meanwhile
UNCHANGED_SINCE_READ = "#version = :read_version"  # later writes: nobody wrote the profile since our Query
PAGE_NOT_YET_WRITTEN = "attribute_not_exists(customer_id)"  # a page our read did not find: nobody made it since
PAGE_UNCHANGED_SINCE_READ = "#pv = :read_pv"  # a page we read: nobody added events to it since
# A page written before pages had versions, as we read it: the first versioned write gives it one,
# so a second writer holding the same old copy fails.
UNVERSIONED_PAGE_UNCHANGED = "attribute_exists(customer_id) AND attribute_not_exists(#pv)"


def table_name(prefix: str) -> str:
    return f"{prefix}features"


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def _day_from_label(label: str) -> int:
    return int(datetime.strptime(label, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) // 86_400


def _num_map(values: dict[str, int]) -> dict[str, Any]:
    return {"M": {key: {"N": str(value)} for key, value in values.items()}}


def _read_num_map(attr: dict[str, Any] | None) -> dict[str, int]:
    return {key: int(value["N"]) for key, value in (attr or {}).get("M", {}).items()}


def _triple(value: tuple[int, str, int]) -> dict[str, Any]:
    return {"L": [{"N": str(value[0])}, {"S": value[1]}, {"N": str(value[2])}]}


def _read_triple(attr: dict[str, Any] | None) -> tuple[int, str, int] | None:
    if not attr:
        return None
    a, b, c = attr["L"]
    return int(a["N"]), b["S"], int(c["N"])


def page_item(customer_id: str, page: DayPage, retention: timedelta, version: int | None = None) -> dict[str, Any]:
    expires = (page.day + 1) * 86_400 + int((retention + TTL_SLACK).total_seconds())
    return {
        "customer_id": {"S": customer_id},
        "bucket": {"S": f"d#{_day_label(page.day)}#{page.page:04d}"},
        "ids": {"B": b"".join(sorted(page.event_digests))},
        "c": _num_map(page.counts),
        "l": _num_map(page.last_us),
        "t": {"M": {tid: {"L": [{"N": str(n)} for n in agg]} for tid, agg in page.tutors.items()}},
        PAGE_VERSION: {"N": str(page.version + 1 if version is None else version)},
        TTL_ATTRIBUTE: {"N": str(expires)},
    }


def profile_item(customer_id: str, profile: Profile, version: int, due_us: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "customer_id": {"S": customer_id},
        "bucket": {"S": PROFILE_BUCKET},
        "version": {"N": str(version)},
        "l": _num_map(profile.last_us),
        "lt": _num_map(profile.lifetime),
    }
    for name, value in (("fs", profile.first_seen_us), ("su", profile.signed_up_us)):
        if value is not None:
            item[name] = {"N": str(value)}
    if profile.tier is not None:
        item["tier"] = _triple(profile.tier)
    if profile.first_session is not None:
        item["first"] = _triple(profile.first_session)
    if due_us is not None:  # absent: not in the due index (churned, or never scored without an event)
        item[DUE_SHARD] = {"S": shard_of(customer_id, DUE_SHARDS)}
        item[DUE_AT] = {"N": str(due_us)}
    return item


def state_from_items(customer_id: str, items: Iterable[dict[str, Any]]) -> CustomerState:
    state = CustomerState(customer_id)
    for item in items:
        bucket = item["bucket"]["S"]
        if bucket == PROFILE_BUCKET:
            state.profile = Profile(
                first_seen_us=int(item["fs"]["N"]) if "fs" in item else None,
                signed_up_us=int(item["su"]["N"]) if "su" in item else None,
                tier=_read_triple(item.get("tier")),
                first_session=_read_triple(item.get("first")),
                last_us=_read_num_map(item.get("l")),
                lifetime=_read_num_map(item.get("lt")),
                version=int(item["version"]["N"]),
                due_us=int(item[DUE_AT]["N"]) if DUE_AT in item else None,
            )
        elif bucket.startswith("d#"):
            _, label, page_no = bucket.split("#")
            blob: bytes = item["ids"]["B"]
            page = DayPage(
                day=_day_from_label(label),
                page=int(page_no),
                event_digests={blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES)},
                counts=_read_num_map(item.get("c")),
                last_us=_read_num_map(item.get("l")),
                tutors={tid: [int(n["N"]) for n in agg["L"]] for tid, agg in item.get("t", {}).get("M", {}).items()},
                version=int(item[PAGE_VERSION]["N"]) if PAGE_VERSION in item else 0,
                stored=True,
            )
            state.pages[(page.day, page.page)] = page
    return state


class DynamoDBFeatureStore:
    """Feature store on one DynamoDB table; `client` is an open aiobotocore DynamoDB client.

    `rescore_interval`: every write puts an active customer in the `due` index to be scored
    without an event within this long (features/due.py); None leaves the index as it is.
    `query_page_items` limits the items per Query result page (tests use it to interleave other
    writers between pages; DynamoDB's own limit is 1 MB)."""

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        retention: timedelta = DEFAULT_RETENTION,
        *,
        rescore_interval: timedelta | None = None,
        query_page_items: int | None = None,
    ) -> None:
        self._client = client
        self._table = table
        self._retention = retention
        self._rescore_interval = rescore_interval
        self._query_page_items = query_page_items
        self.requests: dict[str, int] = {"Query": 0, "TransactWriteItems": 0}  # for cost accounting

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        ids = list(customer_ids)
        states = await gather_limited([self._read_retrying(cid) for cid in ids], MAX_CONCURRENT_CUSTOMERS)
        return dict(zip(ids, states, strict=True))

    async def apply(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        grouped = group_by_customer(events)
        results = await gather_limited(
            [self._apply_in_chunks(cid, evs, now) for cid, evs in grouped.items()], MAX_CONCURRENT_CUSTOMERS
        )
        total = ApplyResult()
        for result in results:
            total.merge(result)
        return total

    async def _apply_in_chunks(self, customer_id: str, events: list[Event], now: datetime) -> ApplyResult:
        """One transaction per MAX_EVENTS_PER_WRITE events of a customer: it then touches at most the
        days of retention plus 10 extra pages of busy days, with the profile under 50 items and
        3 MB, inside TransactWriteItems' 100 items and 4 MB whatever one batch carries."""
        total = ApplyResult()
        for start in range(0, len(events), MAX_EVENTS_PER_WRITE):
            total.merge(await self._apply_customer(customer_id, events[start : start + MAX_EVENTS_PER_WRITE], now))
        return total

    async def _read(self, customer_id: str) -> CustomerState:
        items: list[dict[str, Any]] = []
        kwargs: QueryInputTypeDef = {
            "TableName": self._table,
            "KeyConditionExpression": "customer_id = :c",
            "ExpressionAttributeValues": {":c": {"S": customer_id}},
            "ConsistentRead": True,  # the version we read must be the latest, or our write just loses
        }
        if self._query_page_items is not None:
            kwargs["Limit"] = self._query_page_items
        while True:
            self.requests["Query"] += 1
            response = await self._client.query(**kwargs)
            items += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        # Pages past TTL that DynamoDB has not deleted yet are harmless: windows end 30 days back.
        return state_from_items(customer_id, items)

    async def _read_retrying(self, customer_id: str) -> CustomerState:
        for attempt in range(MAX_ATTEMPTS):
            try:
                return await self._read(customer_id)
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                self._give_up_unless_retryable(exc, attempt, "reading")
                await backoff(attempt, 0.05, 2.0)
        raise AssertionError("unreachable")

    def _give_up_unless_retryable(self, exc: BaseException, attempt: int, doing: str) -> Failure:
        kind = classify(exc)
        if kind is Failure.FATAL:
            raise fatal_error(exc, f"feature table {self._table}") from exc
        if kind is Failure.INVALID or attempt + 1 >= MAX_ATTEMPTS:
            raise FeatureStoreError(f"{doing} table {self._table}: {error_text(exc)}") from exc
        return kind

    async def _apply_customer(self, customer_id: str, events: list[Event], now: datetime) -> ApplyResult:
        lost_races = 0
        for attempt in range(MAX_ATTEMPTS):
            try:
                state = await self._read(customer_id)
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                self._give_up_unless_retryable(exc, attempt, "reading")
                await backoff(attempt, 0.05, 2.0)
                continue
            result = ApplyResult()
            touched = apply_to_state(state, events, result)
            result.states[customer_id] = state
            if not touched:
                return result  # all duplicates: nothing to write
            try:
                if await self._write(state, touched, now):
                    return result
                lost_races += 1  # another writer changed what we read: re-read, count only what is new
                await backoff(attempt, 0.02, 1.0)
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                # Throttled, a 5xx or no answer: back off longer. The write may have gone through
                # (a response lost after the commit): the re-read then finds our events counted.
                self._give_up_unless_retryable(exc, attempt, "writing")
                await backoff(attempt, 0.1, 5.0)
        if lost_races * 2 >= MAX_ATTEMPTS:
            raise StoreConflictError(
                f"customer {customer_id}: {lost_races} conflicting writes on {self._table}; will retry later"
            )
        raise FeatureStoreError(f"customer {customer_id}: no write after {MAX_ATTEMPTS} attempts on {self._table}")

    async def _write(self, state: CustomerState, touched: set[tuple[int, int]], now: datetime) -> bool:
        """One transaction for the profile and the changed pages. False if another writer changed
        any of them since we read it (see the module docstring)."""
        version = state.profile.version
        due_us = state.profile.due_us
        if self._rescore_interval is not None:
            due_us = next_due_us(state, to_us(now), self._rescore_interval, self._retention)
        profile_put: dict[str, Any] = {
            "TableName": self._table,
            "Item": profile_item(state.customer_id, state.profile, version + 1, due_us),
        }
        if version == 0:
            profile_put["ConditionExpression"] = CUSTOMER_NOT_YET_WRITTEN
        else:
            profile_put["ConditionExpression"] = UNCHANGED_SINCE_READ
            profile_put["ExpressionAttributeNames"] = {"#version": "version"}
            profile_put["ExpressionAttributeValues"] = {":read_version": {"N": str(version)}}
        items: list[TransactWriteItemTypeDef] = [{"Put": profile_put}]  # type: ignore[typeddict-item]
        items += [self._page_put(state.customer_id, state.pages[key]) for key in sorted(touched)]
        self.requests["TransactWriteItems"] += 1
        try:
            await self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if classify(exc) in (Failure.CONDITION_FAILED, Failure.CONFLICT):
                return False
            raise
        state.profile.version = version + 1
        state.profile.due_us = due_us
        for key in touched:
            page = state.pages[key]
            page.version, page.stored = page.version + 1, True
        return True

    def _page_put(self, customer_id: str, page: DayPage) -> TransactWriteItemTypeDef:
        put: dict[str, Any] = {"TableName": self._table, "Item": page_item(customer_id, page, self._retention)}
        if not page.stored:
            put["ConditionExpression"] = PAGE_NOT_YET_WRITTEN
        elif page.version == 0:
            put["ConditionExpression"] = UNVERSIONED_PAGE_UNCHANGED
            put["ExpressionAttributeNames"] = {"#pv": PAGE_VERSION}
        else:
            put["ConditionExpression"] = PAGE_UNCHANGED_SINCE_READ
            put["ExpressionAttributeNames"] = {"#pv": PAGE_VERSION}
            put["ExpressionAttributeValues"] = {":read_pv": {"N": str(page.version)}}
        return {"Put": put}  # type: ignore[typeddict-item]


async def create_feature_table(client: DynamoDBClient, table: str) -> bool:
    """Create the feature table with TTL on `expires_at` and the `due` index, if missing (an
    existing table gets the index). True when it was created now."""
    return await ensure_table(client, table, "customer_id", "bucket", TTL_ATTRIBUTE, indexes=[DUE_INDEX_SPEC])
