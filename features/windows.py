"""Window maths: sum customers' day pages into 7/14/30-day windows relative to `as_of`.

No I/O, no wall clock: live processing passes now, replay and training pass an event-time instant,
and the same code answers both. The one side effect is a cache of running day sums on each state
(see `day_sums` below), derived from its pages and brought up to date on every use.

A window of N days at `as_of` covers the N UTC calendar days ending with the day that contains
`as_of` (so at 2026-11-27T15:00Z the 7-day window is 2026-11-21 .. 2026-11-27, inclusive). Pages of
later days are ignored, which makes end-of-day snapshots exact point-in-time views. `prev7d` is the
7 days before the 7-day window (days 8..14 back), for trends.

The result is columnar (one row per customer) so the registry computes each feature for a whole
batch of customers with one numpy operation.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from features.events import EVENT_TYPES, SUBJECTS
from features.state import DAY_US, CustomerState, DayPage, to_us

# Every counter a page can hold (features.state._fold_into_page), in a fixed order.
COUNTER_KEYS: tuple[str, ...] = (
    *(f"n.{kind}" for kind in EVENT_TYPES),
    "n.ib_call.negative",
    "n.ib_call.neutral",
    "n.ib_call.positive",
    "n.session_cancelled.customer",
    "n.session_cancelled.tutor",
    "seconds.session",
    "rating.centi",
    "rating.low",
    "cents.payment_succeeded",
    "cents.payment_failed",
    *(f"subject.{subject}" for subject in SUBJECTS),
)
COUNTER_INDEX = {key: i for i, key in enumerate(COUNTER_KEYS)}
EVENT_COUNTERS = [COUNTER_INDEX[f"n.{kind}"] for kind in EVENT_TYPES]
_SESSION, _LOGIN = COUNTER_INDEX["n.session_completed"], COUNTER_INDEX["n.login"]
_TYPE_INDEX = {kind: i for i, kind in enumerate(EVENT_TYPES)}
_NAN = float("nan")


@dataclass
class WindowBatch:
    """Everything the feature registry reads, one row per customer."""

    as_of_us: int | np.ndarray  # one instant, or one per customer
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


def window_batch(states: Sequence[CustomerState], as_of: datetime | Sequence[datetime]) -> WindowBatch:
    """The windows of `states` at `as_of`: one instant for all, or one per state (the instants of
    their previous scorings, say: worker/alerts/changes.py), in one pass either way."""
    instants = [to_us(as_of)] * len(states) if isinstance(as_of, datetime) else [to_us(a) for a in as_of]
    if len(instants) != len(states):
        raise ValueError(f"{len(instants)} instants for {len(states)} customers")
    n = len(states)
    # Collected per customer in Python lists, made arrays once at the end (numpy item by item is slow).
    cumulative: list[np.ndarray] = []  # the running sums at the four bounds
    day_counts: list[int] = []  # days with any event / a session / a login, per group
    latest_times: list[float] = []  # per event type: latest occurred_at <= as_of, NaN if none
    profile_values: list[float] = []  # start, tier, first session success, has a first session
    tutor_values: list[float] = []  # distinct tutors; the primary tutor's sessions, centi-stars, ratings
    lifetimes: list[dict[str, int]] = []

    for state, as_of_us in zip(states, instants, strict=True):
        as_of_day = as_of_us // DAY_US
        # Days 0-6 back, 7-13 back and 14-29 back: each the difference of the running sums at the ends.
        bounds = (as_of_day, as_of_day - 7, as_of_day - 14, as_of_day - 30)
        sums = day_sums(state)
        for bound in bounds:
            cumulative.append(sums.cumulative[bisect_right(sums.days, bound)])
        for flagged in (sums.days, sums.session_days, sums.login_days):
            a, b, c, d = [bisect_right(flagged, bound) for bound in bounds]
            day_counts += (a - b, b - c, c - d)
        tutors: dict[str, list[int]] = {}
        for position in range(
            bisect_right(sums.tutor_days, bounds[3]), bisect_right(sums.tutor_days, as_of_day)
        ):
            for tutor_id, agg in sums.tutors[position].items():
                total = tutors.setdefault(tutor_id, [0, 0, 0])
                total[0] += agg[0]
                total[1] += agg[1]
                total[2] += agg[2]
        with_sessions = [(tid, agg) for tid, agg in tutors.items() if agg[0] > 0]
        tutor_values.append(len(with_sessions))
        if with_sessions:  # most sessions in 30 days; ties go to the smallest tutor id
            tutor_values += min(with_sessions, key=lambda item: (-item[1][0], item[0]))[1]
        else:
            tutor_values += (0, 0, 0)

        profile = state.profile
        latest_times += _latest_times(state, as_of_us, as_of_day)
        begun = profile.signed_up_us if profile.signed_up_us is not None else profile.first_seen_us
        profile_values += (
            as_of_us if begun is None else begun,
            0 if profile.tier is None else profile.tier[2],
            0 if profile.first_session is None else profile.first_session[2],
            0 if profile.first_session is None else 1,
        )
        lifetimes.append(profile.lifetime)

    width = len(COUNTER_KEYS)
    at_bounds = np.asarray(cumulative, dtype=np.int64).reshape(n, 4, width)
    groups = (at_bounds[:, :3] - at_bounds[:, 1:]).transpose(1, 0, 2).astype(np.float64)
    days = (
        np.asarray(day_counts, dtype=np.float64).reshape(n, 3, 3).transpose(1, 2, 0)
    )  # [flag, group, customer]
    latest = np.asarray(latest_times, dtype=np.float64).reshape(n, len(EVENT_TYPES))
    start, tier, first_success, has_first = np.asarray(profile_values, dtype=np.float64).reshape(n, 4).T
    tutor_columns = np.asarray(tutor_values, dtype=np.float64).reshape(n, 4)
    keys = sorted({key for lifetime in lifetimes for key in lifetime})
    week, prev_week, rest = groups
    fortnight = week + prev_week
    return WindowBatch(
        # One instant: an int, as before; one per customer: a float64 column (exact: epoch
        # microseconds are far below 2**53), which the features broadcast alike.
        as_of_us=to_us(as_of) if isinstance(as_of, datetime) else np.asarray(instants, dtype=np.float64),
        counts={"7d": week, "prev7d": prev_week, "14d": fortnight, "30d": fortnight + rest},
        active_days=_day_windows(days[0]),
        session_days=_day_windows(days[1]),
        login_days=_day_windows(days[2]),
        last_us={kind: latest[:, i] for i, kind in enumerate(EVENT_TYPES)},
        start_us=start,
        lifetime={
            key: np.asarray([lifetime.get(key, 0) for lifetime in lifetimes], dtype=np.float64)
            for key in keys
        },
        tier=tier,
        first_session_success=first_success,
        has_first_session=has_first,
        primary_tutor=tutor_columns[:, 1:],
        distinct_tutors=tutor_columns[:, 0],
    )


def _latest_times(state: CustomerState, as_of_us: int, as_of_day: int) -> list[float]:
    """Per event type, the latest occurred_at at or before as_of (NaN: none). The profile's latest
    time is the answer unless it lies after as_of (a view of the past): only then are the pages'
    own latest times read."""
    times = [_NAN] * len(EVENT_TYPES)
    unresolved: set[str] = set()
    for kind, moment in state.profile.last_us.items():
        if moment > as_of_us:
            unresolved.add(kind)
        elif (index := _TYPE_INDEX.get(kind)) is not None:
            times[index] = moment
    if unresolved:
        for (day, _), page in state.pages.items():
            if day <= as_of_day:
                for kind in unresolved.intersection(page.last_us):
                    moment = page.last_us[kind]
                    index = _TYPE_INDEX.get(kind)
                    if index is not None and moment <= as_of_us and not moment <= times[index]:
                        times[index] = moment  # `not <=`: NaN (none yet) loses to any time
    return times


# -- per-customer day sums, cached -----------------------------------------------------------------
#
# Summing every page of a customer on every batch cost most of a backtest (each customer is scored
# with ~25 pages in its 30 days, and touched again a day later). Instead each state carries its
# counters as cumulative sums over its days (`DaySums`, cached on the state): a window is the
# difference of two of them, found by bisection, whatever `as_of`. The cache is derived data: it
# is brought up to date on use from `state.changed_pages` (which `apply_event` fills) and from the
# pages that pruning removed, so a customer touched once a day costs one day's pages.


@dataclass
class DaySums:
    """A customer's pages summed per UTC day, as running totals. Built and updated by `day_sums`."""

    days: list[int]  # days with pages, ascending
    # len(days) + 1 rows of [COUNTER_KEYS] int64: row i = counters of every page before days[i]
    # (row 0: of pages since pruned, which only ever cancels out), so days[i:j] sum to row j - row i.
    cumulative: list[np.ndarray]
    session_days: list[int]  # days with a completed session, ascending
    login_days: list[int]  # days with a login, ascending
    tutor_days: list[int]  # days with tutor activity, ascending
    tutors: list[dict[str, list[int]]]  # per tutor day: tutor_id -> sessions, centi-stars, ratings


def day_sums(state: CustomerState) -> DaySums:
    """The state's cached `DaySums`, brought up to date with its pages."""
    sums = state.window_cache
    if isinstance(sums, DaySums):
        _drop_pruned_days(sums, state)
        for day in sorted({day for day, _ in state.changed_pages}):
            _resum_day(sums, day, state.pages_of_day(day))
    else:
        sums = _built(state)
    state.window_cache = sums
    state.changed_pages = set()
    return sums


def _built(state: CustomerState) -> DaySums:
    """DaySums from all of a state's pages at once (a state loaded from the store, or new)."""
    days = sorted({day for day, _ in state.pages})
    rows: list[list[int]] = []
    tutor_days: list[int] = []
    tutor_sums: list[dict[str, list[int]]] = []
    for day in days:
        counters, tutors = _day_totals(state.pages_of_day(day))
        rows.append(counters)
        if tutors:
            tutor_days.append(day)
            tutor_sums.append(tutors)
    width = len(COUNTER_KEYS)
    cumulative = np.zeros((len(days) + 1, width), dtype=np.int64)
    if rows:
        np.cumsum(np.asarray(rows, dtype=np.int64), axis=0, out=cumulative[1:])
    return DaySums(
        days=days,
        cumulative=list(cumulative),
        session_days=[day for day, row in zip(days, rows, strict=True) if row[_SESSION] > 0],
        login_days=[day for day, row in zip(days, rows, strict=True) if row[_LOGIN] > 0],
        tutor_days=tutor_days,
        tutors=tutor_sums,
    )


def _day_totals(pages: list[DayPage]) -> tuple[list[int], dict[str, list[int]]]:
    """One day's counters (COUNTER_KEYS order) and tutor sums, over all its pages."""
    counters = [0] * len(COUNTER_KEYS)
    tutors: dict[str, list[int]] = {}
    for page in pages:
        for key, value in page.counts.items():
            index = COUNTER_INDEX.get(key)
            if index is not None:
                counters[index] += value
        for tutor_id, agg in page.tutors.items():
            into = tutors.setdefault(tutor_id, [0, 0, 0])
            into[0] += agg[0]
            into[1] += agg[1]
            into[2] += agg[2]
    return counters, tutors


def _drop_pruned_days(sums: DaySums, state: CustomerState) -> None:
    """Pruning removes whole days, the oldest first."""
    gone = 0
    while gone < len(sums.days) and (sums.days[gone], 0) not in state.pages:
        gone += 1
    if gone:
        first_kept = sums.days[gone] if gone < len(sums.days) else None
        del sums.days[:gone]
        del sums.cumulative[:gone]
        for flagged in (sums.session_days, sums.login_days, sums.tutor_days):
            keep = len(flagged) if first_kept is None else bisect_left(flagged, first_kept)
            if flagged is sums.tutor_days:
                del sums.tutors[:keep]
            del flagged[:keep]


def _resum_day(sums: DaySums, day: int, pages: list[DayPage]) -> None:
    """Replace one day's totals (its pages gained events, the day is new, or it has no pages left)."""
    counters, tutors = _day_totals(pages)
    total = np.asarray(counters, dtype=np.int64)
    position = bisect_left(sums.days, day)
    cumulative = sums.cumulative
    if position < len(sums.days) and sums.days[position] == day:
        delta = total - (cumulative[position + 1] - cumulative[position])
        for row in range(position + 1, len(cumulative)):
            cumulative[row] = cumulative[row] + delta
        if not pages:  # created and pruned again since the last read: the day is gone
            del sums.days[position], cumulative[position + 1]
    elif pages:
        sums.days.insert(position, day)
        cumulative.insert(position + 1, cumulative[position] + total)
        for row in range(position + 2, len(cumulative)):
            cumulative[row] = cumulative[row] + total
    _flag(sums.session_days, day, total[_SESSION] > 0)
    _flag(sums.login_days, day, total[_LOGIN] > 0)
    position = bisect_left(sums.tutor_days, day)
    present = position < len(sums.tutor_days) and sums.tutor_days[position] == day
    if present and tutors:
        sums.tutors[position] = tutors
    elif present:
        del sums.tutor_days[position], sums.tutors[position]
    elif tutors:
        sums.tutor_days.insert(position, day)
        sums.tutors.insert(position, tutors)


def _flag(days: list[int], day: int, on: bool) -> None:
    position = bisect_left(days, day)
    present = position < len(days) and days[position] == day
    if on and not present:
        days.insert(position, day)
    elif present and not on:
        del days[position]


def _day_windows(by_group: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "7d": by_group[0],
        "prev7d": by_group[1],
        "14d": by_group[0] + by_group[1],
        "30d": by_group.sum(axis=0),
    }
