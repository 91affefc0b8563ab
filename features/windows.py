"""Window maths: sum customers' day pages into 7/14/30-day windows relative to `as_of`.

Pure functions, no I/O, no wall clock: live processing passes now, replay and training pass an
event-time instant, and the same code answers both.

A window of N days at `as_of` covers the N UTC calendar days ending with the day that contains
`as_of` (so at 2026-11-27T15:00Z the 7-day window is 2026-11-21 .. 2026-11-27, inclusive). Pages of
later days are ignored, which makes end-of-day snapshots exact point-in-time views. `prev7d` is the
7 days before the 7-day window (days 8..14 back), for trends.

The result is columnar (one row per customer) so the registry computes each feature for a whole
batch of customers with one numpy operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from features.events import EVENT_TYPES, SUBJECTS
from features.state import DAY_US, CustomerState, to_us

# Every counter a page can hold (features.state._fold_into_page), in a fixed order.
COUNTER_KEYS: tuple[str, ...] = (
    *(f"n.{kind}" for kind in EVENT_TYPES),
    "n.ib_call.negative", "n.ib_call.neutral", "n.ib_call.positive",
    "n.session_cancelled.customer", "n.session_cancelled.tutor",
    "seconds.session", "rating.centi", "rating.low", "cents.payment_succeeded", "cents.payment_failed",
    *(f"subject.{subject}" for subject in SUBJECTS),
)  # fmt: skip
COUNTER_INDEX = {key: i for i, key in enumerate(COUNTER_KEYS)}
EVENT_COUNTERS = [COUNTER_INDEX[f"n.{kind}"] for kind in EVENT_TYPES]
_GROUP_OF_DAYS_BACK = [0] * 7 + [1] * 7 + [2] * 16  # 0-6 back: this week; 7-13: the week before; 14-29


@dataclass
class WindowBatch:
    """Everything the feature registry reads, one row per customer."""

    as_of_us: int
    counts: dict[str, np.ndarray]  # window ("7d", "prev7d", "14d", "30d") -> [customers, counters]
    active_days: dict[str, np.ndarray]  # window -> days with any event
    session_days: dict[str, np.ndarray]  # window -> days with a completed session
    login_days: dict[str, np.ndarray]  # window -> days with a login
    last_us: dict[str, np.ndarray]  # event type -> latest occurred_at <= as_of (NaN: none)
    start_us: np.ndarray  # sign-up, else first event seen, else as_of
    lifetime: dict[str, np.ndarray]  # profile lifetime counters
    tier: np.ndarray  # 0 budget, 1 standard, 2 premium (0 unknown)
    first_session_success: np.ndarray  # 1 / 0
    has_first_session: np.ndarray  # 1 / 0
    primary_tutor: np.ndarray  # [customers, 3]: sessions, centi-star sum, ratings of the 30-day primary tutor
    distinct_tutors: np.ndarray

    def count(self, window: str, key: str) -> np.ndarray:
        return self.counts[window][:, COUNTER_INDEX[key]]

    def life(self, key: str) -> np.ndarray:
        return self.lifetime.get(key, np.zeros(len(self.start_us)))


def window_batch(states: Sequence[CustomerState], as_of: datetime) -> WindowBatch:
    as_of_us = to_us(as_of)
    as_of_day = as_of_us // DAY_US
    n = len(states)
    groups = np.zeros((3, n, len(COUNTER_KEYS)))
    days = np.zeros((3, 3, n))  # [any/session/login, group, customer]
    last: dict[str, np.ndarray] = {kind: np.full(n, np.nan) for kind in EVENT_TYPES}
    primary = np.zeros((n, 3))
    distinct_tutors = np.zeros(n)
    lifetime: dict[str, np.ndarray] = {}
    start = np.full(n, float(as_of_us))
    tier, first_success, has_first = np.zeros(n), np.zeros(n), np.zeros(n)
    session_key, login_key = "n.session_completed", "n.login"

    for row, state in enumerate(states):
        sums: list[dict[str, int]] = [{}, {}, {}]
        day_sets: list[list[set[int]]] = [[set(), set(), set()] for _ in range(3)]
        tutors: dict[str, list[int]] = {}
        # The profile's latest time per type is the answer unless it lies after as_of (a view of
        # the past): only those types need the pages' own latest times.
        latest: dict[str, int] = {}
        unresolved: set[str] = set()
        for kind, moment in state.profile.last_us.items():
            if moment <= as_of_us:
                latest[kind] = moment
            else:
                unresolved.add(kind)
        for (day, _), page in state.pages.items():
            back = as_of_day - day
            if back < 0:
                continue  # after as_of: not part of this point-in-time view
            if unresolved:
                for kind in unresolved.intersection(page.last_us):
                    moment = page.last_us[kind]
                    if moment <= as_of_us and moment > latest.get(kind, -1):
                        latest[kind] = moment
            if back > 29:
                continue
            group = _GROUP_OF_DAYS_BACK[back]
            target = sums[group]
            for key, value in page.counts.items():
                target[key] = target.get(key, 0) + value
            day_sets[0][group].add(day)
            if page.counts.get(session_key):
                day_sets[1][group].add(day)
            if page.counts.get(login_key):
                day_sets[2][group].add(day)
            for tutor_id, agg in page.tutors.items():
                total = tutors.setdefault(tutor_id, [0, 0, 0])
                total[0] += agg[0]
                total[1] += agg[1]
                total[2] += agg[2]
        for group, target in enumerate(sums):
            for key, value in target.items():
                index = COUNTER_INDEX.get(key)
                if index is not None:
                    groups[group, row, index] = value
            for flag in range(3):
                days[flag, group, row] = len(day_sets[flag][group])

        profile = state.profile
        for kind, moment in latest.items():
            if kind in last:
                last[kind][row] = moment
        begun = profile.signed_up_us if profile.signed_up_us is not None else profile.first_seen_us
        if begun is not None:
            start[row] = begun
        for key, value in profile.lifetime.items():
            lifetime.setdefault(key, np.zeros(n))[row] = value
        if profile.tier is not None:
            tier[row] = profile.tier[2]
        if profile.first_session is not None:
            has_first[row] = 1
            first_success[row] = profile.first_session[2]
        with_sessions = [(tid, agg) for tid, agg in tutors.items() if agg[0] > 0]
        distinct_tutors[row] = len(with_sessions)
        if with_sessions:  # most sessions in 30 days; ties go to the smallest tutor id
            primary[row] = min(with_sessions, key=lambda item: (-item[1][0], item[0]))[1]

    week, prev_week, rest = groups
    fortnight = week + prev_week
    return WindowBatch(
        as_of_us=as_of_us,
        counts={"7d": week, "prev7d": prev_week, "14d": fortnight, "30d": fortnight + rest},
        active_days=_day_windows(days[0]),
        session_days=_day_windows(days[1]),
        login_days=_day_windows(days[2]),
        last_us=last,
        start_us=start,
        lifetime=lifetime,
        tier=tier,
        first_session_success=first_success,
        has_first_session=has_first,
        primary_tutor=primary,
        distinct_tutors=distinct_tutors,
    )


def _day_windows(by_group: np.ndarray) -> dict[str, np.ndarray]:
    return {"7d": by_group[0], "prev7d": by_group[1], "14d": by_group[0] + by_group[1], "30d": by_group.sum(axis=0)}
