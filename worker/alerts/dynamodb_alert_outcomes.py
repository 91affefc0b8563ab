"""Alert records, their outcomes and the daily counters, in the alert-ledger table (the rules are
`worker.alerts.alert_outcomes`').

Items, next to the claims (PK `customer_id`, SK `alert_type`):

| PK | SK | what |
|---|---|---|
| `c-123` | `#alert#<window start µs, 17 digits>#<TYPE>#<arm>` | an alert record: `alert_id`, `as_of`, `as_of_us`, `trigger`, `arm`, `model_version`, `feature_hash`; `outcome`, `outcome_at` (and `churned_at`) once resolved; while open, `pending_shard` = `o00`..`o03` and `lease_until_us` = its deadline (`as_of + 30 days`), which put it in the table's sparse `pending` index; TTL `HISTORY_DAYS` after the alert |
| `#stats#2026-11-27` | `<TYPE>#<arm>#<shard 00..03>` | counters `confirmed`, `expired` of the alerts of that UTC day; TTL `STATS_KEEP_DAYS` |

The `pending` index already holds unsent claims (shards `00`..`03`, sorted by lease end): open
records use shards of their own (`o00`..`o03`, sorted by deadline), so neither sweep sees the
other's items and the table needs no second index. Counters are sharded by customer like the index
(4 items per day, type and arm), so two workers resolving one day's alerts rarely touch one item.

Requests: a claim's transaction gains the record's Put (2 WRU with the transaction); a churn costs
one Query on the customer's records; each resolution is one TransactWriteItems of two Updates (the
record, its counter: 4 WRU); the expiry sweep one index Query per shard a minute per worker;
`alerts stats` one Query per day plus the open records' index keys. Never a Scan, except `uplift
--ledger` (`scan_records`), an offline read an operator starts.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from features.state import DAY_US, from_us, parse_iso_us, to_us
from plumbing.retry import Failure, backoff, classify, error_text, with_retries
from plumbing.tables import shard_names, shard_of
from worker.alerts.alert_outcomes import (
    HISTORY_DAYS,
    OUTCOME_SHARD_PREFIX,
    STATS_KEEP_DAYS,
    STATS_PREFIX,
    Outcome,
    OutcomeStats,
    RecordKey,
    Resolution,
    day_of,
    days_between,
    deadline_us,
    is_confirmed,
    rank_open,
    record_sort_key_bound,
)
from worker.alerts.exceptions import AlertLedgerError
from worker.alerts.rules import Alert, iso

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import TransactWriteItemTypeDef

T = TypeVar("T")

PENDING_INDEX = "pending"  # the ledger's sparse index (worker/alerts/dynamodb_ledger.py)
OUTCOME_SHARDS = 4  # the same number of shards as the unsent claims'; part of the table's data
TTL_ATTRIBUTE = "expires_at"

# Resolving a record: only once, and only a record that is there (an Update on a key TTL removed
# would create a stray item; a second worker resolving it too, or a churn and an expiry at the same
# time, must not count it twice).
UNRESOLVED_RECORD = "attribute_exists(alert_id) AND attribute_not_exists(outcome)"
# A churn learned after the record expired (its event came late) turns the expiry over, once.
EXPIRED_RECORD = "outcome = :expired"


def outcome_shard(customer_id: str) -> str:
    return shard_of(customer_id, OUTCOME_SHARDS)


def stats_counter_key(
    customer_id: str, moment: datetime, alert_type: str, arm: str
) -> tuple[dict[str, Any], int]:
    """The daily counter item (key, TTL epoch seconds) of an alert of `moment`'s UTC day."""
    day = day_of(to_us(moment))
    expires = int(datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp()) + STATS_KEEP_DAYS * 86_400
    key = {
        "customer_id": {"S": STATS_PREFIX + day},
        "alert_type": {"S": f"{alert_type}#{arm}#{outcome_shard(customer_id)}"},
    }
    return key, expires


def record_put(table: str, alert: Alert, provenance: dict[str, Any]) -> TransactWriteItemTypeDef:
    """The alert record a new claim writes in its own transaction (`alert.window_start` set)."""
    assert alert.window_start is not None
    as_of_us = to_us(alert.as_of)
    key = RecordKey(to_us(alert.window_start), alert.alert_type.value, alert.arm)
    item: dict[str, Any] = {
        "customer_id": {"S": alert.customer_id},
        "alert_type": {"S": key.sort_key()},
        "alert_id": {"S": alert.alert_id},
        "type": {"S": alert.alert_type.value},
        "as_of": {"S": iso(alert.as_of)},
        "as_of_us": {"N": str(as_of_us)},
        "window_start": {"S": iso(alert.window_start)},
        "trigger": {"S": alert.trigger},
        "pending_shard": {"S": OUTCOME_SHARD_PREFIX + outcome_shard(alert.customer_id)},
        "lease_until_us": {"N": str(deadline_us(as_of_us))},
        TTL_ATTRIBUTE: {"N": str((as_of_us + HISTORY_DAYS * DAY_US) // 1_000_000)},
        **provenance,
    }
    return {"Put": {"TableName": table, "Item": item}}


# The alert body a claim item (or a deferral) keeps for re-publishing: JSON, deflated into a binary
# attribute with a preset dictionary (`alert_body_dictionary_v1.txt`: the body's keys, the alert
# types' fixed texts, the feature names and their labels, a body of each type), so the claim item
# stays under 1 KB: 1 write unit for its put (2 in the claim transaction) and for its sent mark,
# where plain deflate left it at 1.5-1.7 KB (2 units, 4 in the transaction). An alert's body is
# 2-2.5 KB of JSON; about 1.1 KB deflated alone, about 0.45 KB with the dictionary.
# The dictionary is part of the stored format: never edit the file (items written with it could not
# be read back); a new one gets a new file, and the reader picks it by the id in the stream's header.
# Items written before hold plain zlib streams (no dictionary: read as they are) or JSON strings.
_DICTIONARY_FILE = Path(__file__).with_name("alert_body_dictionary_v1.txt")
BODY_DICTIONARY = _DICTIONARY_FILE.read_bytes()
BODY_DICTIONARY_ID = 2090727384  # zlib.adler32 of the file, as the stream's header names it
if zlib.adler32(BODY_DICTIONARY) != BODY_DICTIONARY_ID:
    raise RuntimeError(f"{_DICTIONARY_FILE} was edited; it is a stored format and must stay as it was")


def encode_body(body: dict[str, Any]) -> dict[str, Any]:
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, BODY_DICTIONARY)
    raw = json.dumps(body, separators=(",", ":")).encode()
    return {"B": packer.compress(raw) + packer.flush()}


def decode_body(value: dict[str, Any]) -> Any:
    """The body of a `body` attribute: deflated with the dictionary, deflated alone (both zlib
    streams: the header says whether a dictionary is needed) or a JSON string (written before)."""
    if "B" in value:
        unpacker = zlib.decompressobj(zdict=BODY_DICTIONARY)
        return json.loads(unpacker.decompress(value["B"]) + unpacker.flush())
    return json.loads(value["S"])


class DynamoDBOutcomes:
    """Confirms, expires and counts the alert records of one ledger table."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    async def confirm_churn(self, customer_id: str, churned_at: datetime) -> list[Resolution]:
        """Confirm the customer's records of the 30 days before `churned_at` (idempotent: a record
        already confirmed is left alone, so a redelivered churn changes nothing)."""
        churned_us = to_us(churned_at)
        low = record_sort_key_bound(churned_us - 31 * DAY_US)  # window starts lag as_of by seconds
        high = record_sort_key_bound(churned_us + DAY_US)
        candidates: list[tuple[RecordKey, Resolution]] = []
        async for item in self._pages(
            "reading the alert records of a churned customer",
            TableName=self._table,
            ConsistentRead=True,
            KeyConditionExpression="customer_id = :c AND alert_type BETWEEN :low AND :high",
            ExpressionAttributeValues={":c": {"S": customer_id}, ":low": {"S": low}, ":high": {"S": high}},
        ):
            key = RecordKey.parse(item["alert_type"]["S"])
            as_of_us = int(item["as_of_us"]["N"])
            was = item.get("outcome", {}).get("S")
            if key is None or was == Outcome.CONFIRMED or not is_confirmed(as_of_us, churned_us):
                continue
            candidates.append(
                (
                    key,
                    Resolution(
                        customer_id,
                        key.alert_type,
                        key.arm,
                        as_of_us,
                        Outcome.CONFIRMED,
                        Outcome.EXPIRED if was == Outcome.EXPIRED else None,
                    ),
                )
            )
        return [
            resolution for key, resolution in candidates if await self._resolve(resolution, key, churned_at)
        ]

    async def expire_due(self, now: datetime, limit: int) -> list[Resolution]:
        """Expire up to `limit` open records whose 30 days have passed without a churn."""
        now_us = to_us(now)
        resolved: list[Resolution] = []
        for shard in shard_names(OUTCOME_SHARDS):
            if len(resolved) >= limit:
                break
            page = await self._call(
                "finding expired alert records",
                partial(
                    self._client.query,
                    TableName=self._table,
                    IndexName=PENDING_INDEX,
                    KeyConditionExpression="pending_shard = :s AND lease_until_us <= :now",
                    ExpressionAttributeValues={
                        ":s": {"S": OUTCOME_SHARD_PREFIX + shard},
                        ":now": {"N": str(now_us)},
                    },
                    Limit=limit - len(resolved),
                ),
            )
            for item in page.get("Items", []):
                key = RecordKey.parse(item["alert_type"]["S"])
                if key is None:
                    continue
                as_of_us = int(item["lease_until_us"]["N"]) - deadline_us(0)
                resolution = Resolution(
                    item["customer_id"]["S"], key.alert_type, key.arm, as_of_us, Outcome.EXPIRED
                )
                if await self._resolve(resolution, key, now):
                    resolved.append(resolution)
        return resolved

    async def _resolve(self, resolution: Resolution, key: RecordKey, at: datetime) -> bool:
        """The record's outcome and its counter, in one transaction. False: it was resolved already."""
        values: dict[str, Any] = {":outcome": {"S": resolution.outcome.value}, ":at": {"S": iso(at)}}
        update = "SET outcome = :outcome, outcome_at = :at"
        if resolution.outcome is Outcome.CONFIRMED:
            values[":churned_at"] = {"S": iso(at)}
            update += ", churned_at = :churned_at"
        if resolution.was is Outcome.EXPIRED:
            condition = EXPIRED_RECORD
            values[":expired"] = {"S": Outcome.EXPIRED.value}
            counts = "ADD confirmed :one, expired :minus_one"
            counter_values = {":one": {"N": "1"}, ":minus_one": {"N": "-1"}}
        else:
            condition = UNRESOLVED_RECORD
            counts = f"ADD {resolution.outcome.value} :one"
            counter_values = {":one": {"N": "1"}}
        counter_key, expires = stats_counter_key(
            resolution.customer_id, from_us(resolution.as_of_us), key.alert_type, key.arm
        )
        writes: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {
                        "customer_id": {"S": resolution.customer_id},
                        "alert_type": {"S": key.sort_key()},
                    },
                    "UpdateExpression": f"{update} REMOVE pending_shard",  # out of the deadline index
                    "ConditionExpression": condition,
                    "ExpressionAttributeValues": values,
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": counter_key,
                    "UpdateExpression": f"{counts} SET {TTL_ATTRIBUTE} = :ttl",
                    "ExpressionAttributeValues": {**counter_values, ":ttl": {"N": str(expires)}},
                }
            },
        ]
        try:
            await with_retries(
                lambda: self._client.transact_write_items(TransactItems=writes),
                resource=f"alert ledger table {self._table}",
                attempts=6,
            )
        except ClientError as exc:
            if classify(exc) is Failure.CONDITION_FAILED:
                return False  # resolved meanwhile (by another worker, or the churn before the expiry)
            raise AlertLedgerError(f"resolving alert records in {self._table}: {error_text(exc)}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"resolving alert records in {self._table}: {error_text(exc)}") from exc
        return True

    async def stats(self, since: date, until: date) -> OutcomeStats:
        """Counters of the alert days `since` .. `until`, and the open records of those days."""
        stats = OutcomeStats(since, until)
        for day in days_between(since, until):
            async for item in self._pages(
                "reading alert counters",
                TableName=self._table,
                KeyConditionExpression="customer_id = :day",
                ExpressionAttributeValues={":day": {"S": STATS_PREFIX + day}},
            ):
                alert_type, arm, _ = item["alert_type"]["S"].split("#")
                stats.add(
                    day,
                    alert_type,
                    arm,
                    confirmed=int(item.get("confirmed", {}).get("N", 0)),
                    expired=int(item.get("expired", {}).get("N", 0)),
                    escalated=int(item.get("escalated", {}).get("N", 0)),
                    resolved=int(item.get("resolved", {}).get("N", 0)),
                    resolve_seconds=float(item.get("resolve_seconds", {}).get("N", 0)),
                )
        low = deadline_us(parse_iso_us(f"{since.isoformat()}T00:00:00+00:00"))
        high = deadline_us(parse_iso_us(f"{until.isoformat()}T00:00:00+00:00") + DAY_US)
        for shard in shard_names(OUTCOME_SHARDS):
            async for item in self._pages(
                "counting open alert records",
                TableName=self._table,
                IndexName=PENDING_INDEX,
                KeyConditionExpression="pending_shard = :s AND lease_until_us BETWEEN :low AND :high",
                ExpressionAttributeValues={
                    ":s": {"S": OUTCOME_SHARD_PREFIX + shard},
                    ":low": {"N": str(low)},
                    ":high": {"N": str(high - 1)},
                },
            ):
                key = RecordKey.parse(item["alert_type"]["S"])
                if key is not None:
                    stats.add(
                        day_of(int(item["lease_until_us"]["N"]) - deadline_us(0)),
                        key.alert_type,
                        key.arm,
                        open_=1,
                    )
        return stats

    async def budget_stats(self, stats: OutcomeStats, prefix: str) -> None:
        """The budgets' days of `stats`' period: one Query per day (`#budget#<day>`): the units
        each budget gave out, its cap, and the alerts it deferred per type."""
        for day in days_between(stats.since, stats.until):
            async for item in self._pages(
                "reading budget counters",
                TableName=self._table,
                KeyConditionExpression="customer_id = :day",
                ExpressionAttributeValues={":day": {"S": prefix + day}},
            ):
                name, _, rest = item["alert_type"]["S"].partition("#")
                if not rest:
                    stats.add_budget(
                        day,
                        name,
                        sent=int(item.get("count", {}).get("N", 0)),
                        max_per_day=int(item["max_per_day"]["N"]) if "max_per_day" in item else None,
                    )
                else:
                    alert_type = rest.partition("#")[0]
                    stats.add_budget(
                        day, name, alert_type=alert_type, deferred=int(item.get("deferred", {}).get("N", 0))
                    )

    async def open_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """The alerts of `since` .. `until` whose outcome is open: their records' keys from the
        sparse index (as `stats` counts them), then their claim items in BatchGetItems of 100; an
        alert whose claim item already holds a later window is left out (its body is gone)."""
        low = deadline_us(parse_iso_us(f"{since.isoformat()}T00:00:00+00:00"))
        high = deadline_us(parse_iso_us(f"{until.isoformat()}T00:00:00+00:00") + DAY_US)
        wanted: dict[tuple[str, str], int] = {}  # (customer, type) -> window start of the open record
        for shard in shard_names(OUTCOME_SHARDS):
            async for item in self._pages(
                "finding open alert records",
                TableName=self._table,
                IndexName=PENDING_INDEX,
                KeyConditionExpression="pending_shard = :s AND lease_until_us BETWEEN :low AND :high",
                ExpressionAttributeValues={
                    ":s": {"S": OUTCOME_SHARD_PREFIX + shard},
                    ":low": {"N": str(low)},
                    ":high": {"N": str(high - 1)},
                },
            ):
                key = RecordKey.parse(item["alert_type"]["S"])
                if key is not None:
                    pair = (item["customer_id"]["S"], key.alert_type)
                    wanted[pair] = max(wanted.get(pair, 0), key.window_us)
        bodies: list[dict[str, Any]] = []
        pairs = sorted(wanted)
        for start in range(0, len(pairs), 100):
            chunk = pairs[start : start + 100]
            keys = [{"customer_id": {"S": c}, "alert_type": {"S": t}} for c, t in chunk]
            for item in await self._batch_get(keys):
                pair = (item["customer_id"]["S"], item["alert_type"]["S"])
                if pair not in wanted or int(item.get("window_start_us", {}).get("N", -1)) != wanted[pair]:
                    continue
                try:
                    body = decode_body(item["body"])
                except (KeyError, ValueError, zlib.error):
                    continue
                body["sent"] = item.get("status", {}).get("S") == "sent"
                bodies.append(body)
        return rank_open(bodies)[:limit]

    async def deferred_alerts(
        self, since: date, until: date, limit: int, prefix: str
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for day in days_between(since, until):
            async for item in self._pages(
                "reading deferred alerts",
                TableName=self._table,
                KeyConditionExpression="customer_id = :day",
                ExpressionAttributeValues={":day": {"S": prefix + day}},
            ):
                try:
                    body = decode_body(item["body"])
                except (KeyError, ValueError, zlib.error):
                    continue
                body["deferred_on"] = day
                rows.append(body)
        rows.sort(key=lambda b: (-((b.get("budget") or {}).get("expected_value") or 0.0), b["customer_id"]))
        return rows[:limit]

    async def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(8):
            response = await self._call(
                "reading alert claims", partial(self._client.batch_get_item, RequestItems=request)
            )
            items += response.get("Responses", {}).get(self._table, [])
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
            await backoff(attempt, 0.05)
        raise AlertLedgerError(f"reading alert claims in {self._table}: keys left unprocessed")

    async def scan_records(self, since_us: int, until_us: int) -> AsyncIterator[dict[str, Any]]:
        """Every alert record of alerts in `since_us` .. `until_us` (as_of), decoded: a Scan of the
        whole table, for `churn-worker uplift --ledger` only (an offline read, billed by the table's
        size: use `--alerts FILE` for large tables)."""
        async for item in self._pages(
            "reading alert records",
            scan=True,
            TableName=self._table,
            FilterExpression="begins_with(alert_type, :prefix) AND as_of_us BETWEEN :since AND :until",
            ExpressionAttributeValues={
                ":prefix": {"S": "#alert#"},
                ":since": {"N": str(since_us)},
                ":until": {"N": str(until_us)},
            },
        ):
            key = RecordKey.parse(item["alert_type"]["S"])
            if key is None:
                continue
            yield {
                "customer_id": item["customer_id"]["S"],
                "type": key.alert_type,
                "arm": key.arm,
                "as_of": item["as_of"]["S"],
                "alert_id": item["alert_id"]["S"],
                "model_version": item.get("model_version", {}).get("S"),
                "feature_hash": item.get("feature_hash", {}).get("S"),
                "outcome": item.get("outcome", {}).get("S"),
            }

    async def _pages(self, what: str, scan: bool = False, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        call = self._client.scan if scan else self._client.query
        start: dict[str, Any] | None = None
        while True:
            request = {**kwargs, "ExclusiveStartKey": start} if start else kwargs
            page = await self._call(what, partial(call, **request))
            for item in page.get("Items", []):
                yield item
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await with_retries(call, resource=f"alert ledger table {self._table}")
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"{what} in {self._table}: {error_text(exc)}") from exc
