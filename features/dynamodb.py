"""DynamoDB adapter of the feature store (aiobotocore). Layout and cost: `features/STORE.md`.

One table, partition key `customer_id`, sort key `bucket`:
- `profile`                 the lifetime profile and the customer's optimistic-concurrency version
- `d#YYYY-MM-DD#NNNN`       a day page: integer aggregates and the digests of its events (TTL'd)

Per batch and customer: one strongly consistent Query reads the whole partition (profile and the
~35 days of pages), the events are folded in memory with the same code as the memory store, and
one TransactWriteItems puts the profile and every page that gained events. The profile Put is
conditional on the version read, so two workers updating one customer cannot both win: the loser
re-reads, finds the winner's events already counted (as duplicates) and adds only its own.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from features.events import Event
from features.exceptions import FeatureStoreError, StoreConflictError
from features.state import DIGEST_BYTES, CustomerState, DayPage, Profile
from features.store import DEFAULT_RETENTION, ApplyResult, apply_to_state, group_by_customer

PROFILE_BUCKET = "profile"
TTL_ATTRIBUTE = "expires_at"
# A page outlives retention by two days, so a redelivered event is either still deduplicated by
# its page or rejected as too old before it reaches the store; never counted twice.
TTL_SLACK = timedelta(days=2)
PAGE_ITEM_LIMIT_BYTES = 400 * 1024  # DynamoDB's item size limit; PAGE_CAPACITY keeps pages far below it
MAX_ATTEMPTS = 6
MAX_CONCURRENT_CUSTOMERS = 32

# Conditions on the profile Put. Every write of a customer's items goes through one transaction
# with that Put, so the profile version is a lock over the whole partition.
CUSTOMER_NOT_YET_WRITTEN = "attribute_not_exists(customer_id)"  # first write: nobody created it meanwhile
UNCHANGED_SINCE_READ = "#version = :read_version"  # later writes: nobody wrote since our Query


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


def page_item(customer_id: str, page: DayPage, retention: timedelta) -> dict[str, Any]:
    expires = (page.day + 1) * 86_400 + int((retention + TTL_SLACK).total_seconds())
    return {
        "customer_id": {"S": customer_id},
        "bucket": {"S": f"d#{_day_label(page.day)}#{page.page:04d}"},
        "ids": {"B": b"".join(sorted(page.event_digests))},
        "c": _num_map(page.counts),
        "l": _num_map(page.last_us),
        "t": {"M": {tid: {"L": [{"N": str(n)} for n in agg]} for tid, agg in page.tutors.items()}},
        TTL_ATTRIBUTE: {"N": str(expires)},
    }


def profile_item(customer_id: str, profile: Profile, version: int) -> dict[str, Any]:
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
            )
            state.pages[(page.day, page.page)] = page
    return state


class DynamoDBFeatureStore:
    """Feature store on one DynamoDB table; `client` is an open aiobotocore DynamoDB client."""

    def __init__(self, client: Any, table: str, retention: timedelta = DEFAULT_RETENTION) -> None:
        self._client = client
        self._table = table
        self._retention = retention
        self.requests: dict[str, int] = {"Query": 0, "TransactWriteItems": 0}  # for cost accounting

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        ids = list(customer_ids)
        states = await _gather_limited([self._read(cid) for cid in ids])
        return dict(zip(ids, states, strict=True))

    async def apply(self, events: Sequence[Event], now: datetime) -> ApplyResult:
        grouped = group_by_customer(events)
        del now  # TTL, not the caller's clock, expires pages here
        results = await _gather_limited([self._apply_customer(cid, evs) for cid, evs in grouped.items()])
        total = ApplyResult()
        for result in results:
            total.merge(result)
        return total

    async def _read(self, customer_id: str) -> CustomerState:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "customer_id = :c",
            "ExpressionAttributeValues": {":c": {"S": customer_id}},
            "ConsistentRead": True,  # the version we read must be the latest, or our write just loses
        }
        while True:
            self.requests["Query"] += 1
            try:
                response = await self._client.query(**kwargs)
            except ClientError as exc:
                raise FeatureStoreError(f"reading table {self._table}: {_error_text(exc)}") from exc
            items += response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                break
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        # Pages past TTL that DynamoDB has not deleted yet are harmless: windows end 30 days back.
        return state_from_items(customer_id, items)

    async def _apply_customer(self, customer_id: str, events: list[Event]) -> ApplyResult:
        for attempt in range(MAX_ATTEMPTS):
            state = await self._read(customer_id)
            result = ApplyResult()
            touched = apply_to_state(state, events, result)
            result.states[customer_id] = state
            if not touched:
                return result  # all duplicates: nothing to write
            if await self._write(state, touched):
                state.profile.version += 1
                return result
            await asyncio.sleep(random.uniform(0, 0.02 * 2**attempt))  # another writer won: re-read
        raise StoreConflictError(
            f"customer {customer_id}: {MAX_ATTEMPTS} conflicting writes in a row on {self._table}; will retry later"
        )

    async def _write(self, state: CustomerState, touched: set[tuple[int, int]]) -> bool:
        """One transaction for the profile and the changed pages. False if another writer got there first."""
        version = state.profile.version
        profile_put: dict[str, Any] = {
            "TableName": self._table,
            "Item": profile_item(state.customer_id, state.profile, version + 1),
        }
        if version == 0:
            profile_put["ConditionExpression"] = CUSTOMER_NOT_YET_WRITTEN
        else:
            profile_put["ConditionExpression"] = UNCHANGED_SINCE_READ
            profile_put["ExpressionAttributeNames"] = {"#version": "version"}
            profile_put["ExpressionAttributeValues"] = {":read_version": {"N": str(version)}}
        items = [{"Put": profile_put}] + [
            {"Put": {"TableName": self._table, "Item": page_item(state.customer_id, state.pages[key], self._retention)}}
            for key in sorted(touched)
        ]
        self.requests["TransactWriteItems"] += 1
        try:
            await self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("TransactionCanceledException", "ConditionalCheckFailedException", "TransactionConflictException"):
                return False
            raise FeatureStoreError(f"writing table {self._table}: {_error_text(exc)}") from exc
        return True


async def _gather_limited(coroutines: list[Any]) -> list[Any]:
    semaphore = asyncio.Semaphore(MAX_CONCURRENT_CUSTOMERS)

    async def run(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return list(await asyncio.gather(*(run(c) for c in coroutines)))


def _error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')}: {error.get('Message', '')}"


async def ensure_table(client: Any, table: str, hash_key: str, range_key: str | None = None,
                       ttl_attribute: str | None = None) -> bool:  # fmt: skip
    """Create an on-demand table with string keys (and TTL on `ttl_attribute`) if it is missing,
    wait until it is usable. True when it was created now. Shared by every table the worker owns."""
    keys = [(hash_key, "HASH")] + ([(range_key, "RANGE")] if range_key else [])
    created = True
    try:
        await client.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
            KeySchema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
        created = False
    await client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if ttl_attribute is not None:
        ttl = await client.describe_time_to_live(TableName=table)
        if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            await client.update_time_to_live(
                TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute}
            )
    return created


async def create_feature_table(client: Any, table: str) -> bool:
    """Create the feature table with TTL on `expires_at`, if missing. True when it was created now."""
    return await ensure_table(client, table, "customer_id", "bucket", TTL_ATTRIBUTE)
