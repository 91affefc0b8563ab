"""The `due` index on the feature table (DynamoDB, aiobotocore): the adapter of
`features.due.DueIndex`. What it is and why: `features/due.py`; the layout: `features/STORE.md`.

Requests: `claim_due` is one Query per shard visited (a page of keys, eventually consistent, 0.5
RRU per 4 KB of keys) plus one conditional UpdateItem per customer claimed; `complete`, `release`
and `mark_due` one conditional UpdateItem per customer; `stats` one or two Queries per shard. A
write that changes `due_us` also writes the index (a keys-only entry moved: 2 WRU).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from features.due import (
    DUE_AT,
    DUE_INDEX,
    DUE_OWNER,
    DUE_SHARD,
    DUE_SHARDS,
    SCORED_AT,
    DueClaim,
    DueStats,
    _us,
)
from features.dynamodb import PROFILE_BUCKET
from features.exceptions import FeatureStoreError
from features.state import to_us
from plumbing.retry import Failure, classify, error_text, gather_limited, with_retries
from plumbing.tables import shard_names

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import QueryInputTypeDef, QueryOutputTypeDef

MAX_CONCURRENT_UPDATES = 16

# claim_due: the due time is still the one the index showed us. The index lags the table, so a
# customer another sweeper claimed, or whose events just moved its due time, fails this and is
# skipped; exactly one sweeper wins each due customer.
STILL_DUE_AS_SEEN = "#due = :seen_due"
# complete / release: we still hold the customer (our lease, our token). If the lease ran out and
# another sweeper claimed it, or an event batch rewrote the profile, we must not move its due time.
STILL_OURS = "#due = :lease_until AND #owner = :token"
# mark_due: only customers in the index (a churned customer stays out), and never later than due now.
IN_INDEX_NOT_YET_DUE = "attribute_exists(#shard) AND #due > :now"

_NAMES = {"#due": DUE_AT, "#owner": DUE_OWNER, "#shard": DUE_SHARD}


class DynamoDBDueIndex:
    def __init__(self, client: DynamoDBClient, table: str, page_items: int = 100) -> None:
        self._client = client
        self._table = table
        self._page_items = page_items
        self.requests: dict[str, int] = {"Query": 0, "UpdateItem": 0}

    def _key(self, customer_id: str) -> dict[str, Any]:
        return {"customer_id": {"S": customer_id}, "bucket": {"S": PROFILE_BUCKET}}

    async def _query(self, **kwargs: Any) -> QueryOutputTypeDef:
        self.requests["Query"] += 1
        arguments: QueryInputTypeDef = {"TableName": self._table, "IndexName": DUE_INDEX, **kwargs}  # type: ignore[typeddict-item]
        try:
            return await with_retries(
                lambda: self._client.query(**arguments),
                resource=f"feature table {self._table} (index {DUE_INDEX})",
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise FeatureStoreError(f"querying the due index of {self._table}: {error_text(exc)}") from exc

    async def _update(self, customer_id: str, **kwargs: Any) -> bool:
        """One conditional UpdateItem of a profile; False when its condition did not hold."""
        self.requests["UpdateItem"] += 1
        try:
            await with_retries(
                lambda: self._client.update_item(TableName=self._table, Key=self._key(customer_id), **kwargs),
                resource=f"feature table {self._table}",
            )
        except ClientError as exc:
            if classify(exc) is Failure.CONDITION_FAILED:
                return False
            raise FeatureStoreError(
                f"updating the due time of {customer_id} in {self._table}: {error_text(exc)}"
            ) from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise FeatureStoreError(
                f"updating the due time of {customer_id} in {self._table}: {error_text(exc)}"
            ) from exc
        return True

    async def claim_due(self, now: datetime, limit: int, lease: timedelta) -> tuple[list[DueClaim], bool]:
        now_us = to_us(now)
        lease_until = now_us + _us(lease)
        shards = shard_names(DUE_SHARDS)
        random.shuffle(shards)  # sweepers running at once mostly start on different shards
        seen: list[tuple[str, int]] = []
        more = False
        for shard in shards:
            if len(seen) >= limit:
                more = True
                break
            response = await self._query(
                KeyConditionExpression="#shard = :shard AND #due <= :now",
                ExpressionAttributeNames={"#shard": DUE_SHARD, "#due": DUE_AT},
                ExpressionAttributeValues={":shard": {"S": shard}, ":now": {"N": str(now_us)}},
                Limit=min(self._page_items, limit - len(seen)),
            )
            seen += [(item["customer_id"]["S"], int(item[DUE_AT]["N"])) for item in response.get("Items", [])]
            more = more or "LastEvaluatedKey" in response
        token = uuid.uuid4().hex
        won = await gather_limited(
            [self._claim(cid, due, lease_until, token) for cid, due in seen], MAX_CONCURRENT_UPDATES
        )
        claims = [
            DueClaim(cid, due, lease_until, token) for (cid, due), ok in zip(seen, won, strict=True) if ok
        ]
        return claims, more

    async def _claim(self, customer_id: str, seen_due: int, lease_until: int, token: str) -> bool:
        return await self._update(
            customer_id,
            UpdateExpression="SET #due = :lease_until, #owner = :token",
            ConditionExpression=STILL_DUE_AS_SEEN,
            ExpressionAttributeNames={"#due": DUE_AT, "#owner": DUE_OWNER},
            ExpressionAttributeValues={
                ":seen_due": {"N": str(seen_due)},
                ":lease_until": {"N": str(lease_until)},
                ":token": {"S": token},
            },
        )

    async def complete(self, claim: DueClaim, next_due_us: int | None, scored_us: int | None = None) -> bool:
        names = {"#due": DUE_AT, "#owner": DUE_OWNER}
        scored, values = "", {}
        if scored_us is not None:  # "what changed" starts from this scoring (no extra write: this one)
            scored, values = "#scored = :scored", {":scored": {"N": str(scored_us)}}
            names["#scored"] = SCORED_AT
        if next_due_us is None:
            update = (f"SET {scored} " if scored else "") + f"REMOVE #due, #owner, {DUE_SHARD}"
        else:
            update = "SET #due = :next" + (f", {scored}" if scored else "") + " REMOVE #owner"
            values[":next"] = {"N": str(next_due_us)}
        return await self._update(
            claim.customer_id,
            UpdateExpression=update,
            ConditionExpression=STILL_OURS,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={
                **values,
                ":lease_until": {"N": str(claim.lease_until_us)},
                ":token": {"S": claim.token},
            },
        )

    async def release(self, claim: DueClaim) -> None:
        await self.complete(claim, claim.due_us)

    async def mark_due(self, customer_ids: Iterable[str], now: datetime) -> None:
        now_value = {"N": str(to_us(now))}
        await gather_limited(
            [
                self._update(
                    cid,
                    UpdateExpression="SET #due = :now",
                    ConditionExpression=IN_INDEX_NOT_YET_DUE,
                    ExpressionAttributeNames={"#due": DUE_AT, "#shard": DUE_SHARD},
                    ExpressionAttributeValues={":now": now_value},
                )
                for cid in customer_ids
            ],
            MAX_CONCURRENT_UPDATES,
        )

    async def stats(self, now: datetime) -> DueStats:
        """Customers due and the oldest due time: per shard one Query for the oldest entry, and a
        counting Query (paginated: its cost follows the customers due) only where one is due."""
        now_values = {":now": {"N": str(to_us(now))}}
        names = {"#shard": DUE_SHARD, "#due": DUE_AT}
        due, oldest = 0, None
        for shard in shard_names(DUE_SHARDS):
            values = {**now_values, ":shard": {"S": shard}}
            condition = "#shard = :shard AND #due <= :now"
            first = await self._query(
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                Limit=1,
            )
            if not first.get("Items"):
                continue
            shard_oldest = int(first["Items"][0][DUE_AT]["N"])
            oldest = shard_oldest if oldest is None else min(oldest, shard_oldest)
            start: dict[str, Any] | None = None
            while True:
                kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
                page = await self._query(
                    KeyConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    Select="COUNT",
                    **kwargs,
                )
                due += int(page.get("Count", 0))
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
        return DueStats(due, oldest)
