"""The event contract: every type parses, envelopes unwrap, bad input gets a typed, readable error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from features.events import (
    EVENT_TYPES,
    check_event_time,
    event_to_json,
    loads_json,
    parse_event,
    validate_event,
)
from features.exceptions import EventParseError

BASE = {"event_id": "e-1", "customer_id": "c-1", "occurred_at": "2026-11-27T10:00:00Z"}
EXTRA = {
    "customer_signed_up": {"tier": "budget"},
    "subscription_changed": {"tier": "premium"},
    "session_booked": {"subject": "algebra", "tutor_id": "t-1"},
    "session_completed": {"subject": "coding", "tutor_id": "t-1", "duration_minutes": 55.5},
    "session_cancelled": {"subject": "music", "cancelled_by": "tutor"},
    "session_rated": {"rating": 4, "tutor_id": "t-1"},
    "ib_call": {"sentiment": "negative"},
    "login": {},
    "message_sent": {},
    "payment_succeeded": {"amount": 19.99},
    "payment_failed": {"amount": 0},
    "customer_churned": {},
}


def event(kind: str, **fields: object) -> dict[str, object]:
    return {**BASE, "type": kind, **EXTRA[kind], **fields}


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_contract_type_parses_and_round_trips(kind: str) -> None:
    parsed = parse_event(json.dumps(event(kind)))
    assert parsed.type == kind
    assert parsed.occurred_at == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_event(event_to_json(parsed)) == parsed


def test_offsets_are_normalised_to_utc() -> None:
    parsed = validate_event(event("login", occurred_at="2026-11-27T12:30:00+02:00"))
    assert parsed.occurred_at == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)


def test_sns_and_eventbridge_envelopes_are_unwrapped() -> None:
    inner = event("ib_call")
    sns = {"Type": "Notification", "MessageId": "m", "Message": json.dumps(inner)}
    bridge = {"version": "0", "detail-type": "customer event", "source": "app", "detail": inner}
    assert parse_event(json.dumps(sns)) == parse_event(json.dumps(inner))
    assert parse_event(json.dumps(bridge)) == parse_event(json.dumps(inner))


def test_session_completed_defaults_first_session_to_false() -> None:
    parsed = validate_event(event("session_completed"))
    assert parsed.first_session is False and parsed.success is None


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        ("not json", "not_json", "not JSON"),
        ("[1, 2]", "not_an_object", "object"),
        (json.dumps({**BASE, "type": "teleport"}), "unknown_type", "teleport"),
        (json.dumps({k: v for k, v in event("login").items() if k != "type"}), "missing_field", "type"),
        (
            json.dumps({k: v for k, v in event("session_rated").items() if k != "rating"}),
            "missing_field",
            "rating",
        ),
        (json.dumps(event("session_rated", rating=6)), "invalid_field", "rating"),
        (json.dumps(event("session_rated", rating="4")), "invalid_field", "rating"),
        (json.dumps(event("session_completed", first_session="true")), "invalid_field", "first_session"),
        (json.dumps(event("session_completed", duration_minutes=601)), "invalid_field", "duration_minutes"),
        (json.dumps(event("session_booked", subject="astrology")), "invalid_field", "subject"),
        (json.dumps(event("payment_failed", amount=-1)), "invalid_field", "amount"),
        (json.dumps(event("login", occurred_at="2026-11-27T10:00:00")), "invalid_field", "occurred_at"),
        (json.dumps(event("login", occurred_at="yesterday")), "invalid_field", "occurred_at"),
        (json.dumps(event("login", customer_id="c 1")), "invalid_field", "customer_id"),
        (json.dumps(event("login", event_id="x" * 129)), "invalid_field", "event_id"),
        (json.dumps({"Type": "Notification", "Message": "{oops"}), "not_json", "SNS"),
        ("x" * (256 * 1024 + 1), "too_large", "limit"),
    ],
)
def test_bad_input_gets_a_typed_error_with_a_readable_detail(body: str, code: str, mentions: str) -> None:
    with pytest.raises(EventParseError) as caught:
        parse_event(body)
    assert caught.value.error_code == code
    assert mentions in caught.value.error_detail
    assert "\n" not in caught.value.error_detail


def test_event_time_checks_reject_the_future_and_the_expired() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    retention = timedelta(days=35)
    ok = validate_event(event("login", occurred_at="2026-11-27T12:04:59Z"))
    future = validate_event(event("login", occurred_at="2026-11-27T12:05:01Z"))
    old = validate_event(event("login", occurred_at="2026-10-23T11:59:59Z"))
    assert check_event_time(ok, now, retention) is None
    assert check_event_time(future, now, retention).error_code == "in_future"  # type: ignore[union-attr]
    assert check_event_time(old, now, retention).error_code == "too_old"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "document",
    [
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b'{"a":1e400}',
        b'{"a":123456789012345678901234567890}',
        b"[1,2]",
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":"\\ud800"}',
        '{"a":"\u00e9"}'.encode(),
        b'{"a":"x\x01y"}',
        b'{"a":1,}',
        b'{"a":1} x',
        b'{"a":"\xff"}',
        b"",
        '{"a": 1}',
    ],
)
def test_loads_json_answers_exactly_as_json_loads(document: bytes | str) -> None:
    """The fast parser is an optimisation only: same values, same errors and messages."""
    try:
        expected: object = json.loads(document)
    except ValueError as exc:
        with pytest.raises(type(exc)) as raised:
            loads_json(document)
        assert str(raised.value) == str(exc)
        return
    got = loads_json(document)
    assert repr(got) == repr(expected)
