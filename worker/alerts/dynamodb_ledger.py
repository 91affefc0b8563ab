"""The alert ledger on DynamoDB (aiobotocore). The rules are `worker.alerts.claims`'.

Table `<prefix>alerts`: PK `customer_id`, SK `alert_type` (or `#churned`), TTL on `expires_at`.
Sparse index `pending` (PK `pending_shard` S, SK `lease_until_us` N, keys only): unsent claims,
so `abandoned` finds the claims whose lease ran out with a Query per shard, never a Scan. A claim
puts itself in it; `mark_sent` takes it out. Every write is conditional; the conditions are named
below with why each exists. A batch's claims share one transaction (`claim_all`); a churn or a
return is one transaction of the `#churned` item and its stamps on the customer's claim items
(CHURN STAMPS); any other single-item change (a renewal, a release) is a conditional
`UpdateItem`/`PutItem`, never a transaction; a batch's sent marks are conditional PartiQL UPDATEs, 25 to a
`BatchExecuteStatement` (`mark_all_sent`), each asked again as the UpdateItem when it fails. The
claim item's `body` is deflated JSON (binary; `encode_body`), text in items written before.

Items besides the claims (PK, SK):
- `<customer>`, `#churned`: the customer's latest churn (`churned_at_us`) and return
  (`returned_at_us`); the same two attributes are stamped on each of its claim items (an item
  holding only them where no alert of that type was claimed yet). No TTL.
- `#ledger`, `format`: `churn_stamps` = 1 once every churn recorded is stamped (CHURN STAMPS).
- `#budget#<YYYY-MM-DD>`, `<budget>`: the units a budget's UTC day gave out (`count`, moved in the
  claims' transactions under `BUDGET_LEFT`) and its `max_per_day`; `#budget#<day>`,
  `<budget>#<TYPE>#<shard 00..03>`: the `deferred` counters (sharded by customer, like the
  outcome counters). TTL `STATS_KEEP_DAYS`.
- `#deferred#<YYYY-MM-DD>`, `<customer>#<TYPE>`: a deferred alert (its body, budget, expected value),
  once per customer, type and day (`NOT_YET_DEFERRED`); for `alerts report`. TTL 35 days.
- An open lifecycle alert that went out waits in the same index under shards `r00`..`r03`, sorted by
  its resolution deadline (`lease_until_us`, which a sent item no longer needs for its lease).
"""

from __future__ import annotations

import random
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from features.state import from_us, to_us
from plumbing.retry import (
    CONDITION_CODES,
    Failure,
    backoff,
    cancellation_reasons,
    classify,
    error_code,
    error_text,
    fatal_error,
    gather_limited,
    with_retries,
)
from plumbing.tables import IndexSpec, ensure_table, shard_names, shard_of, update_statement
from worker.alerts.alert_outcomes import STATS_KEEP_DAYS, OutcomeStats, RecordKey, Resolution
from worker.alerts.budgets import BudgetsConfig, BudgetSlot, slot_for
from worker.alerts.claims import (
    CHURN_MARKER,
    DEFAULT_LEASE,
    MAX_CONCURRENT_CLAIMS,
    Batching,
    Claim,
    ClaimStatus,
    return_times,
    under_budget,
    utc,
)
from worker.alerts.config import AlertsConfig
from worker.alerts.dynamodb_alert_outcomes import (
    DynamoDBOutcomes,
    decode_body,
    encode_body,
    outcome_shard,
    record_put,
    stats_counter_key,
)
from worker.alerts.exceptions import AlertLedgerError
from worker.alerts.lifecycle import (
    DEADLINE_FACTOR,
    escalation_of,
    heartbeat_due,
    resolution_of,
    resolve_deadline,
)
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

RESOLUTION_SHARD_PREFIX = "r"  # open lifecycle alerts that went out: shards r00..r03, by deadline
BUDGET_PREFIX = "#budget#"  # partition of a day's budget counters: #budget#<YYYY-MM-DD>
DEFERRED_PREFIX = "#deferred#"  # partition of a day's deferred alerts: #deferred#<YYYY-MM-DD>
DEFERRED_KEEP = timedelta(days=35)

# Condition on the claim Put. Only the first claim of a window wins, so two workers (or a
# redelivery) scoring the same customer cannot both start a window and both publish. A window is
# over when its cooldown has passed (an item claimed without a lifecycle: no `resolve_after_us`),
# or when its alert's resolution went out (an item claimed with one): a lifecycle alert re-fires on
# a new crossing after its resolution, never on cooldown expiry.
NO_OPEN_WINDOW = (
    "attribute_not_exists(alert_id) OR "
    "(attribute_not_exists(resolve_after_us) AND window_start_us <= :cutoff_us) OR "
    "(lifecycle = :resolved AND #status = :sent)"
)
# ... and the customer not churned, as stamped on the claim item itself (CHURN STAMPS below): a
# churn, or a churn with a return at or after it, copied from the `#churned` item onto each of the
# customer's claim items in the same transaction that records it. No stamp: never churned (or the
# item was claimed again after a return, which dropped the stamps it no longer needed).
NOT_CHURNED_HERE = "(attribute_not_exists(churned_at_us) OR returned_at_us >= churned_at_us)"
CLAIMABLE = f"{NOT_CHURNED_HERE} AND ({NO_OPEN_WINDOW})"
# Update of the budget's day counter, in the same transaction as a claim that opens a window: the
# count only ever moves below the cap, so however many workers claim at once (and whatever they
# retry or redeliver: the claim and its unit are one transaction) a day never lets out more than
# `max_per_day` alerts of the budget, and every alert that opened took exactly one unit.
BUDGET_LEFT = "attribute_not_exists(#count) OR #count < :max"
# Put of a deferral record: once per (customer, type, day), so a redelivered batch, a second worker
# or the next sweep deferring the same alert again does not count it twice.
NOT_YET_DEFERRED = "attribute_not_exists(customer_id)"
# Escalating: only an alert whose opening went out and that was never escalated (nor opened
# beyond its escalation threshold): two workers seeing the crossing escalate it once.
ESCALATABLE = (
    "alert_id = :alert_id AND #status = :sent AND "
    "(attribute_not_exists(lifecycle) OR lifecycle = :open) AND "
    "(attribute_not_exists(escalated) OR escalated = :false)"
)
# The heartbeat of a lifecycle alert still firing: only while it is open (or escalated) and sent;
# a resolution or a new window in between is left alone.
STILL_OPEN = (
    "alert_id = :alert_id AND #status = :sent AND lifecycle IN (:open, :escalated) AND "
    "attribute_exists(resolve_after_us)"
)
# Resolving: only an open (or escalated) lifecycle alert that went out and whose deadline is past
# (no heartbeat moved it meanwhile), so exactly one worker resolves it, and never one still firing.
RESOLVABLE = f"{STILL_OPEN} AND lease_until_us <= :now_us"
# ConditionCheck on the `#churned` item in the same transaction as a take-over, an escalation, a
# resolution, and every claim on a table whose churns are not all stamped yet (CHURN STAMPS below;
# on one whose are, CLAIMABLE says the same on the claim item): a churn recorded at any time before
# the claim stops it, with no read-then-write gap, unless a sign-up at or after it is recorded too
# (a churn and a sign-up at the same instant: the customer is back).
CUSTOMER_NOT_CHURNED = "attribute_not_exists(customer_id) OR returned_at_us >= churned_at_us"
# Taking over an unsent claim: only when it is still this window's, still unsent and its holder's
# lease has run out, so exactly one worker re-publishes an abandoned alert, and never a sent one.
ABANDONED_CLAIM = "alert_id = :alert_id AND #status = :pending AND lease_until_us <= :now_us"
# mark_sent: only the claim that was published. A slow worker must not mark a newer window's
# claim as sent, or that window's alert would be lost.
SAME_CLAIM = "alert_id = :alert_id"
# ... and only the message that was published: the opening, its escalation and its resolution share
# the alert id, and a slow worker that published the opening must not mark the escalation sent.
# (Items written before the lifecycle existed have no `lifecycle`: their message is the opening.)
SAME_OPENING = f"{SAME_CLAIM} AND (attribute_not_exists(lifecycle) OR lifecycle = :lifecycle)"
SAME_MESSAGE = f"{SAME_CLAIM} AND lifecycle = :lifecycle"
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


# CHURN STAMPS. A churn (and a return) is written onto each of the customer's claim items (one per
# alert type; an item not there yet is created holding only the stamp) in the transaction that
# records the `#churned` item, so a claim's own condition (CLAIMABLE) refuses a churned customer and
# its transaction needs no ConditionCheck on the `#churned` item (2 write units in a transaction,
# once per customer and batch). A churned customer's claim items lose their TTL with the stamp: they
# must say "churned" as long as the `#churned` item does, which has none.
# Tables written before stamps hold `#churned` items that no claim item mirrors: until the table's
# format item (FORMAT_KEY) says every churn is stamped, claims keep the ConditionCheck. A table
# created by this version (`create_alert_table`), or one the template made at most YOUNG_TABLE
# before the worker started (no earlier version wrote to it), gets the format item at once; an older
# one waits for `churn-worker alerts stamp-churns` (`stamp_churns`: a Scan, which the worker's role
# is not granted), run once every worker runs this version. Meanwhile `upkeep` looks at the format
# item a minute apart. A stamp copies a churn as the `#churned` item holds it, conditional on that
# item being unchanged: a newer churn or a return recorded meanwhile stamped itself.
FORMAT_KEY = ("#ledger", "format")  # (PK, SK) of the table's format item: `churn_stamps` = 1
YOUNG_TABLE = timedelta(minutes=15)
FORMAT_LOOK_EVERY_S = 60.0  # how often a ledger that does not trust stamps yet looks again
KNOWN_CHURNS = 50_000  # churns (and returns) this process knows recorded, not sent again; oldest out first
STAMP_SCAN_PAGE = 500  # items a backfill page reads (most are claims and records, not churns)
# The backfill's stamp: only while the `#churned` item still holds the churn (and return) it read.
UNCHANGED_CHURN = "churned_at_us = :churned_at_us AND attribute_not_exists(returned_at_us)"
UNCHANGED_RETURN = "churned_at_us = :churned_at_us AND returned_at_us = :returned_at_us"


def stamped_churned(item: dict[str, Any]) -> bool:
    """NOT_CHURNED_HERE, negated, on a claim item as read."""
    if "churned_at_us" not in item:
        return False
    returned = item.get("returned_at_us", {}).get("N")
    return returned is None or int(returned) < int(item["churned_at_us"]["N"])


# Claims sharing one transaction: 3 items each at most (a customer's check, the claim, its record),
# inside TransactWriteItems' 100; fewer keeps a refusal's blast radius (the re-sent rest) small.
CLAIMS_PER_TRANSACTION = 25
# Sent marks sharing one BatchExecuteStatement: its limit.
MARKS_PER_REQUEST = 25


def _claim_groups(
    claims: list[tuple[int, Alert, timedelta, timedelta | None]],
) -> list[list[tuple[int, Alert, timedelta, timedelta | None]]]:
    """Claims in transactions of up to CLAIMS_PER_TRANSACTION, a customer's claims in one (they
    share its not-churned check: a transaction may name an item only once)."""
    by_customer: dict[str, list[tuple[int, Alert, timedelta, timedelta | None]]] = {}
    for claim in claims:
        by_customer.setdefault(claim[1].customer_id, []).append(claim)
    groups: list[list[tuple[int, Alert, timedelta, timedelta | None]]] = [[]]
    for mine in by_customer.values():
        if groups[-1] and len(groups[-1]) + len(mine) > CLAIMS_PER_TRANSACTION:
            groups.append([])
        groups[-1].extend(mine)
    return [group for group in groups if group]


def alert_table_name(prefix: str) -> str:
    return f"{prefix}alerts"


def _window_open(item: dict[str, Any], now: datetime, cooldown: timedelta) -> bool:
    """NO_OPEN_WINDOW, negated, on an item as read (an item holding only churn stamps: none)."""
    if "alert_id" not in item:
        return False
    if "resolve_after_us" in item:
        return not (item.get("lifecycle", {}).get("S") == "resolved" and item["status"]["S"] == "sent")
    return int(item["window_start_us"]["N"]) > to_us(now - cooldown)


def _window_start(item: dict[str, Any]) -> datetime:
    """A claim item's window start: `window_start_us` (items written before also hold it as text)."""
    return from_us(int(item["window_start_us"]["N"]))


def _day_expiry(day: str, keep: timedelta) -> int:
    start = datetime.fromisoformat(f"{day}T00:00:00+00:00")
    return int((start + keep).timestamp())


def log_warning(message: str) -> None:
    structlog.get_logger(__name__).warning(message)


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
        over_budget: bool = False,
    ) -> None:
        super().__init__(kind.value)
        self.kind = kind
        self.churned = churned
        self.condition_failed = condition_failed
        self.item = item
        self.ambiguous = ambiguous  # no answer: the write may have been applied
        self.over_budget = over_budget  # the budget's day is spent (BUDGET_LEFT failed)


class SentWindows:
    """The windows this process knows were sent, per (customer, alert type): a claim inside one of
    them is SUPPRESSED without a request. Most claims are of customers scored again inside their
    cooldown (every event scores its customer), and each would cost a cancelled transaction.

    Safe because a sent window is final until it ends: NO_OPEN_WINDOW lets no claim replace it, the
    take-over and release touch pending claims only, and TTL deletes the record 30 days after its
    window. Only what DynamoDB answered goes in (a claim found sent, our own mark_sent that held).
    One difference: a claim that DynamoDB would answer CHURNED (the customer churned inside the
    window) is SUPPRESSED here; neither publishes. Bounded: the least recently used go first.
    Escalations and heartbeats still happen on a window known here (`_settled`); one that fails its
    condition (another worker moved the alert on) drops the entry.
    A lifecycle alert (`resolve_after_s`) is known open until its last known firing + R: nobody can
    resolve it sooner (RESOLVABLE needs its deadline, at least that far, to have passed). A resolved
    one is not kept: the next claim opens a new window, which DynamoDB decides."""

    def __init__(self, size: int = 50_000) -> None:
        self._size = size
        self._windows: OrderedDict[tuple[str, str], tuple[int, Alert]] = OrderedDict()

    def remember(self, alert: Alert) -> None:
        if alert.window_start is None:
            return
        key = (alert.customer_id, alert.alert_type.value)
        if alert.status == "resolved":
            self._windows.pop(key, None)
            return
        self._windows[key] = (to_us(alert.window_start), alert)
        self._windows.move_to_end(key)
        while len(self._windows) > self._size:
            self._windows.popitem(last=False)

    def forget(self, customer_id: str) -> None:
        for alert_type in AlertType:
            self._windows.pop((customer_id, alert_type.value), None)

    def forget_alert(self, alert: Alert) -> None:
        self._windows.pop((alert.customer_id, alert.alert_type.value), None)

    def sent_inside(self, alert: Alert, now: datetime, cooldown: timedelta) -> Alert | None:
        """The stored alert of a window known sent that is still open at `now`, else None."""
        key = (alert.customer_id, alert.alert_type.value)
        known = self._windows.get(key)
        if known is None:
            return None
        stored = known[1]
        if stored.resolve_after_s is not None:
            seen = stored.last_firing_at or stored.window_start or stored.as_of
            over = now >= seen + timedelta(seconds=stored.resolve_after_s)
        else:
            over = known[0] <= to_us(now - cooldown)
        if over:  # over (or no longer known open): the next claim asks DynamoDB
            del self._windows[key]
            return None
        self._windows.move_to_end(key)
        return stored


def _remember(memo: OrderedDict[str, Any], customer_id: str, value: Any) -> None:
    """Keep what this process knows it recorded for a customer, the oldest forgotten first."""
    memo[customer_id] = value
    while len(memo) > KNOWN_CHURNS:
        memo.popitem(last=False)


class DynamoDBAlertLedger(Batching):
    """The ledger on one DynamoDB table; `client` is an open aiobotocore DynamoDB client."""

    def __init__(self, client: DynamoDBClient, table: str, lease: timedelta = DEFAULT_LEASE) -> None:
        self._client = client
        self._table = table
        self._lease = lease
        self.outcomes = DynamoDBOutcomes(client, table)  # alert records, outcomes, counters
        self.sent_windows = SentWindows()
        # CHURN STAMPS: whether claims may leave the `#churned` ConditionCheck out (the format item
        # says so), when to look again, and where the backfill's Scan goes on.
        self.stamps_trusted = False
        self._format_read = False
        self._next_look = 0.0
        self._started_wall = datetime.now(UTC)
        self._table_young: bool | None = None
        self._said_unstamped = False
        self._churns_recorded: OrderedDict[str, int] = OrderedDict()  # customer -> churn known recorded
        self._returns_recorded: OrderedDict[str, tuple[int, int]] = OrderedDict()  # -> (churn, return)

    async def confirm_churn(self, customer_id: str, churned_at: datetime) -> list[Resolution]:
        return await self.outcomes.confirm_churn(customer_id, churned_at)

    async def expire_outcomes(self, now: datetime, limit: int) -> list[Resolution]:
        return await self.outcomes.expire_due(now, limit)

    async def outcome_stats(self, since: date, until: date) -> OutcomeStats:
        stats = await self.outcomes.stats(since, until)
        await self.outcomes.budget_stats(stats, BUDGET_PREFIX)
        return stats

    async def open_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """The latest message of every alert of `since` .. `until` whose outcome is still open
        (their records in the `pending` index, then their claim items by key), most at risk first."""
        return await self.outcomes.open_alerts(since, until, limit)

    async def deferred_alerts(self, since: date, until: date, limit: int) -> list[dict[str, Any]]:
        """Deferred alerts of the UTC days `since` .. `until`: one Query per day."""
        return await self.outcomes.deferred_alerts(since, until, limit, DEFERRED_PREFIX)

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

    async def claim_all(
        self,
        alerts: Sequence[Alert],
        now: datetime,
        config: AlertsConfig,
        budgets: BudgetsConfig | None = None,
    ) -> list[Claim]:
        """One claim per alert, in order. The alerts without a budget whose window this process
        does not know sent are claimed together: one TransactWriteItems for up to
        CLAIMS_PER_TRANSACTION of them (each customer's not-churned check once, then each claim
        and its record), instead of one per alert. A transaction is all or nothing, so a claim
        that cannot open its window (a window open, the customer churned) cancels it for the
        others: DynamoDB says item by item why, those claims go the one-by-one way of `claim`
        (which finds out what is there), and the others are sent together again. A conflict or
        throttling retries the batch; no answer (it may have been applied) sends every claim of
        it the one-by-one way with the token it was sent with, so one that went through is found
        to be ours. Budgeted alerts and windows known sent take `claim`'s path."""
        now = utc(now)
        results: list[Claim | None] = [None] * len(alerts)
        together: list[tuple[int, Alert, timedelta, timedelta | None]] = []
        alone: list[int] = []
        seen: set[tuple[str, str]] = set()
        for i, alert in enumerate(alerts):
            tier = alert.customer_tier
            cooldown = config.cooldown(alert.alert_type, tier)
            key = (alert.customer_id, alert.alert_type.value)
            if (
                slot_for(budgets, alert.alert_type.value, tier, now) is not None
                or key in seen
                or self.sent_windows.sent_inside(alert, now, cooldown) is not None
            ):
                alone.append(i)
                continue
            seen.add(key)
            together.append((i, alert, cooldown, config.resolve_after(alert.alert_type, tier)))
        if len(together) < 2:  # nothing to share a transaction with
            alone += [i for i, *_ in together]
            together = []
        if alone:
            for i, claim in zip(
                sorted(alone),
                await super().claim_all([alerts[i] for i in sorted(alone)], now, config, budgets),
                strict=True,
            ):
                results[i] = claim
        one_by_one: list[tuple[int, Alert, timedelta, timedelta | None, str]] = []
        check = await self._needs_churn_check() if together else True
        tokens = {i: uuid.uuid4().hex for i, *_ in together}
        fresh = {i: self._fresh(alert, now, resolve_after) for i, alert, _, resolve_after in together}
        pending = together
        for attempt in range(MAX_ATTEMPTS):
            if not pending:
                break
            groups = _claim_groups(pending)
            outcomes = await gather_limited(
                [
                    self._claim_together(
                        [
                            (fresh[i], cooldown, tokens[i], alert.escalating)
                            for i, alert, cooldown, _ in group
                        ],
                        now,
                        check,
                    )
                    for group in groups
                ],
                MAX_CONCURRENT_CLAIMS,
            )
            retry: list[tuple[int, Alert, timedelta, timedelta | None]] = []
            for group, outcome in zip(groups, outcomes, strict=True):
                for (i, alert, cooldown, resolve_after), answer in zip(group, outcome, strict=True):
                    if answer == "new":
                        results[i] = Claim(ClaimStatus.NEW, fresh[i], tokens[i], now + self._lease)
                    elif answer == "retry":
                        retry.append((i, alert, cooldown, resolve_after))
                    else:  # "alone": refused (a window open, churned) or no answer
                        one_by_one.append((i, alert, cooldown, resolve_after, tokens[i]))
            pending = retry
            if pending:
                await backoff(attempt, 0.05)
        one_by_one += [(i, alert, cooldown, after, tokens[i]) for i, alert, cooldown, after in pending]
        claims = await gather_limited(
            [
                self._claim(alert, now, cooldown, resolve_after=after, budget=None, token=token)
                for _, alert, cooldown, after, token in one_by_one
            ],
            MAX_CONCURRENT_CLAIMS,
        )
        for (i, *_), claim in zip(one_by_one, claims, strict=True):
            results[i] = claim
        return [claim for claim in results if claim is not None]

    async def _claim_together(
        self, claims: list[tuple[Alert, timedelta, str, bool]], now: datetime, check: bool = True
    ) -> list[str]:
        """One transaction of several claims (with `check`, each customer's not-churned check once;
        then each claim and its record): "new" for each if it went through; else per claim "alone"
        (its own condition or its customer's check failed, or no answer) or "retry" (cancelled by
        another's refusal, a conflict or throttling)."""
        items: list[TransactWriteItemTypeDef] = []
        check_at: dict[str, int] = {}
        where: list[tuple[int | None, int]] = []  # per claim: (its customer's check, its claim Put)
        for alert, *_ in claims:
            if check and alert.customer_id not in check_at:
                check_at[alert.customer_id] = len(items)
                items.append(self._not_churned(alert.customer_id))
        for alert, cooldown, token, escalated in claims:
            where.append((check_at.get(alert.customer_id), len(items)))
            items.append(self._claim_put(alert, now, cooldown, token, escalated))
            items.append(record_put(self._table, alert, _provenance(alert)))
        try:
            await self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, f"alert ledger table {self._table}") from exc
            if error_code(exc) != "TransactionCanceledException":
                if kind is Failure.INVALID:
                    raise AlertLedgerError(f"claiming alerts in {self._table}: {error_text(exc)}") from exc
                return ["retry"] * len(claims)  # throttled, a 5xx: nothing was written
            reasons = cancellation_reasons(exc, len(items))
            return [
                "alone"
                if reasons[put] in CONDITION_CODES or (at is not None and reasons[at] in CONDITION_CODES)
                else "retry"
                for at, put in where
            ]
        except (BotoCoreError, OSError, TimeoutError):
            return ["alone"] * len(claims)  # no answer: it may have gone through; each finds out
        return ["new"] * len(claims)

    def _fresh(self, alert: Alert, now: datetime, resolve_after: timedelta | None) -> Alert:
        """The alert as a new claim opens its window at `now`."""
        return alert.with_window(now).model_copy(
            update={
                "escalating": False,
                "escalation_note": None,
                "last_firing_at": now,
                "resolve_after_s": None if resolve_after is None else resolve_after.total_seconds(),
            }
        )

    async def claim(
        self,
        alert: Alert,
        now: datetime,
        cooldown: timedelta,
        *,
        resolve_after: timedelta | None = None,
        budget: BudgetSlot | None = None,
    ) -> Claim:
        return await self._claim(alert, now, cooldown, resolve_after=resolve_after, budget=budget)

    async def _claim(
        self,
        alert: Alert,
        now: datetime,
        cooldown: timedelta,
        *,
        resolve_after: timedelta | None = None,
        budget: BudgetSlot | None = None,
        token: str | None = None,
    ) -> Claim:
        """`claim`; `token`: the one an earlier attempt (a batch with no answer) was sent with."""
        now = utc(now)
        alert = under_budget(alert, budget)
        sent = self.sent_windows.sent_inside(alert, now, cooldown)
        if sent is not None:
            return await self._settled(sent, alert, now)
        token = token or uuid.uuid4().hex  # tells our own claim apart when its answer was lost
        check = await self._needs_churn_check()
        for attempt in range(MAX_ATTEMPTS):
            fresh = self._fresh(alert, now, resolve_after)
            more = [record_put(self._table, fresh, _provenance(fresh))]
            if budget is not None and budget.max_per_day <= 0:  # a closed budget: nothing to take
                item = await self._get(alert)
                if item is None or not _window_open(item, now, cooldown):
                    await self._defer(alert, budget, now)
                    return Claim(ClaimStatus.DEFERRED, alert)
                budget = None  # a window is open: no unit would be taken anyway
            if budget is not None:
                more.append(self._budget_unit(budget))
            try:
                # The claim, its alert record (worker/alerts/dynamodb_alert_outcomes.py) and its
                # budget unit, in one transaction.
                await self._transact(
                    alert.customer_id,
                    self._claim_put(fresh, now, cooldown, token, alert.escalating),
                    *more,
                    budgeted=budget is not None,
                    check=check,
                )
                return Claim(ClaimStatus.NEW, fresh, token, now + self._lease)
            except _Failed as failed:
                if failed.churned:
                    return Claim(ClaimStatus.CHURNED, alert)
                if budget is not None and failed.over_budget and not failed.condition_failed:
                    await self._defer(alert, budget, now)
                    return Claim(ClaimStatus.DEFERRED, alert)
                if not (failed.condition_failed or failed.ambiguous):  # throttled, a conflict, a 5xx
                    await backoff(attempt, 0.05 if failed.kind is Failure.CONFLICT else 0.2)
                    continue
                item = failed.item if failed.item is not None else await self._get(alert)
            if item is not None and _window_open(item, now, cooldown):
                stored = self._stored_alert(item)
                if item.get("claim_token", {}).get("S") == token:  # ours: an earlier attempt went through
                    return Claim(ClaimStatus.NEW, stored, token, now + self._lease)
                if item["status"]["S"] == "sent":
                    self.sent_windows.remember(stored)
                    return await self._settled(stored, alert, now)
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

    async def _settled(self, stored: Alert, alert: Alert, now: datetime) -> Claim:
        """A claim inside a window whose latest message went out: escalate the alert when this
        scoring crossed the escalation threshold, else refresh a lifecycle alert's last firing."""
        if alert.escalating and not stored.escalating and stored.status == "open":
            escalated = await self._escalate(stored, alert, now)
            if escalated is not None:
                return escalated
            self.sent_windows.forget_alert(stored)  # someone else moved it on: ask DynamoDB next time
            return Claim(ClaimStatus.SUPPRESSED, stored)
        after = stored.resolve_after_s
        if after is not None and stored.status != "resolved":
            resolve_after = timedelta(seconds=after)
            if heartbeat_due(stored.last_firing_at, now, resolve_after):
                if await self._heartbeat(stored, now, resolve_after):
                    stored = stored.model_copy(update={"last_firing_at": now})
                    self.sent_windows.remember(stored)
                else:
                    self.sent_windows.forget_alert(stored)
        return Claim(ClaimStatus.SUPPRESSED, stored)

    async def _escalate(self, stored: Alert, current: Alert, now: datetime) -> Claim | None:
        """The alert's escalation message, claimed (NEW) in place of its sent opening; None if
        the alert is no longer escalatable (another worker escalated it, a new window, not sent)."""
        message = escalation_of(stored, current, now)
        token = uuid.uuid4().hex
        update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self._table,
                "Key": self._key(stored.customer_id, stored.alert_type.value),
                "UpdateExpression": "SET lifecycle = :escalated, escalated = :true, #status = :pending, "
                "body = :body, claim_token = :token, lease_until_us = :lease_until_us, "
                f"{PENDING_SHARD} = :shard, escalated_at = :now, last_firing_us = :now_us",
                "ConditionExpression": ESCALATABLE,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":alert_id": {"S": stored.alert_id},
                    ":sent": {"S": "sent"},
                    ":open": {"S": "open"},
                    ":false": {"BOOL": False},
                    ":true": {"BOOL": True},
                    ":escalated": {"S": "escalated"},
                    ":pending": {"S": "pending"},
                    ":body": encode_body(message.body()),
                    ":token": {"S": token},
                    ":lease_until_us": {"N": str(to_us(now + self._lease))},
                    ":shard": {"S": shard_of(stored.customer_id, PENDING_SHARDS)},
                    ":now": {"S": iso(now)},
                    ":now_us": {"N": str(to_us(now))},
                },
            }
        }
        try:
            await self._transact(stored.customer_id, update, self._lifecycle_count(message, "escalated"))
        except _Failed as failed:
            if failed.churned or failed.condition_failed:
                return None
            raise AlertLedgerError(
                f"escalating alert {stored.alert_id} in {self._table}: {failed.kind.value}; will retry later"
            ) from None
        await self._note_on_record(message, "escalated_at", now)
        self.sent_windows.forget_alert(stored)
        return Claim(ClaimStatus.NEW, message, token, now + self._lease)

    async def _heartbeat(self, stored: Alert, now: datetime, resolve_after: timedelta) -> bool:
        """The lifecycle alert fired again: its last firing and resolution deadline move to now."""
        return await self._update(
            f"refreshing alert {stored.alert_id}",
            Key=self._key(stored.customer_id, stored.alert_type.value),
            UpdateExpression="SET last_firing_us = :now_us, lease_until_us = :deadline",
            ConditionExpression=STILL_OPEN,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":alert_id": {"S": stored.alert_id},
                ":sent": {"S": "sent"},
                ":open": {"S": "open"},
                ":escalated": {"S": "escalated"},
                ":now_us": {"N": str(to_us(now))},
                ":deadline": {"N": str(to_us(resolve_deadline(now, resolve_after)))},
            },
        )

    async def resolution_candidates(self, now: datetime, limit: int) -> list[Alert]:
        """Open lifecycle alerts past their deadline (as stored): the resolution shards of the
        sparse index, then each item by key (the index is eventually consistent)."""
        now = utc(now)
        found: list[Alert] = []
        shards = [RESOLUTION_SHARD_PREFIX + shard for shard in shard_names(PENDING_SHARDS)]
        random.shuffle(shards)
        for shard in shards:
            if len(found) >= limit:
                break
            response = await with_retries(
                lambda shard=shard: self._client.query(  # type: ignore[misc]
                    TableName=self._table,
                    IndexName=PENDING_INDEX,
                    KeyConditionExpression=f"{PENDING_SHARD} = :shard AND lease_until_us <= :now_us",
                    ExpressionAttributeValues={":shard": {"S": shard}, ":now_us": {"N": str(to_us(now))}},
                    Limit=limit - len(found),
                ),
                resource=f"alert ledger table {self._table} (index {PENDING_INDEX})",
            )
            for key in response.get("Items", []):
                item = await self._get_key(key["customer_id"]["S"], key["alert_type"]["S"])
                if item is None or item.get("status", {}).get("S") != "sent":
                    continue
                if item.get("lifecycle", {}).get("S") not in ("open", "escalated"):
                    continue
                if int(item["lease_until_us"]["N"]) > to_us(now):
                    continue  # a heartbeat moved it since the index was written
                found.append(self._stored_alert(item))
        return found

    async def resolve(self, alert: Alert, now: datetime) -> Claim | None:
        """The alert's resolution message, claimed (NEW) in place of its sent latest message, if it
        is still resolvable (RESOLVABLE); a churned customer's alert leaves the index instead."""
        return await self._resolve(alert, utc(now))

    async def resolutions_due(self, now: datetime, limit: int) -> list[Claim]:
        claims = [await self.resolve(alert, now) for alert in await self.resolution_candidates(now, limit)]
        return [claim for claim in claims if claim is not None]

    async def _resolve(self, stored: Alert, now: datetime) -> Claim | None:
        message = resolution_of(stored, now, stored.last_firing_at)
        opened = stored.window_start or stored.as_of
        token = uuid.uuid4().hex
        update: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self._table,
                "Key": self._key(stored.customer_id, stored.alert_type.value),
                "UpdateExpression": "SET lifecycle = :resolved, #status = :pending, body = :body, "
                f"claim_token = :token, lease_until_us = :lease_until_us, {PENDING_SHARD} = :shard, "
                "resolved_at = :now",
                "ConditionExpression": RESOLVABLE,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":alert_id": {"S": stored.alert_id},
                    ":sent": {"S": "sent"},
                    ":open": {"S": "open"},
                    ":escalated": {"S": "escalated"},
                    ":resolved": {"S": "resolved"},
                    ":pending": {"S": "pending"},
                    ":body": encode_body(message.body()),
                    ":token": {"S": token},
                    ":lease_until_us": {"N": str(to_us(now + self._lease))},
                    ":shard": {"S": shard_of(stored.customer_id, PENDING_SHARDS)},
                    ":now": {"S": iso(now)},
                    ":now_us": {"N": str(to_us(now))},
                },
            }
        }
        seconds = max(0.0, (now - opened).total_seconds())
        try:
            await self._transact(
                stored.customer_id, update, self._lifecycle_count(message, "resolved", seconds)
            )
        except _Failed as failed:
            if failed.churned:
                await self._update(
                    f"dropping the resolution of alert {stored.alert_id}",
                    Key=self._key(stored.customer_id, stored.alert_type.value),
                    UpdateExpression=f"REMOVE {PENDING_SHARD}",
                    ConditionExpression=f"{SAME_CLAIM} AND #status = :sent",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":alert_id": {"S": stored.alert_id}, ":sent": {"S": "sent"}},
                )
                return None
            if failed.condition_failed:
                return None  # resolved by another worker, or a heartbeat came first
            raise AlertLedgerError(
                f"resolving alert {stored.alert_id} in {self._table}: {failed.kind.value}; will retry later"
            ) from None
        self.sent_windows.forget_alert(stored)
        await self._note_on_record(message, "resolved_at", now)
        return Claim(ClaimStatus.NEW, message, token, now + self._lease)

    def _lifecycle_count(
        self, message: Alert, counter: str, seconds: float = 0.0
    ) -> TransactWriteItemTypeDef:
        """The counter of the alert's opening day (`#stats#<day>`, the outcome counters' item)."""
        opened = message.window_start or message.as_of
        key, expires = stats_counter_key(message.customer_id, opened, message.alert_type.value, message.arm)
        values: dict[str, Any] = {":one": {"N": "1"}, ":ttl": {"N": str(expires)}}
        add = f"ADD {counter} :one"
        if counter == "resolved":
            values[":seconds"] = {"N": str(round(seconds, 3))}
            add += ", resolve_seconds :seconds"
        return {
            "Update": {
                "TableName": self._table,
                "Key": key,
                "UpdateExpression": f"{add} SET {TTL_ATTRIBUTE} = :ttl",
                "ExpressionAttributeValues": values,
            }
        }

    async def _note_on_record(self, message: Alert, attribute: str, at: datetime) -> None:
        """History on the alert record (kept 180 days): best effort, one UpdateItem; the claim item
        and the counters already hold what the lifecycle needs."""
        assert message.window_start is not None
        key = RecordKey(to_us(message.window_start), message.alert_type.value, message.arm)
        try:
            await self._update(
                f"noting {attribute} on the record of alert {message.alert_id}",
                Key={"customer_id": {"S": message.customer_id}, "alert_type": {"S": key.sort_key()}},
                UpdateExpression=f"SET {attribute} = :at",
                ConditionExpression="attribute_exists(alert_id)",
                ExpressionAttributeValues={":at": {"S": iso(at)}},
            )
        except AlertLedgerError as exc:
            log_warning(f"could not note {attribute} on an alert record: {exc}")

    def _budget_unit(self, budget: BudgetSlot) -> TransactWriteItemTypeDef:
        return {
            "Update": {
                "TableName": self._table,
                "Key": {"customer_id": {"S": BUDGET_PREFIX + budget.day}, "alert_type": {"S": budget.name}},
                "UpdateExpression": f"SET max_per_day = :max, {TTL_ATTRIBUTE} = :ttl ADD #count :one",
                "ConditionExpression": BUDGET_LEFT,
                "ExpressionAttributeNames": {"#count": "count"},
                "ExpressionAttributeValues": {
                    ":max": {"N": str(budget.max_per_day)},
                    ":one": {"N": "1"},
                    ":ttl": {"N": str(_day_expiry(budget.day, timedelta(days=STATS_KEEP_DAYS)))},
                },
            }
        }

    async def _defer(self, alert: Alert, budget: BudgetSlot, now: datetime) -> bool:
        """Record the deferral (once per customer, type and day) and count it. True: new."""
        writes: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        "customer_id": {"S": DEFERRED_PREFIX + budget.day},
                        "alert_type": {"S": f"{alert.customer_id}#{alert.alert_type.value}"},
                        "budget": {"S": budget.name},
                        "expected_value": {"N": repr(float(alert.expected_value))},
                        "deferred_at": {"S": iso(now)},
                        "body": encode_body(alert.body()),
                        TTL_ATTRIBUTE: {"N": str(_day_expiry(budget.day, DEFERRED_KEEP))},
                    },
                    "ConditionExpression": NOT_YET_DEFERRED,
                }
            },
            {
                "Update": {
                    "TableName": self._table,
                    "Key": {
                        "customer_id": {"S": BUDGET_PREFIX + budget.day},
                        "alert_type": {
                            "S": f"{budget.name}#{alert.alert_type.value}#{outcome_shard(alert.customer_id)}"
                        },
                    },
                    "UpdateExpression": f"ADD #deferred :one SET {TTL_ATTRIBUTE} = :ttl",
                    "ExpressionAttributeNames": {"#deferred": "deferred"},  # a reserved word
                    "ExpressionAttributeValues": {
                        ":one": {"N": "1"},
                        ":ttl": {"N": str(_day_expiry(budget.day, timedelta(days=STATS_KEEP_DAYS)))},
                    },
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
                return False  # deferred already today
            raise AlertLedgerError(f"deferring an alert in {self._table}: {error_text(exc)}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"deferring an alert in {self._table}: {error_text(exc)}") from exc
        return True

    def _claim_put(
        self, alert: Alert, now: datetime, cooldown: timedelta, token: str, escalated: bool = False
    ) -> TransactWriteItemTypeDef:
        assert alert.window_start is not None
        expires = alert.window_start + cooldown + TTL_SLACK
        if alert.resolve_after_s is not None:  # open until resolved: kept a while past its deadline
            expires = max(
                expires, now + timedelta(seconds=alert.resolve_after_s) * DEADLINE_FACTOR + TTL_SLACK
            )
        item: dict[str, Any] = {
            **self._key(alert.customer_id, alert.alert_type.value),
            "alert_id": {"S": alert.alert_id},
            "window_start_us": {"N": str(to_us(alert.window_start))},
            "status": {"S": "pending"},
            "lease_until_us": {"N": str(to_us(now + self._lease))},
            PENDING_SHARD: {"S": shard_of(alert.customer_id, PENDING_SHARDS)},
            "claim_token": {"S": token},
            "body": encode_body(alert.body()),
            TTL_ATTRIBUTE: {"N": str(to_us(expires) // 1_000_000)},
            "lifecycle": {"S": "open"},
            "escalated": {"BOOL": escalated},
            "last_firing_us": {"N": str(to_us(now))},
        }
        if alert.resolve_after_s is not None:
            item["resolve_after_us"] = {"N": str(round(alert.resolve_after_s * 1_000_000))}
        if alert.customer_tier is not None:
            item["customer_tier"] = {"S": alert.customer_tier}
        item.update(_provenance(alert))
        return {
            "Put": {
                "TableName": self._table,
                "Item": item,
                "ConditionExpression": CLAIMABLE,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":cutoff_us": {"N": str(to_us(now - cooldown))},
                    ":resolved": {"S": "resolved"},
                    ":sent": {"S": "sent"},
                },
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
                "UpdateExpression": f"SET lease_until_us = :lease_until_us, {PENDING_SHARD} = :shard, "
                "claim_token = :token",
                "ConditionExpression": ABANDONED_CLAIM,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":alert_id": {"S": alert.alert_id},
                    ":pending": {"S": "pending"},
                    ":now_us": {"N": str(to_us(now))},
                    ":lease_until_us": {"N": str(to_us(now + self._lease))},
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
        self,
        customer_id: str,
        write: TransactWriteItemTypeDef,
        *more: TransactWriteItemTypeDef,
        budgeted: bool = False,
        check: bool = True,
    ) -> None:
        """`write` (and `more`) in one transaction, with `check` conditional on the customer's
        `#churned` item (without, a claim Put's own CLAIMABLE condition covers the churn, and its
        refusal is told apart by the stamps on the item it returns).
        `budgeted`: the last of `more` is a budget unit (BUDGET_LEFT), whose refusal is told apart."""
        items = [self._not_churned(customer_id), write, *more] if check else [write, *more]
        first = 1 if check else 0  # where `write` is
        try:
            await self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, f"alert ledger table {self._table}") from exc
            if error_code(exc) != "TransactionCanceledException":
                if kind is Failure.INVALID:
                    raise AlertLedgerError(f"claiming an alert in {self._table}: {error_text(exc)}") from exc
                raise _Failed(kind) from None  # throttled, a 5xx: nothing was written
            codes = cancellation_reasons(exc, len(items))
            claim_failed = codes[first] in CONDITION_CODES
            response: Any = exc.response
            reasons = list(response.get("CancellationReasons") or [])
            item = reasons[first].get("Item") if len(reasons) == len(items) else None
            budget_reason = codes[-1] if budgeted else None
            raise _Failed(
                kind,
                churned=(check and codes[0] in CONDITION_CODES)
                or (claim_failed and item is not None and stamped_churned(item)),
                condition_failed=claim_failed,
                item=item,
                over_budget=budget_reason in CONDITION_CODES,
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
            alert = Alert.from_body(decode_body(item["body"]), _window_start(item), tier)
            last_firing = item.get("last_firing_us", {}).get("N")
            resolve_after = item.get("resolve_after_us", {}).get("N")
            return alert.model_copy(
                update={
                    "escalating": bool(item.get("escalated", {}).get("BOOL", False)),
                    "last_firing_at": from_us(int(last_firing)) if last_firing else None,
                    "resolve_after_s": int(resolve_after) / 1_000_000 if resolve_after else None,
                }
            )
        except (KeyError, ValueError, zlib.error) as exc:
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
        values: dict[str, Any] = {
            ":alert_id": {"S": alert.alert_id},
            ":sent": {"S": "sent"},
            ":lifecycle": {"S": alert.status},
        }
        update = "SET #status = :sent"
        if alert.created_at is not None:
            values[":sent_at"] = {"S": iso(alert.created_at)}
            update += ", sent_at = :sent_at"
        if alert.resolve_after_s is not None and alert.status != "resolved":
            # Out of the unsent claims, into the resolution shards, due at its deadline.
            values[":rshard"] = {"S": RESOLUTION_SHARD_PREFIX + shard_of(alert.customer_id, PENDING_SHARDS)}
            values[":span"] = {"N": str(round(alert.resolve_after_s * DEADLINE_FACTOR * 1_000_000))}
            update += f", {PENDING_SHARD} = :rshard, lease_until_us = last_firing_us + :span"
        else:
            update += f" REMOVE {PENDING_SHARD}"  # out of the pending index
        marked = await self._update(
            f"marking alert {alert.alert_id} ({alert.status}) sent",
            Key=self._key(alert.customer_id, alert.alert_type.value),
            UpdateExpression=update,
            ConditionExpression=SAME_OPENING if alert.status == "open" else SAME_MESSAGE,
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values,
        )
        if marked:
            self.sent_windows.remember(alert)
        return marked

    def _sent_statement(self, alert: Alert) -> tuple[str, list[dict[str, Any]]] | None:
        """`mark_sent` as a PartiQL UPDATE for `BatchExecuteStatement` (25 marks a request at the
        units of single updates), or None when the mark needs the UpdateItem. A statement's WHERE
        holds equalities only, so it asks more than `mark_sent`'s condition: the message's
        `lifecycle` present (items written before the lifecycle have none), and, where the
        resolution deadline counts from the last firing, `last_firing_us` as this alert knows it
        (the deadline is then computed here, not from the item). A statement refused for either
        is not an answer: that mark is asked again as the UpdateItem, which gives it."""
        sets: list[tuple[str, dict[str, Any]]] = [("status", {"S": "sent"})]
        if alert.created_at is not None:
            sets.append(("sent_at", {"S": iso(alert.created_at)}))
        where: list[tuple[str, dict[str, Any]]] = [
            ("customer_id", {"S": alert.customer_id}),
            ("alert_type", {"S": alert.alert_type.value}),
            ("alert_id", {"S": alert.alert_id}),
            ("lifecycle", {"S": alert.status}),
        ]
        removes: list[str] = []
        if alert.resolve_after_s is not None and alert.status != "resolved":
            if alert.last_firing_at is None:
                return None
            last_firing_us = to_us(alert.last_firing_at)
            span_us = round(alert.resolve_after_s * DEADLINE_FACTOR * 1_000_000)
            sets.append(
                (PENDING_SHARD, {"S": RESOLUTION_SHARD_PREFIX + shard_of(alert.customer_id, PENDING_SHARDS)})
            )
            sets.append(("lease_until_us", {"N": str(last_firing_us + span_us)}))
            where.append(("last_firing_us", {"N": str(last_firing_us)}))
        else:
            removes.append(PENDING_SHARD)
        return update_statement(self._table, sets, removes, where)

    async def mark_all_sent(self, alerts: Sequence[Alert]) -> list[bool]:
        """`mark_sent` for each, up to MARKS_PER_REQUEST marks in one BatchExecuteStatement. Each
        statement holds or fails on its own; every mark not answered "done" by its statement (a
        condition, throttling, no answer at all) is asked again as `mark_sent`'s UpdateItem, whose
        answer is the one that counts. Marking twice is harmless: the second finds it sent."""
        results: list[bool | None] = [None] * len(alerts)
        statements = [
            (i, statement) for i, alert in enumerate(alerts) if (statement := self._sent_statement(alert))
        ]
        if len(statements) >= 2:  # one mark alone is as cheap as its UpdateItem
            chunks = [
                statements[at : at + MARKS_PER_REQUEST] for at in range(0, len(statements), MARKS_PER_REQUEST)
            ]
            for chunk, answers in zip(
                chunks,
                await gather_limited(
                    [self._marks_together([st for _, st in chunk]) for chunk in chunks], MAX_CONCURRENT_CLAIMS
                ),
                strict=True,
            ):
                for (i, _), done in zip(chunk, answers, strict=True):
                    if done:
                        results[i] = True
                        self.sent_windows.remember(alerts[i])
        rest = [i for i, result in enumerate(results) if result is None]
        for i, marked in zip(
            rest,
            await gather_limited([self.mark_sent(alerts[i]) for i in rest], MAX_CONCURRENT_CLAIMS),
            strict=True,
        ):
            results[i] = marked
        return [bool(result) for result in results]

    async def _marks_together(self, statements: list[tuple[str, list[dict[str, Any]]]]) -> list[bool]:
        """One BatchExecuteStatement of sent marks: True for each statement that went through."""
        try:
            response = await self._client.batch_execute_statement(
                Statements=[{"Statement": text, "Parameters": params} for text, params in statements]
            )
        except ClientError as exc:
            if classify(exc) is Failure.FATAL:
                raise fatal_error(exc, f"alert ledger table {self._table}") from exc
            return [False] * len(statements)  # each asked again alone, which retries or says why
        except (BotoCoreError, OSError, TimeoutError):
            return [False] * len(statements)
        answers = list(response.get("Responses", []))
        if len(answers) != len(statements):
            return [False] * len(statements)
        return [not answer.get("Error") for answer in answers]

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

    def _stamps(
        self, customer_id: str, churned_us: int, returned_us: int | None
    ) -> list[TransactWriteItemTypeDef]:
        """CHURN STAMPS: the customer's churn (and return) on each of its claim items."""
        values: dict[str, Any] = {":churned_at_us": {"N": str(churned_us)}}
        if returned_us is None:
            expression = f"SET churned_at_us = :churned_at_us REMOVE returned_at_us, {TTL_ATTRIBUTE}"
        else:
            expression = "SET churned_at_us = :churned_at_us, returned_at_us = :returned_at_us"
            values[":returned_at_us"] = {"N": str(returned_us)}
        return [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": self._key(customer_id, alert_type.value),
                    "UpdateExpression": expression,
                    "ExpressionAttributeValues": values,
                }
            }
            for alert_type in AlertType
        ]

    async def _record(
        self, what: str, marker: TransactWriteItemTypeDef, stamps: list[TransactWriteItemTypeDef]
    ) -> None:
        """The `#churned` item's write (its condition first) and the stamps, in one transaction;
        a refused condition is an answer: this churn or return, or a newer churn, is recorded."""
        try:
            await with_retries(
                lambda: self._client.transact_write_items(TransactItems=[marker, *stamps]),
                resource=f"alert ledger table {self._table}",
            )
        except ClientError as exc:
            if classify(exc) is Failure.CONDITION_FAILED:
                return
            raise AlertLedgerError(f"{what} in {self._table}: {error_text(exc)}") from exc
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"{what} in {self._table}: {error_text(exc)}") from exc

    async def record_churn(self, customer_id: str, churned_at: datetime) -> None:
        self.sent_windows.forget(customer_id)  # its next claims ask DynamoDB, which answers CHURNED
        at = utc(churned_at)
        churned_us = to_us(at)
        # A churned customer is recorded again at each of its later scorings: once this process knows
        # the `#churned` item holds this churn or a newer one, NEWER_CHURN would refuse the write
        # (the item's churn time only ever grows), so it is not sent (a 6-item transaction).
        known = self._churns_recorded.get(customer_id)
        if known is not None and known >= churned_us:
            return
        marker: TransactWriteItemTypeDef = {
            "Put": {
                "TableName": self._table,
                "Item": {
                    **self._key(customer_id, CHURN_MARKER),
                    "churned_at": {"S": iso(at)},
                    "churned_at_us": {"N": str(churned_us)},
                },
                "ConditionExpression": NEWER_CHURN,
                "ExpressionAttributeValues": {":churned_at_us": {"N": str(churned_us)}},
            }
        }
        await self._record(
            f"recording churn of {customer_id}", marker, self._stamps(customer_id, churned_us, None)
        )
        _remember(self._churns_recorded, customer_id, churned_us)

    async def record_return(self, customer_id: str, churned_at: datetime, signed_up_at: datetime) -> None:
        churned_us, returned_us = return_times(churned_at, signed_up_at)
        # Recorded again at each scoring that routes an alert: skipped when this process knows it
        # recorded, or knows a newer churn (NEWER_RETURN would refuse it either way).
        if self._returns_recorded.get(customer_id) == (churned_us, returned_us) or (
            self._churns_recorded.get(customer_id, churned_us) > churned_us
        ):
            return
        marker: TransactWriteItemTypeDef = {
            "Update": {
                "TableName": self._table,
                "Key": self._key(customer_id, CHURN_MARKER),
                "UpdateExpression": "SET churned_at = :churned_at, churned_at_us = :churned_at_us, "
                "returned_at = :returned_at, returned_at_us = :returned_at_us",
                "ConditionExpression": NEWER_RETURN,  # else: this return is recorded, or a newer churn is
                "ExpressionAttributeValues": {
                    ":churned_at": {"S": iso(utc(churned_at))},
                    ":churned_at_us": {"N": str(churned_us)},
                    ":returned_at": {"S": iso(utc(signed_up_at))},
                    ":returned_at_us": {"N": str(returned_us)},
                },
            }
        }
        await self._record(
            f"recording the return of {customer_id}",
            marker,
            self._stamps(customer_id, churned_us, returned_us),
        )
        _remember(self._returns_recorded, customer_id, (churned_us, returned_us))

    # CHURN STAMPS on tables written before them (see FORMAT_KEY above).

    async def _needs_churn_check(self) -> bool:
        """Whether claims must check the `#churned` item: until the format item says every churn is
        stamped. Read at the first claim (a young table gets it then); `upkeep` looks again while it
        does not say so."""
        if not self.stamps_trusted and not self._format_read:
            self._format_read = True
            try:
                if not await self._read_format(announce=False):
                    await self._mark_if_young()
            except AlertLedgerError as exc:
                log_warning(f"{exc}; claims check the #churned item until it can be read")
        return not self.stamps_trusted

    async def _read_format(self, announce: bool = True) -> bool:
        try:
            response = await with_retries(
                lambda: self._client.get_item(
                    TableName=self._table, Key=self._key(*FORMAT_KEY), ConsistentRead=True
                ),
                resource=f"alert ledger table {self._table}",
            )
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise AlertLedgerError(f"reading the format of {self._table}: {error_text(exc)}") from exc
        if "churn_stamps" in response.get("Item", {}):
            self._trust_stamps(announce)
        return self.stamps_trusted

    def _trust_stamps(self, announce: bool = True) -> None:
        """From now on claims leave the `#churned` check out; `announce`: say so (a change seen by
        a running worker, not the state a worker started in)."""
        if announce and not self.stamps_trusted:
            structlog.get_logger(__name__).info(
                "every churn is stamped on its claim items: claims no longer check the #churned item",
                table=self._table,
            )
        self.stamps_trusted = True

    async def upkeep(self, now: datetime) -> None:
        """The sweeper's, each step: while stamps are not trusted, look at the format item (a minute
        apart); a young table gets it at once, an older one is said to need `stamp-churns`."""
        if self.stamps_trusted:
            return
        clock = time.monotonic()
        if clock < self._next_look:
            return
        self._next_look = clock + FORMAT_LOOK_EVERY_S
        if not await self._read_format():
            await self._mark_if_young()

    async def _mark_if_young(self) -> None:
        """A young table gets the format item; an older one is said (once) to need stamp-churns."""
        if await self._young():
            await self._write_format()
        elif not self._said_unstamped:
            self._said_unstamped = True
            log_warning(
                f"alert ledger {self._table} may hold churns recorded before churn stamps: claims check "
                "the #churned item (2 more write units each) until `churn-worker alerts stamp-churns` has "
                "run once, after every worker runs this version"
            )

    async def _young(self) -> bool:
        """Whether the table was created at most YOUNG_TABLE before this ledger started (asked once)."""
        if self._table_young is None:
            try:
                described = await with_retries(
                    lambda: self._client.describe_table(TableName=self._table),
                    resource=f"alert ledger table {self._table}",
                )
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                raise AlertLedgerError(f"describing {self._table}: {error_text(exc)}") from exc
            created = described["Table"]["CreationDateTime"]
            self._table_young = created >= self._started_wall - YOUNG_TABLE
        return self._table_young

    async def _write_format(self) -> None:
        await self._update(
            "writing the format item",
            condition_ok=False,
            Key=self._key(*FORMAT_KEY),
            UpdateExpression="SET churn_stamps = :one, stamped_at = :at",
            ExpressionAttributeValues={":one": {"N": "1"}, ":at": {"S": iso(datetime.now(UTC))}},
        )
        self._trust_stamps()

    async def stamp_churns(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Stamp every recorded churn (and return) on its customer's claim items, then write the
        format item: the one-off upgrade of a table written before churn stamps (`churn-worker
        alerts stamp-churns`). A Scan of the whole table, STAMP_SCAN_PAGE items a request;
        `progress(items read, churns stamped)` after each page. Safe to run again, and while workers
        run: a churn recorded meanwhile stamps itself. Returns the churns stamped."""
        scan: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "alert_type = :marker",
            "ExpressionAttributeValues": {":marker": {"S": CHURN_MARKER}},
            "ProjectionExpression": "customer_id, churned_at_us, returned_at_us",
            "ConsistentRead": True,
            "Limit": STAMP_SCAN_PAGE,
        }
        read = stamped = 0
        while True:
            try:
                response = await with_retries(
                    lambda: self._client.scan(**scan), resource=f"alert ledger table {self._table}"
                )
            except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
                raise AlertLedgerError(f"reading the churns of {self._table}: {error_text(exc)}") from exc
            for marker in response.get("Items", []):
                if "churned_at_us" in marker:
                    await self._stamp_recorded(marker)
                    stamped += 1
            read += int(response.get("ScannedCount", 0))
            if progress is not None:
                progress(read, stamped)
            if "LastEvaluatedKey" not in response:
                break
            scan["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        await self._write_format()
        return stamped

    async def _stamp_recorded(self, marker: dict[str, Any]) -> None:
        """A `#churned` item's churn (and return) on the customer's claim items, if it still holds it."""
        customer_id = marker["customer_id"]["S"]
        churned_us = int(marker["churned_at_us"]["N"])
        returned = marker.get("returned_at_us", {}).get("N")
        values: dict[str, Any] = {":churned_at_us": {"N": str(churned_us)}}
        if returned is not None:
            values[":returned_at_us"] = {"N": returned}
        check: TransactWriteItemTypeDef = {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": self._key(customer_id, CHURN_MARKER),
                "ConditionExpression": UNCHANGED_RETURN if returned is not None else UNCHANGED_CHURN,
                "ExpressionAttributeValues": values,
            }
        }
        stamps = self._stamps(customer_id, churned_us, None if returned is None else int(returned))
        await self._record(f"stamping the churn of {customer_id}", check, stamps)


async def create_alert_table(client: DynamoDBClient, table: str) -> bool:
    """Create the ledger table with TTL on `expires_at` and the `pending` index, if missing (an
    existing table gets the index). True when the table was created now; a new table holds no churn
    yet, so its format item says at once that churns are stamped (CHURN STAMPS)."""
    created = await ensure_table(
        client, table, "customer_id", "alert_type", TTL_ATTRIBUTE, indexes=[PENDING_INDEX_SPEC]
    )
    if created:
        await client.put_item(
            TableName=table,
            Item={
                "customer_id": {"S": FORMAT_KEY[0]},
                "alert_type": {"S": FORMAT_KEY[1]},
                "churn_stamps": {"N": "1"},
                "stamped_at": {"S": iso(datetime.now(UTC))},
            },
        )
    return created
