"""argparse `type=` converters for both command-line tools, one of each: a bad value is an argparse
error (exit 2) that says what was expected."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time


def _number(text: str, kind: type[int] | type[float], what: str) -> float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number, at least 1 (counts: customers, days, workers, shards, epochs, ...)."""
    value = int(_number(text, int, "a whole number"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number above 0 (rates, hours, learning rates, ...)."""
    value = float(_number(text, float, "a number"))
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def share(text: str) -> float:
    """A share in (0, 1]: a precision or rate to reach, where 1 is a meaningful goal and 0 is not."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a share above 0 and at most 1, got {text}")
    return value


def holdout_fraction(text: str) -> float:
    """A fraction in [0, 1): the part of something set aside, where 0 means none and 1 would leave
    nothing to work with (validation and test customers)."""
    value = float(_number(text, float, "a number"))
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {value}")
    return value


def port(text: str) -> int:
    value = int(_number(text, int, "a port number"))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0 = any free port), got {value}")
    return value


def iso_instant(text: str) -> datetime:
    """An ISO-8601 instant with an offset or Z, as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO-8601 instant: {text!r} (e.g. 2026-11-27T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset or Z, e.g. 2026-11-27T12:00:00Z")
    return moment.astimezone(UTC)


def iso_day(text: str) -> date:
    """A UTC day: `2026-11-27`, or an instant with an offset (its UTC day)."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return iso_instant(text).date()
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a UTC day: {text!r} (e.g. 2026-11-27)") from None


def day_start_or_instant(text: str) -> datetime:
    """A UTC day (its midnight) or an instant with an offset, as UTC."""
    try:
        return datetime.combine(date.fromisoformat(text), time(), UTC)
    except ValueError:
        return iso_instant(text)
