"""The scenarios' referee: folds the accepted events independently of the product and compares the
fold with what the worker left behind.

- The fold is written here, from the event dicts themselves: per customer, how many events of each
  type (and the lifetime counters the profile keeps), and which alerts must exist. It shares no code
  with `features.state`.
- What the worker left is read from the DynamoDB feature table with the product's reader
  (`features.dynamodb.state_from_items`), the alert topic (an SQS queue subscribed to it, raw
  delivery) and the dead-letter queue.

Figures: events lost (counted less often than sent), events double-counted, duplicate alerts (an
`alert_id` seen twice, or two alerts of one type for one customer), missing alerts, and the DLQ
compared with the bad records injected (each must be there once, with `error_code`).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from features.dynamodb import state_from_items

# profile counter -> (event type, what one event adds); "negative_calls" and "spend_cents" need the body
_LIFETIME = {
    "sessions": "session_completed",
    "ib_calls": "ib_call",
    "payment_failures": "payment_failed",
    "tier_changes": "subscription_changed",
}


@dataclass
class Expected:
    """The independent fold of the accepted events."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)  # customer -> "n.<type>" -> events
    lifetime: dict[str, Counter[str]] = field(default_factory=dict)  # customer -> profile counter -> value
    alerts: set[tuple[str, str]] = field(default_factory=set)  # (customer, alert type) that must go out
    events: int = 0


def fold(
    events: Iterable[dict[str, Any]],
    now: datetime,
    model_alerts: bool,
    ib_window_days: int = 14,
    min_calls: int = 2,
) -> Expected:
    """Count each distinct event_id once. `model_alerts`: every customer must get the alert that only
    a model answer can produce (HEALTH_SCORE_CRITICAL, with the suite's threshold of 100)."""
    expected = Expected()
    seen: set[str] = set()
    calls: Counter[str] = Counter()
    churned: set[str] = set()
    for event in events:
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        expected.events += 1
        cid, kind = event["customer_id"], event["type"]
        expected.counts.setdefault(cid, Counter())[f"n.{kind}"] += 1
        life = expected.lifetime.setdefault(cid, Counter())
        for counter, counted_kind in _LIFETIME.items():
            if kind == counted_kind:
                life[counter] += 1
        if kind == "ib_call" and event["sentiment"] == "negative":
            life["negative_calls"] += 1
        if kind == "payment_succeeded":
            life["spend_cents"] += round(event["amount"] * 100)
        if kind == "customer_churned":
            churned.add(cid)
        occurred = datetime.fromisoformat(event["occurred_at"])
        if kind == "ib_call" and now - occurred < timedelta(days=ib_window_days):
            calls[cid] += 1
    for cid in expected.counts:
        if cid in churned:
            continue
        if calls[cid] >= min_calls:
            expected.alerts.add((cid, "IB_CALL_SPIKE"))
        if model_alerts:
            expected.alerts.add((cid, "HEALTH_SCORE_CRITICAL"))
    return expected


@dataclass
class Stored:
    counts: Counter[str]
    lifetime: Counter[str]


def read_customer(dynamodb: Any, table: str, customer_id: str) -> Stored:
    """One customer as the product's reader sees the feature table."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "customer_id = :c",
        "ExpressionAttributeValues": {":c": {"S": customer_id}},
        "ConsistentRead": True,
    }
    while True:
        response = dynamodb.query(**kwargs)
        items += response["Items"]
        if "LastEvaluatedKey" not in response:
            break
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
    state = state_from_items(customer_id, items)
    counts: Counter[str] = Counter()
    for page in state.pages.values():
        counts.update({k: v for k, v in page.counts.items() if k.startswith("n.") and k.count(".") == 1})
    return Stored(counts, Counter(state.profile.lifetime))


@dataclass
class Figures:
    lost: int = 0
    double: int = 0
    duplicate_alerts: int = 0
    missing_alerts: int = 0
    dlq: int = 0
    dlq_expected: int = 0
    dlq_copies: int = 0  # the same source record dead-lettered again (after a crash)
    dlq_wrong: list[str] = field(default_factory=list)  # what differs from the injected bad records
    details: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)  # a scenario's own assertions that failed

    @property
    def clean(self) -> bool:
        return not (
            self.lost or self.double or self.duplicate_alerts or self.missing_alerts or self.dlq_wrong
        )


def compare_store(expected: Expected, stored: dict[str, Stored], figures: Figures) -> None:
    for cid, counts in expected.counts.items():
        have = stored[cid]
        for key in counts.keys() | have.counts.keys():
            diff = have.counts[key] - counts[key]
            if diff:
                figures.details.append(f"{cid} {key}: stored {have.counts[key]}, sent {counts[key]}")
            figures.lost += max(0, -diff)
            figures.double += max(0, diff)
        life = expected.lifetime[cid]
        for key in life.keys() | have.lifetime.keys():
            if key == "spend_cents":  # an amount, not a count: one mismatch is one event wrong
                diff = (have.lifetime[key] > life[key]) - (have.lifetime[key] < life[key])
            else:
                diff = have.lifetime[key] - life[key]
            if diff:
                figures.details.append(f"{cid} lifetime {key}: stored {have.lifetime[key]}, sent {life[key]}")
            figures.lost += max(0, -diff)
            figures.double += max(0, diff)


def compare_alerts(
    expected: Expected, alerts: list[dict[str, Any]], figures: Figures, exact: bool = True
) -> None:
    """`exact`: no alert beyond the expected ones (a scenario with rules whose outcome is not known
    in advance passes False and only checks duplicates and missing ones)."""
    ids = Counter(alert["alert_id"] for alert in alerts)
    kinds = Counter((alert["customer_id"], alert["type"]) for alert in alerts)
    repeated = sum(n - 1 for n in ids.values() if n > 1)
    second_windows = sum(n - 1 for n in kinds.values() if n > 1) - repeated
    figures.duplicate_alerts = repeated + max(0, second_windows)
    if figures.duplicate_alerts:
        figures.details.append(f"duplicate alerts: {[key for key, n in kinds.items() if n > 1][:10]}")
    missing = expected.alerts - set(kinds)
    figures.missing_alerts = len(missing)
    if missing:
        figures.details.append(f"missing alerts: {sorted(missing)[:10]}")
    unexpected = set(kinds) - expected.alerts
    if exact and unexpected:
        figures.details.append(f"unexpected alerts: {sorted(unexpected)[:10]}")
        figures.duplicate_alerts += len(unexpected)


def dlq_body(message: dict[str, Any]) -> bytes:
    attributes = message.get("MessageAttributes", {})
    encoding = attributes.get("body_encoding", {}).get("StringValue", "utf-8")
    body = message["Body"]
    if encoding.startswith("base64"):
        return base64.b64decode(body)
    return str(body).encode()


def compare_dlq(injected: list[Any], messages: list[dict[str, Any]], figures: Figures) -> None:
    """Every injected bad record, with an `error_code` (the one expected, when the case names one),
    and nothing else: no good event dead-lettered. Copies of one source record (same `source_id`,
    quarantined again after a crash before its acknowledgement: the DLQ is at-least-once like
    every SQS queue) count once and are reported in `dlq_copies`."""
    got: Counter[bytes] = Counter()
    codes: dict[bytes, str] = {}
    sources: set[str] = set()
    for message in messages:
        source_id = message.get("MessageAttributes", {}).get("source_id", {}).get("StringValue")
        if source_id and source_id in sources:
            figures.dlq_copies += 1
            continue
        if source_id:
            sources.add(source_id)
        body = dlq_body(message)
        got[body] += 1
        figures.dlq += 1
        codes[body] = message.get("MessageAttributes", {}).get("error_code", {}).get("StringValue", "")
    figures.dlq_expected = len(injected)
    for bad in injected:
        key = _dlq_key(bad.body, got)
        if key is None:
            figures.dlq_wrong.append(f"missing from the DLQ: {bad.name}")
            continue
        got[key] -= 1
        if not codes.get(key):
            figures.dlq_wrong.append(f"{bad.name}: no error_code")
        elif bad.error_code and codes[key] != bad.error_code:
            figures.dlq_wrong.append(f"{bad.name}: error_code {codes[key]}, expected {bad.error_code}")
    for body, n in got.items():
        if n > 0:
            figures.dlq_wrong.append(f"unexpected in the DLQ ({n}x, {codes.get(body)}): {body[:80]!r}")


def _dlq_key(body: bytes, got: Counter[bytes]) -> bytes | None:
    if got[body] > 0:
        return body
    for candidate, n in got.items():  # an over-large body is cut in the DLQ and says so
        if n > 0 and len(candidate) >= 64 and body.startswith(candidate[: len(candidate) - 4]):
            return candidate
        if n > 0 and len(candidate) >= 64 and base64.b64encode(body).startswith(candidate[:64]):
            return candidate
    return None


def alert_order_problems(alerts: list[dict[str, Any]]) -> list[str]:
    """On a FIFO topic one customer's alerts arrive in the order they were created."""
    last: dict[str, str] = {}
    problems = []
    for alert in alerts:
        cid, created = alert["customer_id"], alert["created_at"]
        if cid in last and created < last[cid]:
            problems.append(f"{cid}: {alert['type']} created {created} arrived after one created {last[cid]}")
        last[cid] = created
    return problems


def now_utc() -> datetime:
    return datetime.now(UTC)
