"""The feature registry: every model input, its name, its order, its meaning, and a stable hash.

The first 26 names are the seed generator's, spelled exactly as there; the rest are window x
aggregation families declared once below. The order here is the order of the model's input vector,
and `FEATURE_HASH` (sha256 of the version and the names) is what a model bundle records: a worker
refuses a bundle trained on a different registry.

Conventions (all documented per feature in `describe()`):
- Frequencies are sessions per week over the window (a 30-day window: count / (30 / 7)).
- Averages and rates with nothing to average are 0.0 (payment success rate: 1.0, nothing failed).
- Recency is whole days since the latest such event at or before `as_of`. Never happened: engagement
  events (session, login, payment, message, booking, any event) count from the customer's start,
  since inactivity since joining is the churn signal; adverse events (call, cancellation, failed
  payment, rating) read `RECENCY_NEVER` days, i.e. "long ago".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from features.events import SUBJECTS
from features.state import DAY_US, CustomerState
from features.windows import EVENT_COUNTERS, WindowBatch, window_batch

REGISTRY_VERSION = 1
RECENCY_NEVER = 365


Column = np.ndarray
Compute = Callable[[WindowBatch], Any]


@dataclass(frozen=True)
class FeatureDef:
    name: str
    description: str
    compute: Compute  # one value per customer (an array, or a scalar for all)


def _ratio(numerator: Any, denominator: Any, empty: float = 0.0) -> Column:
    num, den = np.broadcast_arrays(
        np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    )
    out = np.full(num.shape, empty)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _days_since(v: WindowBatch, kinds: Sequence[str], never_from_start: bool) -> Column:
    latest = v.last_us[kinds[0]]
    for kind in kinds[1:]:
        latest = np.fmax(latest, v.last_us[kind])  # fmax: NaN (never) loses to any real time
    fallback = v.start_us if never_from_start else v.as_of_us - RECENCY_NEVER * DAY_US
    latest = np.where(np.isnan(latest), fallback, latest)
    return np.maximum(0.0, np.floor((v.as_of_us - latest) / DAY_US))


def _avg_rating(v: WindowBatch, w: str) -> Column:
    return _ratio(v.count(w, "rating.centi") / 100, v.count(w, "n.session_rated"))


def _cancellation_rate(v: WindowBatch, w: str, counter: str = "n.session_cancelled") -> Column:
    return _ratio(v.count(w, counter), v.count(w, "n.session_cancelled") + v.count(w, "n.session_completed"))


def _payment_success_rate(v: WindowBatch, w: str) -> Column:
    ok = v.count(w, "n.payment_succeeded")
    return _ratio(ok, ok + v.count(w, "n.payment_failed"), 1.0)


def _seed_features() -> list[FeatureDef]:
    """The seed generator's 26 features, in the seed's order."""
    f = FeatureDef
    out = [
        f(
            "session_count_7d",
            "completed sessions, last 7 days",
            lambda v: v.count("7d", "n.session_completed"),
        ),
        f(
            "session_frequency_7d",
            "completed sessions per week, last 7 days",
            lambda v: v.count("7d", "n.session_completed") / 1.0,
        ),
        f("avg_rating_7d", "mean rating given, last 7 days (0 = none)", lambda v: _avg_rating(v, "7d")),
        f(
            "cancellation_rate_7d",
            "cancelled / (cancelled + completed) sessions, last 7 days",
            lambda v: _cancellation_rate(v, "7d"),
        ),
        f("ib_call_count_7d", "inbound support calls, last 7 days", lambda v: v.count("7d", "n.ib_call")),
        f(
            "session_count_14d",
            "completed sessions, last 14 days",
            lambda v: v.count("14d", "n.session_completed"),
        ),
        f(
            "session_frequency_14d",
            "completed sessions per week, last 14 days",
            lambda v: v.count("14d", "n.session_completed") / 2.0,
        ),
        f("avg_rating_14d", "mean rating given, last 14 days (0 = none)", lambda v: _avg_rating(v, "14d")),
        f("ib_call_count_14d", "inbound support calls, last 14 days", lambda v: v.count("14d", "n.ib_call")),
        f(
            "negative_calls_14d",
            "inbound calls with negative sentiment, last 14 days",
            lambda v: v.count("14d", "n.ib_call.negative"),
        ),
        f(
            "session_count_30d",
            "completed sessions, last 30 days",
            lambda v: v.count("30d", "n.session_completed"),
        ),
        f(
            "session_frequency_30d",
            "completed sessions per week, last 30 days",
            lambda v: v.count("30d", "n.session_completed") / (30 / 7),
        ),
        f("avg_rating_30d", "mean rating given, last 30 days (0 = none)", lambda v: _avg_rating(v, "30d")),
        f("ib_call_count_30d", "inbound support calls, last 30 days", lambda v: v.count("30d", "n.ib_call")),
        f(
            "days_since_last_session",
            "whole days since the latest completed session (never: since start)",
            lambda v: _days_since(v, ["session_completed"], True),
        ),
        f(
            "days_since_last_login",
            "whole days since the latest login (never: since start)",
            lambda v: _days_since(v, ["login"], True),
        ),
        f(
            "days_since_last_payment",
            "whole days since the latest successful payment (never: since start)",
            lambda v: _days_since(v, ["payment_succeeded"], True),
        ),
        f(
            "customer_tenure_days",
            "whole days since sign-up (or the first event seen)",
            lambda v: np.maximum(0.0, np.floor((v.as_of_us - v.start_us) / DAY_US)),
        ),
        f("login_count_7d", "logins, last 7 days", lambda v: v.count("7d", "n.login")),
        f("message_count_7d", "messages sent, last 7 days", lambda v: v.count("7d", "n.message_sent")),
        f(
            "payment_success_rate_30d",
            "succeeded / all payments, last 30 days (1 = none failed)",
            lambda v: _payment_success_rate(v, "30d"),
        ),
        f(
            "total_spend_lifetime",
            "USD of successful payments, lifetime",
            lambda v: v.life("spend_cents") / 100,
        ),
        f(
            "tutor_consistency",
            "share of 30-day sessions with the primary tutor (0 = no sessions)",
            lambda v: _ratio(v.primary_tutor[:, 0], v.count("30d", "n.session_completed")),
        ),
        f(
            "primary_tutor_rating",
            "mean 30-day rating of the primary tutor (0 = unrated)",
            lambda v: _ratio(v.primary_tutor[:, 1] / 100, v.primary_tutor[:, 2]),
        ),
        f(
            "subscription_tier",
            "latest tier: 0 budget, 1 standard, 2 premium (0 = unknown)",
            lambda v: v.tier,
        ),
        f(
            "first_session_was_success",
            "1 if the customer's first session succeeded, else 0",
            lambda v: v.first_session_success,
        ),
    ]
    return out


# (name stem, description, counter) for plain window counts beyond the seed's.
_WINDOW_COUNTS = [
    ("booking_count", "sessions booked", "n.session_booked"),
    ("cancellation_count", "sessions cancelled", "n.session_cancelled"),
    ("customer_cancellation_count", "sessions cancelled by the customer", "n.session_cancelled.customer"),
    ("tutor_cancellation_count", "sessions cancelled by the tutor", "n.session_cancelled.tutor"),
    ("rating_count", "ratings given", "n.session_rated"),
    ("low_rating_count", "ratings of 2 stars or less", "rating.low"),
    ("neutral_calls", "inbound calls with neutral sentiment", "n.ib_call.neutral"),
    ("positive_calls", "inbound calls with positive sentiment", "n.ib_call.positive"),
    ("payment_success_count", "successful payments", "n.payment_succeeded"),
    ("payment_failure_count", "failed payments", "n.payment_failed"),
    ("tier_change_count", "subscription changes", "n.subscription_changed"),
]
# Seed families that the seed names at one or two windows only: the registry completes them.
_SEED_FAMILY_GAPS = [
    ("cancellation_rate", (14, 30)),
    ("negative_calls", (7, 30)),
    ("login_count", (14, 30)),
    ("message_count", (14, 30)),
    ("payment_success_rate", (7, 14)),
]


def _count(w: str, counter: str, scale: float = 1.0) -> Compute:
    return lambda v: v.count(w, counter) / scale


def _window_family(days: int) -> list[FeatureDef]:
    """Every window x aggregation feature of one window length, beyond the seed's own names."""
    f = FeatureDef
    w = f"{days}d"
    out = [
        f(f"{stem}_{w}", f"{what}, last {days} days", _count(w, counter))
        for stem, what, counter in _WINDOW_COUNTS
    ]
    out += [
        f(
            f"session_minutes_{w}",
            f"minutes of completed sessions, last {days} days",
            _count(w, "seconds.session", 60),
        ),
        f(
            f"avg_session_minutes_{w}",
            f"mean completed session length, last {days} days (0 = none)",
            lambda v: _ratio(v.count(w, "seconds.session") / 60, v.count(w, "n.session_completed")),
        ),
        f(
            f"payment_amount_{w}",
            f"USD of successful payments, last {days} days",
            _count(w, "cents.payment_succeeded", 100),
        ),
        f(
            f"failed_payment_amount_{w}",
            f"USD of failed payments, last {days} days",
            _count(w, "cents.payment_failed", 100),
        ),
        f(f"active_days_{w}", f"days with any event, last {days} days", lambda v: v.active_days[w]),
        f(
            f"session_days_{w}",
            f"days with a completed session, last {days} days",
            lambda v: v.session_days[w],
        ),
        f(f"login_days_{w}", f"days with a login, last {days} days", lambda v: v.login_days[w]),
        f(
            f"negative_call_share_{w}",
            f"negative / all inbound calls, last {days} days (0 = none)",
            lambda v: _ratio(v.count(w, "n.ib_call.negative"), v.count(w, "n.ib_call")),
        ),
        f(
            f"low_rating_rate_{w}",
            f"share of ratings at 2 stars or less, last {days} days (0 = none)",
            lambda v: _ratio(v.count(w, "rating.low"), v.count(w, "n.session_rated")),
        ),
        f(
            f"tutor_cancellation_rate_{w}",
            f"tutor-cancelled / (cancelled + completed), last {days} days",
            lambda v: _cancellation_rate(v, w, "n.session_cancelled.tutor"),
        ),
        f(
            f"event_count_{w}",
            f"events of any type, last {days} days",
            lambda v: v.counts[w][:, EVENT_COUNTERS].sum(axis=1),
        ),
        f(f"login_frequency_{w}", f"logins per week, last {days} days", _count(w, "n.login", days / 7)),
    ]
    return out


def _window_features() -> list[FeatureDef]:
    out: list[FeatureDef] = []
    for days in (7, 14, 30):
        out += _window_family(days)
    for stem, windows in _SEED_FAMILY_GAPS:
        for days in windows:
            out.append(_seed_family_member(stem, days))
    return out


def _seed_family_member(stem: str, days: int) -> FeatureDef:
    w = f"{days}d"
    f = FeatureDef
    if stem == "cancellation_rate":
        return f(
            f"cancellation_rate_{w}",
            f"cancelled / (cancelled + completed) sessions, last {days} days",
            lambda v: _cancellation_rate(v, w),
        )
    if stem == "payment_success_rate":
        return f(
            f"payment_success_rate_{w}",
            f"succeeded / all payments, last {days} days (1 = none failed)",
            lambda v: _payment_success_rate(v, w),
        )
    counter = {
        "negative_calls": "n.ib_call.negative",
        "login_count": "n.login",
        "message_count": "n.message_sent",
    }
    return f(
        f"{stem}_{w}", f"{stem.replace('_', ' ')}, last {days} days", lambda v: v.count(w, counter[stem])
    )


def _trend_features() -> list[FeatureDef]:
    """Last 7 days against the 7 before: a falling trend is the earliest churn signal."""
    f = FeatureDef

    def delta(counter: str) -> Callable[[WindowBatch], Column]:
        return lambda v: v.count("7d", counter) - v.count("prev7d", counter)

    def rating_delta(v: WindowBatch) -> Column:
        both_rated = (v.count("7d", "n.session_rated") > 0) & (v.count("prev7d", "n.session_rated") > 0)
        return np.where(both_rated, _avg_rating(v, "7d") - _avg_rating(v, "prev7d"), 0.0)

    return [
        f("session_count_trend_7d", "sessions last 7 days minus the 7 before", delta("n.session_completed")),
        f("login_count_trend_7d", "logins last 7 days minus the 7 before", delta("n.login")),
        f("message_count_trend_7d", "messages last 7 days minus the 7 before", delta("n.message_sent")),
        f("ib_call_count_trend_7d", "inbound calls last 7 days minus the 7 before", delta("n.ib_call")),
        f(
            "cancellation_count_trend_7d",
            "cancellations last 7 days minus the 7 before",
            delta("n.session_cancelled"),
        ),
        f(
            "session_minutes_trend_7d",
            "session minutes last 7 days minus the 7 before",
            lambda v: (v.count("7d", "seconds.session") - v.count("prev7d", "seconds.session")) / 60,
        ),
        f(
            "avg_rating_trend_7d",
            "mean rating last 7 days minus the 7 before (0 = either unrated)",
            rating_delta,
        ),
        f(
            "session_frequency_ratio_7d_30d",
            "weekly sessions, last 7 days / last 30 days (1 = no 30-day sessions)",
            lambda v: _ratio(
                v.count("7d", "n.session_completed"), v.count("30d", "n.session_completed") * 7 / 30, 1.0
            ),
        ),
        f(
            "login_frequency_ratio_7d_30d",
            "weekly logins, last 7 days / last 30 days (1 = no 30-day logins)",
            lambda v: _ratio(v.count("7d", "n.login"), v.count("30d", "n.login") * 7 / 30, 1.0),
        ),
    ]


def _recency(kinds: Sequence[str], from_start: bool) -> Compute:
    return lambda v: _days_since(v, kinds, from_start)


def _lifetime(key: str) -> Compute:
    return lambda v: v.life(key)


def _recency_and_lifetime_features() -> list[FeatureDef]:
    f = FeatureDef
    recency = [
        ("booking", ["session_booked"], True),
        ("message", ["message_sent"], True),
        (
            "event",
            [
                "session_booked",
                "session_completed",
                "session_rated",
                "login",
                "message_sent",
                "payment_succeeded",
                "session_cancelled",
                "ib_call",
                "payment_failed",
            ],
            True,
        ),
        ("ib_call", ["ib_call"], False),
        ("cancellation", ["session_cancelled"], False),
        ("payment_failure", ["payment_failed"], False),
        ("rating", ["session_rated"], False),
    ]
    out = [
        f(
            f"days_since_last_{stem}",
            f"whole days since the latest {', '.join(kinds) if len(kinds) < 3 else 'event'}"
            f" ({'never: since start' if from_start else f'never: {RECENCY_NEVER}'})",
            _recency(kinds, from_start),
        )
        for stem, kinds, from_start in recency
    ]
    lifetime = [
        ("lifetime_session_count", "completed sessions, lifetime", "sessions"),
        ("lifetime_ib_call_count", "inbound calls, lifetime", "ib_calls"),
        ("lifetime_negative_calls", "negative inbound calls, lifetime", "negative_calls"),
        ("lifetime_payment_failure_count", "failed payments, lifetime", "payment_failures"),
        ("lifetime_tier_change_count", "subscription changes, lifetime", "tier_changes"),
    ]
    out += [f(name, what, _lifetime(key)) for name, what, key in lifetime]
    out += [
        f(
            "has_first_session",
            "1 once the customer completed a first session",
            lambda v: v.has_first_session,
        ),
        f(
            "distinct_tutors_30d",
            "tutors with a completed session, last 30 days",
            lambda v: v.distinct_tutors,
        ),
        f(
            "avg_payment_amount_30d",
            "USD per successful payment, last 30 days (0 = none)",
            lambda v: _ratio(
                v.count("30d", "cents.payment_succeeded") / 100, v.count("30d", "n.payment_succeeded")
            ),
        ),
        f(
            "distinct_subjects_30d",
            "subjects with a completed session, last 30 days",
            lambda v: sum((v.count("30d", "subject." + s) > 0).astype(np.float64) for s in SUBJECTS),
        ),
    ]
    return out


def _subject_features() -> list[FeatureDef]:
    return [
        FeatureDef(
            f"subject_sessions_30d_{s}",
            f"completed {s} sessions, last 30 days",
            _count("30d", "subject." + s),
        )
        for s in SUBJECTS
    ]


FEATURES: tuple[FeatureDef, ...] = tuple(
    _seed_features()
    + _window_features()
    + _trend_features()
    + _recency_and_lifetime_features()
    + _subject_features()
)
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
SEED_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES[:26]
FEATURE_HASH: str = hashlib.sha256(f"v{REGISTRY_VERSION}:{','.join(FEATURE_NAMES)}".encode()).hexdigest()[:16]

if len(set(FEATURE_NAMES)) != len(FEATURE_NAMES):  # pragma: no cover - a registry edit mistake
    raise RuntimeError("duplicate feature names in the registry")


def compute_features_batch(
    states: Sequence[CustomerState], as_of: datetime | Sequence[datetime]
) -> np.ndarray:
    """The model's input matrix (float64, [customers, features] in registry order) at `as_of`: one
    instant for all, or one per customer."""
    batch = window_batch(states, as_of)
    out = np.empty((len(states), len(FEATURES)))
    for column, feature in enumerate(FEATURES):
        out[:, column] = feature.compute(batch)
    return out


def compute_features(state: CustomerState, as_of: datetime) -> np.ndarray:
    """One customer's input vector (float64, registry order) at `as_of`."""
    vector: np.ndarray = compute_features_batch([state], as_of)[0]
    return vector


class FeatureRow(Mapping[str, float]):
    """One customer's vector read by feature name, without building a 150-key dict (the alert
    rules read a handful of features per customer on the hot path)."""

    __slots__ = ("_vector",)

    def __init__(self, vector: np.ndarray) -> None:
        self._vector = vector

    def __getitem__(self, name: str) -> float:
        return float(self._vector[FEATURE_INDEX[name]])

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_NAMES)

    def __len__(self) -> int:
        return len(FEATURE_NAMES)


def features_as_dict(vector: np.ndarray) -> dict[str, float]:
    return {name: float(value) for name, value in zip(FEATURE_NAMES, vector, strict=True)}


def describe() -> list[dict[str, str]]:
    return [{"name": feature.name, "description": feature.description} for feature in FEATURES]
