"""Window maths: sum a customer's day pages into 7/14/30-day windows relative to `as_of`.

Pure functions, no I/O, no wall clock: live processing passes now, replay and training pass an
event-time instant, and the same code answers both.

A window of N days at `as_of` covers the N UTC calendar days ending with the day that contains
`as_of` (so at 2026-11-27T15:00Z the 7-day window is 2026-11-21 .. 2026-11-27, inclusive). Pages of
later days are ignored, which makes end-of-day snapshots exact point-in-time views. `prev7d` is the
7 days before the 7-day window (days 8..14 back), for trends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from features.state import DAY_US, CustomerState, Profile, to_us

WINDOW_DAYS = (7, 14, 30)
_WINDOWS = {"7d": (0, 6), "14d": (0, 13), "30d": (0, 29), "prev7d": (7, 13)}  # days back, inclusive


@dataclass
class WindowView:
    """Everything the feature registry reads: summed counters per window and the profile."""

    as_of_us: int
    profile: Profile
    counts: dict[str, dict[str, int]]  # window -> counter -> sum
    active_days: dict[str, int]  # window -> days with any event
    session_days: dict[str, int]  # window -> days with a completed session
    login_days: dict[str, int]  # window -> days with a login
    tutors_30d: dict[str, list[int]] = field(default_factory=dict)  # tutor -> [sessions, centi sum, ratings]
    last_us: dict[str, int] = field(default_factory=dict)  # event type -> latest occurred_at <= as_of

    def count(self, window: str, key: str) -> int:
        return self.counts[window].get(key, 0)


def window_view(state: CustomerState, as_of: datetime) -> WindowView:
    as_of_us = to_us(as_of)
    as_of_day = as_of_us // DAY_US
    counts: dict[str, dict[str, int]] = {name: {} for name in _WINDOWS}
    days_with: dict[str, dict[str, set[int]]] = {
        kind: {name: set() for name in _WINDOWS} for kind in ("any", "session", "login")
    }
    tutors: dict[str, list[int]] = {}
    last_us: dict[str, int] = {}

    for (day, _), page in state.pages.items():
        back = as_of_day - day
        if back < 0:
            continue  # after as_of: not part of this point-in-time view
        for kind, latest in page.last_us.items():
            if latest <= as_of_us and latest > last_us.get(kind, -1):
                last_us[kind] = latest
        if back > 29:
            continue
        for name, (near, far) in _WINDOWS.items():
            if near <= back <= far:
                target = counts[name]
                for key, value in page.counts.items():
                    target[key] = target.get(key, 0) + value
                days_with["any"][name].add(day)
                if page.counts.get("n.session_completed"):
                    days_with["session"][name].add(day)
                if page.counts.get("n.login"):
                    days_with["login"][name].add(day)
        for tutor_id, (sessions, centi, ratings) in page.tutors.items():
            total = tutors.setdefault(tutor_id, [0, 0, 0])
            total[0] += sessions
            total[1] += centi
            total[2] += ratings

    # Older activity than the pages hold lives in the profile's lifetime maxima.
    for kind, latest in state.profile.last_us.items():
        if latest <= as_of_us and latest > last_us.get(kind, -1):
            last_us[kind] = latest

    return WindowView(
        as_of_us=as_of_us,
        profile=state.profile,
        counts=counts,
        active_days={name: len(days) for name, days in days_with["any"].items()},
        session_days={name: len(days) for name, days in days_with["session"].items()},
        login_days={name: len(days) for name, days in days_with["login"].items()},
        tutors_30d=tutors,
        last_us=last_us,
    )
