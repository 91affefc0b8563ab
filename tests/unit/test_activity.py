"""Who is active at a scoring instant: the population the backtest, training and re-scoring share."""

from __future__ import annotations

from datetime import datetime, timedelta

from features.activity import day_end_us, has_churned, is_active
from features.events import validate_event
from features.state import DAY_US, CustomerState, apply_event, to_us

RETENTION = timedelta(days=35)


def _state(*events: tuple[str, str]) -> CustomerState:
    state = CustomerState("c-1")
    for number, (kind, when) in enumerate(events):
        apply_event(
            state,
            validate_event(
                {
                    "event_id": f"e{number}",
                    "customer_id": "c-1",
                    "type": kind,
                    "occurred_at": when,
                    "tier": "standard",
                }
            ),
        )
    return state


def _us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


def test_day_end_is_the_last_microsecond_of_the_utc_day() -> None:
    day = _us("2026-11-27T00:00:00+00:00") // DAY_US
    assert day_end_us(day) == _us("2026-11-27T23:59:59.999999+00:00")


def test_a_customer_is_active_from_their_first_event_until_churn() -> None:
    state = _state(("customer_signed_up", "2026-11-01T10:00:00Z"), ("login", "2026-11-05T10:00:00Z"))
    assert not is_active(state, _us("2026-11-01T09:00:00+00:00"), RETENTION)  # before anything happened
    assert is_active(state, _us("2026-11-20T00:00:00+00:00"), RETENTION)
    apply_event(
        state,
        validate_event(
            {
                "event_id": "x",
                "customer_id": "c-1",
                "type": "customer_churned",
                "occurred_at": "2026-11-21T00:00:00Z",
            }
        ),
    )
    assert has_churned(state.profile)
    assert not is_active(state, _us("2026-11-22T00:00:00+00:00"), RETENTION)


def test_a_customer_without_a_sign_up_in_the_log_counts_as_signed_up_before_it() -> None:
    assert is_active(_state(("login", "2026-11-05T10:00:00Z")), _us("2026-11-06T00:00:00+00:00"), RETENTION)


def test_a_customer_who_signs_up_again_is_active_again_and_a_tie_goes_to_the_sign_up() -> None:
    state = _state(
        ("customer_signed_up", "2026-11-01T10:00:00Z"),
        ("customer_churned", "2026-11-03T10:00:00Z"),
        ("customer_signed_up", "2026-11-03T10:00:00Z"),
    )
    assert not has_churned(state.profile)
    assert is_active(state, _us("2026-11-04T00:00:00+00:00"), RETENTION)


def test_a_customer_silent_for_longer_than_retention_is_no_longer_active() -> None:
    state = _state(("customer_signed_up", "2026-10-01T10:00:00Z"))
    assert is_active(state, _us("2026-11-05T10:00:00+00:00"), RETENTION)
    assert not is_active(state, _us("2026-11-05T10:00:00.000001+00:00"), RETENTION)
