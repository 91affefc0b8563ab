"""What the fault scenarios feed the worker: good customer events (seeded, varied, not shaped to any
code path) and the bad records of issue 10, each with the dead-letter `error_code` expected for it."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from features.events import SUBJECTS

SPIKE_EVERY = 4  # every 4th customer makes two inbound calls in the last 10 days: an IB_CALL_SPIKE


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def good_events(
    now: datetime, customers: int, per_customer: int = 8, seed: int = 1, prefix: str = "c"
) -> list[dict[str, Any]]:
    """Sign-up 25 days ago, then a random mix of every event type over the last 24 days. Every
    `SPIKE_EVERY`-th customer has exactly two inbound calls in the last 10 days, the others none in
    the last 14 (so who gets an IB_CALL_SPIKE is known in advance)."""
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    kinds = [
        "login",
        "message_sent",
        "session_booked",
        "session_completed",
        "session_rated",
        "session_cancelled",
        "payment_succeeded",
        "payment_failed",
        "subscription_changed",
    ]
    for c in range(customers):
        cid = f"{prefix}-{c:04d}"
        made = 0

        def add(kind: str, days_ago: float, cid: str = cid, **fields: Any) -> None:
            nonlocal made
            events.append(
                {
                    "event_id": f"{cid}-e{made}",
                    "customer_id": cid,
                    "type": kind,
                    "occurred_at": iso(now - timedelta(days=days_ago)),
                    **fields,
                }
            )
            made += 1

        add("customer_signed_up", 25, tier=rnd.choice(["budget", "standard", "premium"]))
        if c % SPIKE_EVERY == 0:
            add("ib_call", rnd.uniform(0.1, 9.5), sentiment="negative")
            add("ib_call", rnd.uniform(0.1, 9.5), sentiment=rnd.choice(["neutral", "positive"]))
        elif rnd.random() < 0.3:
            add("ib_call", rnd.uniform(16, 24), sentiment="neutral")
        for _ in range(per_customer):
            kind = rnd.choice(kinds)
            days = rnd.uniform(0.01, 24)
            subject, tutor = rnd.choice(SUBJECTS), f"t-{rnd.randrange(6)}"
            minutes = float(rnd.choice([30, 45, 60, 90]))
            fields: dict[str, Any] = {
                "session_booked": {"subject": subject, "tutor_id": tutor},
                "session_completed": {"subject": subject, "tutor_id": tutor, "duration_minutes": minutes},
                "session_rated": {"rating": float(rnd.randint(1, 5)), "tutor_id": tutor},
                "session_cancelled": {"subject": subject, "cancelled_by": rnd.choice(["customer", "tutor"])},
                "payment_succeeded": {"amount": round(rnd.uniform(20, 200), 2)},
                "payment_failed": {"amount": round(rnd.uniform(20, 200), 2)},
                "subscription_changed": {"tier": rnd.choice(["budget", "standard", "premium"])},
            }.get(kind, {})
            add(kind, days, **fields)
    return events


@dataclass(frozen=True)
class Bad:
    """A record the worker must dead-letter with `error_code`, never retry forever."""

    name: str
    body: bytes
    error_code: str | None  # None: any code will do (the issue names the case, not the code)


def _deep(levels: int) -> bytes:
    return b'{"event_id": "deep", "x": ' + b"[" * levels + b"]" * levels + b"}"


def poison_records(now: datetime, tag: str = "p") -> list[Bad]:
    """Issue 10, items 1 and 2: inputs that used to escape validation and fail their whole batch."""
    when = iso(now - timedelta(days=1))

    def event(**fields: Any) -> bytes:
        base = {
            "event_id": f"{tag}-{fields.pop('n')}",
            "customer_id": f"{tag}-victim",
            "type": "login",
            "occurred_at": when,
        }
        return json.dumps(base | fields).encode()

    def raw(n: str, kind: str, amount: str) -> bytes:  # JSON text json.dumps cannot write
        return (
            f'{{"event_id": "{tag}-{n}", "customer_id": "{tag}-victim", "type": "{kind}", '
            f'"occurred_at": "{when}", "amount": {amount}}}'
        ).encode()

    huge_int = raw("bigint", "payment_succeeded", "9" * 5000)
    overflow_inf = raw("inf", "payment_failed", "1e400")
    return [
        Bad("deep nesting", _deep(100_000), None),
        Bad("huge integer literal", huge_int, None),
        Bad("9999-12-31T23:59:59-01:00", event(n="y9999", occurred_at="9999-12-31T23:59:59-01:00"), None),
        Bad("1e400", overflow_inf, None),
        Bad("amount = 1e17", event(n="e17", type="payment_succeeded", amount=1e17), "invalid_field"),
        Bad("not JSON", b"this is not json {", "not_json"),
        Bad("unknown type", event(n="teleport", type="teleport"), "unknown_type"),
    ]


def unparseable_kinesis_records() -> list[Bad]:
    """What a Kinesis producer can put that is not an event at all."""
    body = b"\x00\xff\xfe binary \x80\x81"
    message = b"\x1a\x03\x1a\x01x"  # protobuf: a Record without its partition key, inside an aggregate
    bad_digest = b"\xf3\x89\x9a\xc2" + message + hashlib.md5(b"other", usedforsecurity=False).digest()
    return [
        Bad("binary garbage", body, "not_json"),
        Bad("KPL magic, wrong digest", bad_digest, None),
        Bad("base64 of an event", base64.b64encode(b'{"event_id": "b64"}'), None),
    ]
