"""The window maths as first written, page by page: the oracle for `features.windows.window_batch`.

`window_batch` computes the same from running day sums cached on each state; this sums every page of
every customer from scratch, the obvious way. tests/unit/test_window_properties.py checks they agree
exactly, through random histories, late events, pruning, busy days and views of the past.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from features.events import EVENT_TYPES
from features.state import DAY_US, CustomerState, to_us
from features.windows import COUNTER_INDEX, COUNTER_KEYS, WindowBatch, _day_windows

_GROUP_OF_DAYS_BACK = [0] * 7 + [1] * 7 + [2] * 16  # 0-6 back: this week; 7-13: the week before; 14-29


def reference_window_batch(states: Sequence[CustomerState], as_of: datetime) -> WindowBatch:
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
