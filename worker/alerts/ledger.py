"""The alert ledger: which alert of which type each customer was last sent, so cooldowns hold and
nothing is sent twice across redeliveries, crashes and concurrent workers.

An outbox-style claim per (customer, alert type), in table `<prefix>alerts` (PK `customer_id`, SK
`alert_type`; a `#churned` item marks a churned customer):

1. `claim(alert, now, cooldown)` writes, in one transaction conditional on the customer not having
   churned, a `pending` record with the window start (`now`), the alert id and the alert body, if
   there is no record of that type or the previous window has ended (`window_start + cooldown <=
   now`). The result says what to do:
   - NEW: the window is ours; publish `claim.alert` (stamped with the window, hence its id).
   - PENDING: a claim in this window was never marked sent and its lease (`lease`, default 2
     minutes) ran out, i.e. its worker crashed or stalled between claim and `mark_sent`. We now hold
     the lease; re-publish `claim.alert`, the stored alert with the same `alert_id`.
   - IN_FLIGHT: another worker holds a live lease on this window's alert: do not publish. If that
     worker dies the next claim after its lease ends gets PENDING, so a caller that wants no alert
     lost leaves the triggering record for redelivery.
   - SUPPRESSED: this window's alert was sent; nothing to do until the cooldown ends.
   - CHURNED: the customer churned (`record_churn`) and has not signed up again since
     (`record_return`); no alert is sent for them.
2. Publish what was NEW or PENDING, then `mark_sent(alert)`: status `sent`, conditional on the same
   alert id (a later window's claim is never marked by an old publish).

Churn and return. The `#churned` item holds the latest churn's event time and, once the customer
signs up again after it, that sign-up's time. Both writes only ever move forward in event time, so
a redelivered or late event cannot undo a newer one, and they commute: a worker that saw the
return may write it before another worker, still holding the older state, writes the churn it
already covers (the return carries its churn time, and an equal churn time is not newer).

The guarantee. Every alert of one (customer, type, window) has one `alert_id`, and one worker at a
time holds its claim. Redelivered events and concurrent workers alone never produce a second
alert. The only duplicate possible is the same `alert_id` published again after a worker crashed
(or stalled past the lease) between publishing and `mark_sent`. With a FIFO topic
(`MessageDeduplicationId = alert_id`) SNS drops that re-publish when it comes within its 5-minute
deduplication interval of the first (the lease is 2 minutes, so a prompt redelivery does); with a
standard topic, or a later re-publish, consumers dedupe by `alert_id`.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from botocore.exceptions import ClientError

from features.dynamodb import ensure_table
from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import AlertLedgerError
from worker.alerts.rules import Alert, iso

CHURN_MARKER = "#churned"  # sort key of the churned marker; alert types are upper-case names
DEFAULT_LEASE = timedelta(minutes=2)
TTL_ATTRIBUTE = "expires_at"
TTL_SLACK = timedelta(days=30)  # a record outlives its window by this much: room for a longer cooldown later
MAX_ATTEMPTS = 6
MAX_CONCURRENT_CLAIMS = 32
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

# Condition on the claim Put. Only the first claim of a window wins, so two workers (or a
# redelivery) scoring the same customer cannot both start a window and both publish.
NO_OPEN_WINDOW = "attribute_not_exists(customer_id) OR window_start_us <= :cutoff_us"
# ConditionCheck on the `#churned` item in the same transaction as every claim: a churn recorded
# at any time before the claim stops it, with no read-then-write gap, unless a later sign-up is too.
CUSTOMER_NOT_CHURNED = "attribute_not_exists(customer_id) OR returned_at_us > churned_at_us"
# Taking over an unsent claim: only when it is still this window's, still unsent and its holder's
# lease has run out, so exactly one worker re-publishes an abandoned alert, and never a sent one.
ABANDONED_CLAIM = "alert_id = :alert_id AND #status = :pending AND lease_until_us <= :now_us"
# mark_sent: only the claim that was published. A slow worker must not mark a newer window's
# claim as sent, or that window's alert would be lost.
SAME_CLAIM = "alert_id = :alert_id"
# record_churn: only a newer churn replaces the item (and so clears a return older than it); a
# redelivered or late churn event changes nothing.
NEWER_CHURN = "attribute_not_exists(customer_id) OR churned_at_us < :churned_at_us"
# record_return: a sign-up after the recorded churn (or after a newer one than recorded so far).
NEWER_RETURN = (
    "attribute_not_exists(customer_id) OR "
    "(churned_at_us <= :churned_at_us AND (attribute_not_exists(returned_at_us) OR returned_at_us < :returned_at_us))"
)


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

    @property
    def should_publish(self) -> bool:
        return self.status in (ClaimStatus.NEW, ClaimStatus.PENDING)


class AlertLedger(Protocol):
    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim: ...

    async def claim_all(self, alerts: Sequence[Alert], now: datetime, config: AlertsConfig) -> list[Claim]:
        """One claim per alert, in order, each with its type's cooldown from `config`."""
        ...

    async def mark_sent(self, alert: Alert) -> bool:
        """False if the claim is no longer this alert's (a later window replaced it)."""
        ...

    async def mark_all_sent(self, alerts: Sequence[Alert]) -> list[bool]: ...

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        """The customer churned at `churned_at` (the event's time): no alerts until a return."""
        ...

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        """The customer who churned at `churned_at` signed up again at `signed_up_at` (later)."""
        ...


T = TypeVar("T")


async def _gather_limited(coroutines: Sequence[Awaitable[T]]) -> list[T]:
    semaphore = asyncio.Semaphore(MAX_CONCURRENT_CLAIMS)

    async def run(coroutine: Awaitable[T]) -> T:
        async with semaphore:
            return await coroutine

    return list(await asyncio.gather(*(run(c) for c in coroutines)))


class _Batching:
    """claim_all / mark_all_sent on top of claim / mark_sent, concurrently."""

    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim:
        raise NotImplementedError

    async def mark_sent(self, alert: Alert) -> bool:
        raise NotImplementedError

    async def claim_all(self, alerts: Sequence[Alert], now: datetime, config: AlertsConfig) -> list[Claim]:
        return await _gather_limited([self.claim(a, now, config.cooldown(a.alert_type)) for a in alerts])

    async def mark_all_sent(self, alerts: Sequence[Alert]) -> list[bool]:
        return await _gather_limited([self.mark_sent(a) for a in alerts])


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return moment.astimezone(UTC)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


@dataclass
class _Record:
    alert: Alert
    sent: bool
    lease_until: datetime


@dataclass
class MemoryAlertLedger(_Batching):
    """The in-memory twin, same semantics (one process: backtests and tests)."""

    lease: timedelta = DEFAULT_LEASE
    records: dict[tuple[str, str], _Record] = field(default_factory=dict)
    # customer -> (churned_at_us, returned_at_us or None): the `#churned` item
    churned: dict[str, tuple[int, int | None]] = field(default_factory=dict)

    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim:
        now = _utc(now)
        marker = self.churned.get(alert.customer_id)
        if marker is not None and not (marker[1] is not None and marker[1] > marker[0]):
            return Claim(ClaimStatus.CHURNED, alert)
        key = (alert.customer_id, alert.alert_type.value)
        record = self.records.get(key)
        if record is None or record.alert.window_start is None or record.alert.window_start + cooldown <= now:
            fresh = alert.with_window(now)
            self.records[key] = _Record(fresh, sent=False, lease_until=now + self.lease)
            return Claim(ClaimStatus.NEW, fresh)
        if record.sent:
            return Claim(ClaimStatus.SUPPRESSED, record.alert)
        if record.lease_until > now:
            return Claim(ClaimStatus.IN_FLIGHT, record.alert)
        record.lease_until = now + self.lease
        return Claim(ClaimStatus.PENDING, record.alert)

    async def mark_sent(self, alert: Alert) -> bool:
        record = self.records.get((alert.customer_id, alert.alert_type.value))
        if record is None or record.alert.alert_id != alert.alert_id:
            return False
        record.sent = True
        return True

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        churned_us = _us(_utc(churned_at))
        marker = self.churned.get(customer_id)
        if marker is None or marker[0] < churned_us:  # NEWER_CHURN
            self.churned[customer_id] = (churned_us, None)

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        churned_us, returned_us = _return_times(churned_at, signed_up_at)
        marker = self.churned.get(customer_id)
        if marker is None or (marker[0] <= churned_us and (marker[1] is None or marker[1] < returned_us)):  # NEWER_RETURN
            self.churned[customer_id] = (churned_us, returned_us)


def _return_times(churned_at: datetime, signed_up_at: datetime) -> tuple[int, int]:
    churned_us, returned_us = _us(_utc(churned_at)), _us(_utc(signed_up_at))
    if returned_us <= churned_us:
        raise ValueError("a return is a sign-up after the churn")
    return churned_us, returned_us


def alert_table_name(prefix: str) -> str:
    return f"{prefix}alerts"


class _Cancelled(Exception):
    """A claim transaction was cancelled: why, and the alert record as it was (if DynamoDB said)."""

    def __init__(self, churned: bool, condition_failed: bool, item: dict[str, Any] | None) -> None:
        super().__init__("transaction cancelled")
        self.churned = churned
        self.condition_failed = condition_failed
        self.item = item


class DynamoDBAlertLedger(_Batching):
    """The ledger on one DynamoDB table; `client` is an open aiobotocore DynamoDB client."""

    def __init__(self, client: Any, table: str, lease: timedelta = DEFAULT_LEASE) -> None:
        self._client = client
        self._table = table
        self._lease = lease

    def _key(self, customer_id: str, sort_key: str) -> dict[str, Any]:
        return {"customer_id": {"S": customer_id}, "alert_type": {"S": sort_key}}

    def _not_churned(self, customer_id: str) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": self._key(customer_id, CHURN_MARKER),
                "ConditionExpression": CUSTOMER_NOT_CHURNED,
            }
        }

    async def claim(self, alert: Alert, now: datetime, cooldown: timedelta) -> Claim:
        now = _utc(now)
        for attempt in range(MAX_ATTEMPTS):
            fresh = alert.with_window(now)
            try:
                await self._transact(alert.customer_id, self._claim_put(fresh, now, cooldown))
                return Claim(ClaimStatus.NEW, fresh)
            except _Cancelled as cancelled:
                if cancelled.churned:
                    return Claim(ClaimStatus.CHURNED, alert)
                item = cancelled.item
                if item is None and cancelled.condition_failed:
                    item = await self._get(alert)
            if item is not None and int(item["window_start_us"]["N"]) > _us(now - cooldown):
                stored = self._stored_alert(item)
                if item["status"]["S"] == "sent":
                    return Claim(ClaimStatus.SUPPRESSED, stored)
                if int(item["lease_until_us"]["N"]) > _us(now):
                    return Claim(ClaimStatus.IN_FLIGHT, stored)
                try:
                    await self._transact(alert.customer_id, self._take_over(stored, now))
                    return Claim(ClaimStatus.PENDING, stored)
                except _Cancelled as cancelled:
                    if cancelled.churned:
                        return Claim(ClaimStatus.CHURNED, alert)
            # Lost a race (taken over, sent, replaced or a transaction conflict): look again.
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AlertLedgerError(
            f"{alert.alert_type} for customer {alert.customer_id}: {MAX_ATTEMPTS} conflicting claims in a row "
            f"on {self._table}; will retry later"
        )

    def _claim_put(self, alert: Alert, now: datetime, cooldown: timedelta) -> dict[str, Any]:
        assert alert.window_start is not None
        expires = alert.window_start + cooldown + TTL_SLACK
        item: dict[str, Any] = {
            **self._key(alert.customer_id, alert.alert_type.value),
            "alert_id": {"S": alert.alert_id},
            "window_start": {"S": iso(alert.window_start)},
            "window_start_us": {"N": str(_us(alert.window_start))},
            "status": {"S": "pending"},
            "lease_until_us": {"N": str(_us(now + self._lease))},
            "claimed_at": {"S": iso(now)},
            "body": {"S": json.dumps(alert.body())},
            TTL_ATTRIBUTE: {"N": str(_us(expires) // 1_000_000)},
        }
        if alert.customer_tier is not None:
            item["customer_tier"] = {"S": alert.customer_tier}
        return {
            "Put": {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": NO_OPEN_WINDOW,
                "ExpressionAttributeValues": {":cutoff_us": {"N": str(_us(now - cooldown))}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def _take_over(self, alert: Alert, now: datetime) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(alert.customer_id, alert.alert_type.value),
                "UpdateExpression": "SET lease_until_us = :lease_until_us, claimed_at = :claimed_at",
                "ConditionExpression": ABANDONED_CLAIM,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":alert_id": {"S": alert.alert_id},
                    ":pending": {"S": "pending"},
                    ":now_us": {"N": str(_us(now))},
                    ":lease_until_us": {"N": str(_us(now + self._lease))},
                    ":claimed_at": {"S": iso(now)},
                },
            }
        }

    async def _transact(self, customer_id: str, write: dict[str, Any]) -> None:
        try:
            await self._client.transact_write_items(TransactItems=[self._not_churned(customer_id), write])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise AlertLedgerError(f"claiming an alert in {self._table}: {_error_text(exc)}") from exc
            response: Any = exc.response  # CancellationReasons: one per transaction item
            reasons: list[dict[str, Any]] = list(response.get("CancellationReasons") or [])
            if len(reasons) != 2:
                reasons = _reasons_from_message(str(exc.response.get("Error", {}).get("Message", "")))
            churn_reason, claim_reason = reasons
            raise _Cancelled(
                churned=churn_reason.get("Code") == "ConditionalCheckFailed",
                condition_failed=claim_reason.get("Code") == "ConditionalCheckFailed",
                item=claim_reason.get("Item"),
            ) from None

    async def _get(self, alert: Alert) -> dict[str, Any] | None:
        try:
            response = await self._client.get_item(
                TableName=self._table,
                Key=self._key(alert.customer_id, alert.alert_type.value),
                ConsistentRead=True,
            )
        except ClientError as exc:
            raise AlertLedgerError(f"reading {self._table}: {_error_text(exc)}") from exc
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

    async def mark_sent(self, alert: Alert) -> bool:
        values: dict[str, Any] = {":alert_id": {"S": alert.alert_id}, ":sent": {"S": "sent"}}
        update = "SET #status = :sent"
        if alert.created_at is not None:
            values[":sent_at"] = {"S": iso(alert.created_at)}
            update += ", sent_at = :sent_at"
        try:
            await self._client.update_item(
                TableName=self._table,
                Key=self._key(alert.customer_id, alert.alert_type.value),
                UpdateExpression=update,
                ConditionExpression=SAME_CLAIM,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise AlertLedgerError(
                f"marking alert {alert.alert_id} sent in {self._table}: {_error_text(exc)}"
            ) from exc
        return True

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        at = _utc(churned_at)
        try:
            await self._client.put_item(
                TableName=self._table,
                Item={
                    **self._key(customer_id, CHURN_MARKER),
                    "churned_at": {"S": iso(at)},
                    "churned_at_us": {"N": str(_us(at))},
                },
                ConditionExpression=NEWER_CHURN,
                ExpressionAttributeValues={":churned_at_us": {"N": str(_us(at))}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return  # this churn, or a newer one, is recorded already
            raise AlertLedgerError(
                f"recording churn of {customer_id} in {self._table}: {_error_text(exc)}"
            ) from exc

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        churned_us, returned_us = _return_times(churned_at, signed_up_at)
        try:
            await self._client.update_item(
                TableName=self._table,
                Key=self._key(customer_id, CHURN_MARKER),
                UpdateExpression="SET churned_at = :churned_at, churned_at_us = :churned_at_us, "
                "returned_at = :returned_at, returned_at_us = :returned_at_us",
                ConditionExpression=NEWER_RETURN,
                ExpressionAttributeValues={
                    ":churned_at": {"S": iso(_utc(churned_at))},
                    ":churned_at_us": {"N": str(churned_us)},
                    ":returned_at": {"S": iso(_utc(signed_up_at))},
                    ":returned_at_us": {"N": str(returned_us)},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return  # this return is recorded, or a newer churn is
            raise AlertLedgerError(
                f"recording the return of {customer_id} in {self._table}: {_error_text(exc)}"
            ) from exc


def _reasons_from_message(message: str) -> list[dict[str, Any]]:
    """`... reasons [ConditionalCheckFailed, None]`: the codes when the response carries no list."""
    codes = message.rsplit("[", 1)[-1].rstrip("]").split(",") if "[" in message else []
    reasons = [{"Code": code.strip()} for code in codes]
    return reasons if len(reasons) == 2 else [{"Code": "Unknown"}, {"Code": "Unknown"}]


def _error_text(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'Error')}: {error.get('Message', '')}"


async def create_alert_table(client: Any, table: str) -> bool:
    """Create the ledger table with TTL on `expires_at`, if missing. True when it was created now."""
    return await ensure_table(client, table, "customer_id", "alert_type", TTL_ATTRIBUTE)
