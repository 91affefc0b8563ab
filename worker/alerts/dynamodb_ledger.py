"""The alert ledger on DynamoDB (aiobotocore). The rules are `worker.alerts.claims`'.

Table `<prefix>alerts`: PK `customer_id`, SK `alert_type` (or `#churned`), TTL on `expires_at`.
Sparse index `pending` (PK `pending_shard` S, SK `lease_until_us` N, keys only): unsent claims,
so `abandoned` finds the claims whose lease ran out with a Query per shard, never a Scan. A claim
puts itself in it; `mark_sent` takes it out. Every write is conditional; the conditions are named
below with why each exists.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from features.state import to_us
from plumbing.retry import (
    CONDITION_CODES,
    Failure,
    backoff,
    cancellation_reasons,
    classify,
    error_code,
    error_text,
    fatal_error,
    with_retries,
)
from plumbing.tables import IndexSpec, ensure_table, shard_names, shard_of
from worker.alerts.alert_outcomes import OutcomeStats, Resolution
from worker.alerts.claims import (
    CHURN_MARKER,
    DEFAULT_LEASE,
    Batching,
    Claim,
    ClaimStatus,
    return_times,
    utc,
)
from worker.alerts.dynamodb_alert_outcomes import DynamoDBOutcomes, record_put
from worker.alerts.exceptions import AlertLedgerError
from worker.alerts.rules import Alert, AlertType, iso

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import TransactWriteItemTypeDef

TTL_ATTRIBUTE = "expires_at"
TTL_SLACK = timedelta(days=30)  # a record outlives its window by this much: room for a longer cooldown later
MAX_ATTEMPTS = 6
PENDING_INDEX = "pending"
PENDING_SHARD = "pending_shard"
PENDING_SHARDS = 4  # unsent claims are few (alerts in flight): four index partitions are plenty
PENDING_INDEX_SPEC = IndexSpec(PENDING_INDEX, PENDING_SHARD, "S", "lease_until_us", "N")

# Condition on the claim Put. Only the first claim of a window wins, so two workers (or a
# redelivery) scoring the same customer cannot both start a window and both publish.
NO_OPEN_WINDOW = "attribute_not_exists(customer_id) OR window_start_us <= :cutoff_us"
# ConditionCheck on the `#churned` item in the same transaction as every claim: a churn recorded
# at any time before the claim stops it, with no read-then-write gap, unless a sign-up at or after
# it is recorded too (a churn and a sign-up at the same instant: the customer is back).
CUSTOMER_NOT_CHURNED = "attribute_not_exists(customer_id) OR returned_at_us >= churned_at_us"
# Taking over an unsent claim: only when it is still this window's, still unsent and its holder's
# lease has run out, so exactly one worker re-publishes an abandoned alert, and never a sent one.
ABANDONED_CLAIM = "alert_id = :alert_id AND #status = :pending AND lease_until_us <= :now_us"
# mark_sent: only the claim that was published. A slow worker must not mark a newer window's
# claim as sent, or that window's alert would be lost.
SAME_CLAIM = "alert_id = :alert_id"
# renew: the holder extends its lease only while nobody took the claim over (a take-over writes a
# new token) and it is still unsent: a claim lost to the sweep is never published by its old holder.
STILL_OUR_CLAIM = "claim_token = :token AND #status = :pending"
# release: only this window's claim, still unsent (a sent one must not re-enter the sweep).
SAME_UNSENT_CLAIM = "alert_id = :alert_id AND #status = :pending"
# record_churn: only a newer churn replaces the item (and so clears a return older than it); a
# redelivered or late churn event changes nothing.
NEWER_CHURN = "attribute_not_exists(customer_id) OR churned_at_us < :churned_at_us"
# record_return: a sign-up at or after the recorded churn (or after a newer one than recorded so far).
NEWER_RETURN = (
    "attribute_not_exists(customer_id) OR "
    "(churned_at_us <= :churned_at_us AND (attribute_not_exists(returned_at_us) OR returned_at_us < :returned_at_us))"
)


def alert_table_name(prefix: str) -> str:
    return f"{prefix}alerts"


def _provenance(alert: Alert) -> dict[str, Any]:
    """What produced an alert, as attributes of every ledger item about it (queryable without
    decoding the body): its experiment arm, model version and feature hash."""
    item: dict[str, Any] = {"arm": {"S": alert.arm}}
    version = alert.model_version or (alert.predictions.model_version if alert.predictions else None)
    if version:
        item["model_version"] = {"S": version}
    if alert.feature_hash:
        item["feature_hash"] = {"S": alert.feature_hash}
    return item


class _Failed(Exception):
    """A claim transaction did not go through: why, and the alert record as it was (if known)."""

    def __init__(
        self,
        kind: Failure,
        churned: bool = False,
        condition_failed: bool = False,
        item: dict[str, Any] | None = None,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(kind.value)
        self.kind = kind
        self.churned = churned
        self.condition_failed = condition_failed
        self.item = item
        self.ambiguous = ambiguous  # no answer: the write may have been applied


class SentWindows:
    """The windows this process knows were sent, per (customer, alert type): a claim inside one of
    them is SUPPRESSED without a request. Most claims are of customers scored again inside their
    cooldown (every event scores its customer), and each would cost a cancelled transaction.

    Safe because a sent window is final until it ends: NO_OPEN_WINDOW lets no claim replace it, the
    take-over and release touch pending claims only, and TTL deletes the record 30 days after its
    window. Only what DynamoDB answered goes in (a claim found sent, our own mark_sent that held).
    One difference: a claim that DynamoDB would answer CHURNED (the customer churned inside the
    window) is SUPPRESSED here; neither publishes. Bounded: the least recently used go first."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._windows: OrderedDict[tuple[str, str], tuple[int, Alert]] = OrderedDict()

    def remember(self, alert: Alert) -> None:
        if alert.window_start is None:
            return
        key = (alert.customer_id, alert.alert_type.value)
        self._windows[key] = (to_us(alert.window_start), alert)
        self._windows.move_to_end(key)
        while len(self._windows) > self._size:
            self._windows.popitem(last=False)

    def forget(self, customer_id: str) -> None:
        for alert_type in AlertType:
            self._windows.pop((customer_id, alert_type.value), None)

    def sent_inside(self, alert: Alert, now: datetime, cooldown: timedelta) -> Alert | None:
        """The stored alert of a window known sent that is still open at `now`, else None."""
        key = (alert.customer_id, alert.alert_type.value)
        known = self._windows.get(key)
        if known is None:
            return None
        if known[0] <= to_us(now - cooldown):  # over: the next claim may open a new window
            del self._windows[key]
            return None
        self._windows.move_to_end(key)
        return known[1]


class DynamoDBAlertLedger(Batching):
    """The ledger on one DynamoDB table; `client` is an open aiobotocore DynamoDB client."""

    def __init__(self, client: DynamoDBClient, table: str, lease: timedelta = DEFAULT_LEASE) -> None:
        self._client = client
        self._table = table
        self._lease = lease
        self.outcomes = DynamoDBOutcomes(client, table)  # alert records, outcomes, counters
        self.sent_windows = SentWindows()

    async def confirm_churn(self, customer_id: str, churned_at: datetime) -> list[Resolution]:
        return await self.outcomes.confirm_churn(customer_id, churned_at)

    async def expire_outcomes(self, now: datetime, limit: int) -> list[Resolution]:
        return await self.outcomes.expire_due(now, limit)

    async def outcome_stats(self, since: date, until: date) -> OutcomeStats:
        return await self.outcomes.stats(since, until)

    def _key(self, customer_id: str, sort_key: str) -> dict[str, Any]:
        return {"customer_id": {"S": customer_id}, "alert_type": {"S": sort_key}}

    def _not_churned(self, customer_id: str) -> TransactWriteItemTypeDef:
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": self._key(customer_id, CHURN_MARKER),
                "ConditionExpression": CUSTOMER_NOT_CHURNED,
            }
        }

    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim:
        now = utc(now)
        sent = self.sent_windows.sent_inside(alert, now, cooldown)
        if sent is not None:
            return Claim(ClaimStatus.SUPPRESSED, sent)
        token = uuid.uuid4().hex  # tells our own claim apart when its answer was lost
        for attempt in range(MAX_ATTEMPTS):
            fresh = alert.with_window(now)
            try:
                # The claim and its alert record (worker/alerts/dynamodb_alert_outcomes.py) in one transaction.
                await self._transact(
                    alert.customer_id,
                    self._claim_put(fresh, now, cooldown, token),
                    record_put(self._table, fresh, _provenance(fresh)),
                )
                return Claim(ClaimStatus.NEW, fresh, token, now + self._lease)
            except _Failed as failed:
                if failed.churned:
                    return Claim(ClaimStatus.CHURNED, alert)
                if not (failed.condition_failed or failed.ambiguous):  # throttled, a conflict, a 5xx
                    await backoff(attempt, 0.05 if failed.kind is Failure.CONFLICT else 0.2)
                    continue
                item = failed.item if failed.item is not None else await self._get(alert)
            if item is not None and int(item["window_start_us"]["N"]) > to_us(now - cooldown):
                stored = self._stored_alert(item)
                if item.get("claim_token", {}).get("S") == token:  # ours: an earlier attempt went through
                    return Claim(ClaimStatus.NEW, stored, token, now + self._lease)
                if item["status"]["S"] == "sent":
                    self.sent_windows.remember(stored)
                    return Claim(ClaimStatus.SUPPRESSED, stored)
                if int(item["lease_until_us"]["N"]) > to_us(now):
                    return Claim(ClaimStatus.IN_FLIGHT, stored)
                taken = await self._take_over(stored, now)
                if taken is not None:
                    return taken
            # Lost a race (taken over, sent, replaced or a transaction conflict): look again.
            await backoff(attempt, 0.01)
        raise AlertLedgerError(
            f"{alert.alert_type} for customer {alert.customer_id}: no claim after {MAX_ATTEMPTS} attempts "
            f"on {self._table} (conflicts or throttling); will retry later"
        )

    def _claim_put(
        self, alert: Alert, now: datetime, cooldown: timedelta, token: str
    ) -> TransactWriteItemTypeDef:
        assert alert.window_start is not None
        expires = alert.window_start + cooldown + TTL_SLACK
        item: dict[str, Any] = {
            **self._key(alert.customer_id, alert.alert_type.value),
            "alert_id": {"S": alert.alert_id},
            "window_start": {"S": iso(alert.window_start)},
            "window_start_us": {"N": str(to_us(alert.window_start))},
            "status": {"S": "pending"},
            "lease_until_us": {"N": str(to_us(now + self._lease))},
            PENDING_SHARD: {"S": shard_of(alert.customer_id, PENDING_SHARDS)},
            "claim_token": {"S": token},
            "claimed_at": {"S": iso(now)},
            "body": {"S": json.dumps(alert.body())},
            TTL_ATTRIBUTE: {"N": str(to_us(expires) // 1_000_000)},
        }
        if alert.customer_tier is not None:
            item["customer_tier"] = {"S": alert.customer_tier}
        item.update(_provenance(alert))
        return {
            "Put": {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": NO_OPEN_WINDOW,
                "ExpressionAttributeValues": {":cutoff_us": {"N": str(to_us(now - cooldown))}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    async def _take_over(self, alert: Alert, now: datetime) -> Claim | None:
        """PENDING if we now hold the abandoned claim, CHURNED, or None (someone else was faster).
        The take-over writes a new claim token: the old holder can no longer renew or publish it."""
        token = uuid.uuid4().hex
        update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self._table,
                "Key": self._key(alert.customer_id, alert.alert_type.value),
                "UpdateExpression": "SET lease_until_us = :lease_until_us, claimed_at = :claimed_at, "
                f"{PENDING_SHARD} = :shard, claim_token = :token",
                "ConditionExpression": ABANDONED_CLAIM,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":alert_id": {"S": alert.alert_id},
                    ":pending": {"S": "pending"},
                    ":now_us": {"N": str(to_us(now))},
                    ":lease_until_us": {"N": str(to_us(now + self._lease))},
                    ":claimed_at": {"S": iso(now)},
                    ":shard": {"S": shard_of(alert.customer_id, PENDING_SHARDS)},
                    ":token": {"S": token},
                },
            }
        }
        try:
            await self._transact(alert.customer_id, update)
        except _Failed as failed:
            return Claim(ClaimStatus.CHURNED, alert) if failed.churned else None
        return Claim(ClaimStatus.PENDING, alert, token, now + self._lease)

    @property
    def lease_length(self) -> timedelta:
        return self._lease

    async def renew(self, claim: Claim, now: datetime) -> Claim | None:
        if claim.token is None:
            return None
        now = utc(now)
        renewed = await self._update(
            f"renewing the lease of alert {claim.alert.alert_id}",
            Key=self._key(claim.alert.customer_id, claim.alert.alert_type.value),
            UpdateExpression="SET lease_until_us = :lease_until_us",
            ConditionExpression=STILL_OUR_CLAIM,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":token": {"S": claim.token},
                ":pending": {"S": "pending"},
                ":lease_until_us": {"N": str(to_us(now + self._lease))},
            },
        )
        return Claim(claim.status, claim.alert, claim.token, now + self._lease) if renewed else None

    async def _transact(
        self, customer_id: str, write: TransactWriteItemTypeDef, *more: TransactWriteItemTypeDef
    ) -> None:
        """`write` (and `more`) conditional on the customer not having churned, in one transaction."""
        try:
            await self._client.transact_write_items(
                TransactItems=[self._not_churned(customer_id), write, *more]
            )
        except ClientError as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, f"alert ledger table {self._table}") from exc
            if error_code(exc) != "TransactionCanceledException":
                if kind is Failure.INVALID:
                    raise AlertLedgerError(f"claiming an alert in {self._table}: {error_text(exc)}") from exc
                raise _Failed(kind) from None  # throttled, a 5xx: nothing was written
            churn_reason, claim_reason = cancellation_reasons(exc, 2 + len(more))[:2]
            response: Any = exc.response
            reasons = list(response.get("CancellationReasons") or [])
            item = reasons[1].get("Item") if len(reasons) == 2 + len(more) else None
            raise _Failed(
                kind,
                churned=churn_reason in CONDITION_CODES,
                condition_failed=claim_reason in CONDITION_CODES,
                item=item,
            ) from None
        except (BotoCoreError, OSError, TimeoutError):
            raise _Failed(Failure.TRANSIENT, ambiguous=True) from None

    async def _get(self, alert: Alert) -> dict[str, Any] | None:
        try:
            response = await with_retries(
                lambda: self._client.get_item(
                    TableName=self._table,
                    Key=self._key(alert.customer_id, alert.alert_type.value),
                    ConsistentRead=True,
                ),
                resource=f"alert ledger table {self._table}",
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"reading {self._table}: {error_text(exc)}") from exc
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _stored_alert(self, item: dict[str, Any]) -> Alert:
        tier = item.get("customer_tier", {}).get("S")
        try:
            return Alert.from_body(
                json.loads(item["body"]["S"]), datetime.fromisoformat(item["window_start"]["S"]), tier
            )
        except (KeyError, ValueError) as exc:
            raise AlertLedgerError(
                f"{self._table}: unreadable record {item.get('customer_id')}/{item.get('alert_type')}: {exc}"
            ) from exc

    async def _update(self, what: str, condition_ok: bool = True, **kwargs: Any) -> bool:
        """One conditional UpdateItem, retried when throttled or transient. False: the condition
        did not hold (when `condition_ok`, that is an answer, not an error)."""
        try:
            await with_retries(
                lambda: self._client.update_item(TableName=self._table, **kwargs),
                resource=f"alert ledger table {self._table}",
            )
        except ClientError as exc:
            if condition_ok and classify(exc) is Failure.CONDITION_FAILED:
                return False
            raise AlertLedgerError(f"{what} in {self._table}: {error_text(exc)}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"{what} in {self._table}: {error_text(exc)}") from exc
        return True

    async def mark_sent(self, alert: Alert) -> bool:
        values: dict[str, Any] = {":alert_id": {"S": alert.alert_id}, ":sent": {"S": "sent"}}
        update = "SET #status = :sent"
        if alert.created_at is not None:
            values[":sent_at"] = {"S": iso(alert.created_at)}
            update += ", sent_at = :sent_at"
        marked = await self._update(
            f"marking alert {alert.alert_id} sent",
            Key=self._key(alert.customer_id, alert.alert_type.value),
            UpdateExpression=f"{update} REMOVE {PENDING_SHARD}",  # out of the pending index
            ConditionExpression=SAME_CLAIM,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )
        if marked:
            self.sent_windows.remember(alert)
        return marked

    async def release(self, alerts: Sequence[Alert], now: datetime) -> None:
        for alert in alerts:
            await self._update(
                f"releasing alert {alert.alert_id}",
                Key=self._key(alert.customer_id, alert.alert_type.value),
                UpdateExpression="SET lease_until_us = :now_us",
                ConditionExpression=SAME_UNSENT_CLAIM,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":alert_id": {"S": alert.alert_id},
                    ":pending": {"S": "pending"},
                    ":now_us": {"N": str(to_us(utc(now)))},
                },
            )

    async def abandoned(self, now: datetime, limit: int) -> list[Claim]:
        now = utc(now)
        claims: list[Claim] = []
        shards = shard_names(PENDING_SHARDS)
        random.shuffle(shards)  # workers sweeping at once mostly start on different shards
        for shard in shards:
            if len(claims) >= limit:
                break
            response = await with_retries(
                lambda shard=shard: self._client.query(  # type: ignore[misc]
                    TableName=self._table,
                    IndexName=PENDING_INDEX,
                    KeyConditionExpression=f"{PENDING_SHARD} = :shard AND lease_until_us <= :now_us",
                    ExpressionAttributeValues={":shard": {"S": shard}, ":now_us": {"N": str(to_us(now))}},
                    Limit=limit - len(claims),
                ),
                resource=f"alert ledger table {self._table} (index {PENDING_INDEX})",
            )
            for key in response.get("Items", []):
                alert_type = key["alert_type"]["S"]
                item = await self._get_key(key["customer_id"]["S"], alert_type)
                if item is None or item.get("status", {}).get("S") != "pending":
                    continue  # sent or gone since the index was written (it is eventually consistent)
                if int(item["lease_until_us"]["N"]) > to_us(now):
                    continue
                claim = await self._take_over(self._stored_alert(item), now)
                if claim is not None and claim.status is ClaimStatus.CHURNED:
                    await self._drop(claim.alert)
                elif claim is not None:
                    claims.append(claim)
        return claims

    async def _get_key(self, customer_id: str, alert_type: str) -> dict[str, Any] | None:
        response = await with_retries(
            lambda: self._client.get_item(
                TableName=self._table, Key=self._key(customer_id, alert_type), ConsistentRead=True
            ),
            resource=f"alert ledger table {self._table}",
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    async def _drop(self, alert: Alert) -> None:
        """A pending claim of a churned customer leaves the sweep: it will never be sent."""
        await self._update(
            f"dropping alert {alert.alert_id}",
            Key=self._key(alert.customer_id, alert.alert_type.value),
            UpdateExpression=f"REMOVE {PENDING_SHARD}",
            ConditionExpression=SAME_UNSENT_CLAIM,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":alert_id": {"S": alert.alert_id}, ":pending": {"S": "pending"}},
        )

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        self.sent_windows.forget(customer_id)  # its next claims ask DynamoDB, which answers CHURNED
        at = utc(churned_at)
        try:
            await with_retries(
                lambda: self._client.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(customer_id, CHURN_MARKER),
                        "churned_at": {"S": iso(at)},
                        "churned_at_us": {"N": str(to_us(at))},
                    },
                    ConditionExpression=NEWER_CHURN,
                    ExpressionAttributeValues={":churned_at_us": {"N": str(to_us(at))}},
                ),
                resource=f"alert ledger table {self._table}",
            )
        except ClientError as exc:
            if classify(exc) is Failure.CONDITION_FAILED:
                return  # this churn, or a newer one, is recorded already
            raise AlertLedgerError(
                f"recording churn of {customer_id} in {self._table}: {error_text(exc)}"
            ) from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(
                f"recording churn of {customer_id} in {self._table}: {error_text(exc)}"
            ) from exc

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        churned_us, returned_us = return_times(churned_at, signed_up_at)
        await self._update(
            f"recording the return of {customer_id}",
            Key=self._key(customer_id, CHURN_MARKER),
            UpdateExpression="SET churned_at = :churned_at, churned_at_us = :churned_at_us, "
            "returned_at = :returned_at, returned_at_us = :returned_at_us",
            ConditionExpression=NEWER_RETURN,  # else: this return is recorded, or a newer churn is
            ExpressionAttributeValues={
                ":churned_at": {"S": iso(utc(churned_at))},
                ":churned_at_us": {"N": str(churned_us)},
                ":returned_at": {"S": iso(utc(signed_up_at))},
                ":returned_at_us": {"N": str(returned_us)},
            },
        )


async def create_alert_table(client: DynamoDBClient, table: str) -> bool:
    """Create the ledger table with TTL on `expires_at` and the `pending` index, if missing (an
    existing table gets the index). True when the table was created now."""
    return await ensure_table(
        client, table, "customer_id", "alert_type", TTL_ATTRIBUTE, indexes=[PENDING_INDEX_SPEC]
    )
