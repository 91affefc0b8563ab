"""Customer events: the input contract (docs/contracts.md, Customer events).

Every event type is a frozen pydantic model. Validation is strict on types (no "3" for 3, no "true"
for true); unknown keys are ignored so producers can add fields without breaking the worker.
`parse_event` unwraps SNS and EventBridge envelopes and turns every failure into an
`EventParseError` carrying a machine `error_code` and a human `error_detail`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import from_json

from features.exceptions import EventParseError

MAX_EVENT_BYTES = 256 * 1024
MAX_FUTURE_SKEW = timedelta(minutes=5)
# What the business allows. Bounds keep every later sum far inside int64 (features/windows.py adds
# cents, seconds and centi-stars of up to 35 days of pages): one bad value costs its record, never
# its customer's features.
MAX_PAYMENT_USD = 100_000.0  # one payment; a tutoring marketplace charges far less
MAX_SESSION_MINUTES = 600.0
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT = datetime(2100, 1, 1, tzinfo=UTC)
MAX_JSON_DEPTH_ERROR = "nested too deeply"

SUBJECTS: tuple[str, ...] = (
    "algebra",
    "geometry",
    "calculus",
    "statistics",
    "physics",
    "chemistry",
    "biology",
    "english",
    "writing",
    "reading",
    "spanish",
    "french",
    "history",
    "computer_science",
    "economics",
    "psychology",
    "sat_prep",
    "act_prep",
    "music",
    "coding",
)
TIERS: tuple[str, ...] = ("budget", "standard", "premium")  # index = the model's subscription_tier

_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"


def _parse_utc(value: Any) -> datetime:
    """ISO-8601 with an explicit offset or Z, normalised to UTC. Naive times are ambiguous: refused.
    Only instants between EARLIEST_EVENT and LATEST_EVENT: a time near year 1 or 9999 cannot be
    normalised (`9999-12-31T23:59:59-01:00` overflows) and means a broken producer anyway."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise ValueError("needs a UTC offset or Z")
    try:
        moment = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        moment = None
    if moment is None or not EARLIEST_EVENT <= moment < LATEST_EVENT:
        raise ValueError(
            f"must lie between {EARLIEST_EVENT.year} and {LATEST_EVENT.year}, got {value[:40]!r}"
        )
    return moment


UtcDatetime = Annotated[datetime, BeforeValidator(_parse_utc)]
EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=_ID_PATTERN, strict=True)]
CustomerId = Annotated[str, Field(min_length=1, max_length=64, pattern=_ID_PATTERN, strict=True)]
TutorId = Annotated[str, Field(min_length=1, max_length=64, pattern=_ID_PATTERN, strict=True)]
# strict: takes 3 and 3.5, refuses True and "3"; finite: refuses Infinity, NaN and 1e400 (which
# JSON parsers read as infinity)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Subject = Literal[
    "algebra",
    "geometry",
    "calculus",
    "statistics",
    "physics",
    "chemistry",
    "biology",
    "english",
    "writing",
    "reading",
    "spanish",
    "french",
    "history",
    "computer_science",
    "economics",
    "psychology",
    "sat_prep",
    "act_prep",
    "music",
    "coding",
]
Tier = Literal["budget", "standard", "premium"]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: EventId
    customer_id: CustomerId
    occurred_at: UtcDatetime


class CustomerSignedUp(_Event):
    type: Literal["customer_signed_up"]
    tier: Tier


class SubscriptionChanged(_Event):
    type: Literal["subscription_changed"]
    tier: Tier


class SessionBooked(_Event):
    type: Literal["session_booked"]
    subject: Subject
    tutor_id: TutorId


class SessionCompleted(_Event):
    type: Literal["session_completed"]
    subject: Subject
    tutor_id: TutorId
    duration_minutes: Annotated[Number, Field(ge=0, le=MAX_SESSION_MINUTES)]
    first_session: StrictBool = False
    success: StrictBool | None = None


class SessionCancelled(_Event):
    type: Literal["session_cancelled"]
    subject: Subject
    cancelled_by: Literal["customer", "tutor"]


class SessionRated(_Event):
    type: Literal["session_rated"]
    rating: Annotated[Number, Field(ge=1, le=5)]
    tutor_id: TutorId


class IbCall(_Event):
    type: Literal["ib_call"]
    sentiment: Literal["negative", "neutral", "positive"]


class Login(_Event):
    type: Literal["login"]


class MessageSent(_Event):
    type: Literal["message_sent"]


class PaymentSucceeded(_Event):
    type: Literal["payment_succeeded"]
    amount: Annotated[Number, Field(ge=0, le=MAX_PAYMENT_USD)]


class PaymentFailed(_Event):
    type: Literal["payment_failed"]
    amount: Annotated[Number, Field(ge=0, le=MAX_PAYMENT_USD)]


class CustomerChurned(_Event):
    type: Literal["customer_churned"]


Event: TypeAlias = Annotated[
    CustomerSignedUp
    | SubscriptionChanged
    | SessionBooked
    | SessionCompleted
    | SessionCancelled
    | SessionRated
    | IbCall
    | Login
    | MessageSent
    | PaymentSucceeded
    | PaymentFailed
    | CustomerChurned,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "customer_signed_up",
    "subscription_changed",
    "session_booked",
    "session_completed",
    "session_cancelled",
    "session_rated",
    "ib_call",
    "login",
    "message_sent",
    "payment_succeeded",
    "payment_failed",
    "customer_churned",
)

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def unwrap_envelope(obj: Any) -> Any:
    """The event inside an SNS notification or EventBridge envelope; anything else as it is."""
    if isinstance(obj, dict):
        if obj.get("Type") == "Notification" and isinstance(obj.get("Message"), str):
            try:
                return loads_json(obj["Message"])
            except json.JSONDecodeError as exc:
                raise EventParseError("not_json", f"SNS Message is not JSON: {exc.msg}") from None
        if isinstance(obj.get("detail"), dict) and "type" not in obj:
            return obj["detail"]
    return obj


def loads_json(raw: bytes | str) -> Any:
    """`json.loads`, answered by pydantic-core's parser (3x faster) for every document it accepts.
    Whatever it refuses goes to `json.loads`, which accepts a few more (a BOM, lone surrogates) and
    otherwise raises its usual errors, so results and messages are exactly `json.loads`'.

    Two documents `json.loads` fails on with other errors fail with a `JSONDecodeError` here, so a
    caller's `except JSONDecodeError` costs one bad line, not the batch: nesting deeper than the
    interpreter's recursion limit (`RecursionError`), and an integer literal of more digits than
    Python converts (`ValueError`, 4,300 digits)."""
    try:
        return from_json(raw)
    except (ValueError, TypeError):  # TypeError: a str with lone surrogates, which json.loads takes
        pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise json.JSONDecodeError(MAX_JSON_DEPTH_ERROR, _text(raw), 0) from None
    except ValueError as exc:
        if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError):
            raise
        raise json.JSONDecodeError("a number too long to read", _text(raw), 0) from None


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


def parse_event(raw: bytes | str) -> Event:
    """One raw message body to a validated event, or an `EventParseError` saying what is wrong."""
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > MAX_EVENT_BYTES:
        raise EventParseError("too_large", f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        obj = loads_json(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EventParseError("not_json", f"body is not JSON: {exc}") from None
    return validate_event(unwrap_envelope(obj))


def validate_event(obj: Any) -> Event:
    """A decoded JSON object (envelope already removed) to a validated event."""
    if not isinstance(obj, dict):
        raise EventParseError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return _EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _describe(exc, obj) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a validator's own failure
        raise EventParseError("invalid_field", f"unreadable value: {type(exc).__name__}") from None


def _describe(exc: ValidationError, obj: dict[str, Any]) -> EventParseError:
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    if kind == "union_tag_not_found":
        return EventParseError("missing_field", "field 'type' is required", "type")
    if kind == "union_tag_invalid":
        return EventParseError(
            "unknown_type",
            f"unknown event type {str(obj.get('type'))[:40]!r}; expected one of {', '.join(EVENT_TYPES)}",
            "type",
        )
    # loc is (event type, field, ...): the field is what a producer needs to fix
    field = loc[1] if len(loc) > 1 else ".".join(loc)
    if kind == "missing":
        return EventParseError(
            "missing_field", f"field '{field}' is required for type {obj.get('type')!r}", field
        )
    return EventParseError("invalid_field", f"field '{field}': {error['msg']}", field)


def check_event_time(event: Event, now: datetime, retention: timedelta) -> EventParseError | None:
    """Events too far in the future or older than retention cannot be placed in a window."""
    if event.occurred_at > now + MAX_FUTURE_SKEW:
        return EventParseError(
            "in_future",
            f"occurred_at {event.occurred_at.isoformat()} is more than 5 minutes after {now.isoformat()}",
        )
    if event.occurred_at < now - retention:
        return EventParseError(
            "too_old",
            f"occurred_at {event.occurred_at.isoformat()} is older than the {retention.days}-day retention window",
        )
    return None


def event_to_json(event: Event) -> str:
    """The wire form of an event (occurred_at in UTC with Z), as producers send it."""
    data = event.model_dump(mode="json", exclude_none=True)
    data["occurred_at"] = format_utc(event.occurred_at)
    return json.dumps(data, separators=(",", ":"))


def format_utc(moment: datetime) -> str:
    """ISO-8601 UTC with a Z, milliseconds only when present: 2026-11-27T12:00:00Z."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"
