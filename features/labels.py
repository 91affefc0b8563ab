"""Labels from events and outcomes only: what the model learns and what evaluations measure.

One definition, used by training examples (`model/examples.py`), `churn-model evaluate` and
`churn-worker backtest`'s report. Every label looks strictly after the scoring instant `t` (the
last microsecond of a UTC day, `features.activity.day_end_us`); the features look at or before it.
`end` is the latest event time of the data: nothing later is known. A label whose horizon runs past
`end` is *censored*: NaN, left out of metrics, masked in losses. Never "stayed" for want of data,
and never "churned" either: keeping the instants near `end` whose customer happened to churn
before it, while their stayers cannot be known, would label those instants churners only (every
churn label of the data's last 30 days would be 1), and readings on customers who arrived late
in the data, most of whose instants lie there, would see a churn rate no model should predict.

- churn_risk_14d / churn_risk_30d: the customer churned (an outcomes `churned_at`, or a
  `customer_churned` event: a customer who came back churned too) within (t, t + 14 / 30 days].
  Censored when t + horizon > end, whether or not a churn happened before end.
- session_velocity: completed sessions in (t, t + 14 days], per week. Censored when t + 14 days
  > end (for the same reason: only the instants whose customer left early would be kept).
- first_session_success: only at instants before the customer's first completed session, and only
  when that session comes within 30 days (otherwise censored: nobody knows yet how it will go).
  The first completed session is the one flagged `first_session: true`, when the log uses the flag
  at all; in a log that never sets it, the customer's first `session_completed`. The label is its
  `success`; where `success` is absent, whether the customer completed another session within 14
  days after it (the session led somewhere), censored at the end of the data.
- health_score 0-100: half retention, half engagement, both over the next 30 days:
  `50 x (did not churn within 30 days) + 50 x (engagement percentile)`, where the engagement
  percentile ranks the customer's days with an engagement event (booking, session, rating, login,
  message) in the next 30 days among every active customer scored at the same instant (mid-rank
  for ties). A retention specialist reads it as: above 50, the customer stays and the score says how
  engaged they are relative to everyone else; below 40, they are more likely gone than not, or
  barely engaging. It is not churn_30d: two stayers differ by engagement, two churners by how
  much they used the product before leaving. Censored like churn_risk_30d.
- supply_demand (per subject, marketplace-wide, the same for every customer at an instant): the
  change in weekly bookings per active tutor of the subject, the next 7 days against the mean of
  the 4 weeks up to `t`, in steps of 10%, clipped to +-5 (+3: 30% more bookings per tutor ahead,
  demand outgrowing supply; negative: slack). An active tutor has a booking or completed session
  in the subject that week. Masked (NaN) where either side has fewer than 10 bookings, a week has
  no tutor, or the weeks do not lie inside the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from features.churn_outcomes import NEVER
from features.eventfile import event_sources, open_text, read_source
from features.events import SUBJECTS, loads_json, unwrap_envelope
from features.state import DAY_US, to_us

CHURN_HORIZONS = (14, 30)
VELOCITY_DAYS = 14
FIRST_SESSION_HORIZON_DAYS = 30
FOLLOW_UP_DAYS = 14  # a first session without `success`: another session this soon counts as success
HEALTH_DAYS = 30
ENGAGEMENT_TYPES = frozenset(
    {"session_booked", "session_completed", "session_rated", "login", "message_sent"}
)
SUPPLY_AHEAD_DAYS = 7
SUPPLY_BEHIND_DAYS = 28
SUPPLY_MIN_BOOKINGS = 10
SUPPLY_SCALE = 10.0  # one unit = 10% more bookings per tutor
SUPPLY_CLIP = 5.0
SUBJECT_INDEX = {subject: i for i, subject in enumerate(SUBJECTS)}


@dataclass
class CustomerFacts:
    """What the labels need of one customer's events, each event counted once (by event_id)."""

    sign_ups: list[int] = field(default_factory=list)
    churns: list[int] = field(default_factory=list)  # customer_churned events
    completed: list[int] = field(default_factory=list)
    flagged_first: tuple[int, str, int] | None = (
        None  # (t, event_id, success 1/0/-1) of the flagged first session
    )
    first_completed: tuple[int, str, int] | None = None  # the same for the earliest completion of any kind
    engaged_days: set[int] = field(default_factory=set)
    seen: set[str] = field(default_factory=set, repr=False)

    def add(
        self, event_id: str, kind: str, t_us: int, first_session: bool = False, success: bool | None = None
    ) -> bool:
        """Count one event; False (nothing counted) for a duplicate of a completed session. Only
        completed sessions are counted (velocity); every other fact is a set of instants or days,
        which a second copy leaves unchanged, so only their ids are remembered."""
        if kind == "session_completed":
            if event_id in self.seen:
                return False
            self.seen.add(event_id)
        if kind in ENGAGEMENT_TYPES:
            self.engaged_days.add(t_us // DAY_US)
        if kind == "customer_signed_up":
            if t_us not in self.sign_ups:
                self.sign_ups.append(t_us)
        elif kind == "customer_churned" and t_us not in self.churns:
            self.churns.append(t_us)
        elif kind == "session_completed":
            self.completed.append(t_us)
            outcome = (t_us, event_id, -1 if success is None else int(success))
            if self.first_completed is None or outcome < self.first_completed:
                self.first_completed = outcome
            if first_session and (self.flagged_first is None or outcome < self.flagged_first):
                self.flagged_first = outcome
        return True

    def first_session(self, log_uses_flag: bool) -> tuple[int, int] | None:
        """(time, success 1/0/-1 unknown) of the first completed session, or None."""
        chosen = self.flagged_first if log_uses_flag else self.first_completed
        return None if chosen is None else (chosen[0], chosen[2])

    def first_sign_up(self) -> int | None:
        return min(self.sign_ups) if self.sign_ups else None


@dataclass(frozen=True)
class LabelContext:
    end_us: int  # the latest event time in the data
    log_uses_flag: bool  # some session_completed carries first_session: true


def _next_after(times: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    position = np.searchsorted(times, t_us, side="right")
    out = np.full(len(t_us), NEVER, dtype=np.int64)
    found = position < len(times)
    out[found] = times[position[found]]
    return out


def customer_labels(
    facts: CustomerFacts, churn_times: np.ndarray, t_us: np.ndarray, context: LabelContext
) -> dict[str, np.ndarray]:
    """Per-row labels of one customer at instants `t_us` (see the module docstring). `churn_times`:
    every churn instant of the customer, sorted (`features.churn_outcomes.ChurnTimes.of`). Returns
    churn_risk_14d, churn_risk_30d, session_velocity, first_session_success (float, NaN censored)
    and engaged_days_30d (float, NaN censored), the input of `health_scores`."""
    t_us = np.asarray(t_us, dtype=np.int64)
    end = context.end_us
    next_churn = _next_after(churn_times, t_us)
    out: dict[str, np.ndarray] = {}
    for days in CHURN_HORIZONS:
        horizon = t_us + days * DAY_US
        churned = next_churn <= horizon
        out[f"churn_risk_{days}d"] = np.where(horizon <= end, churned.astype(np.float64), np.nan)

    completed = np.sort(np.asarray(facts.completed, dtype=np.int64))
    horizon = t_us + VELOCITY_DAYS * DAY_US
    sessions = np.searchsorted(completed, horizon, side="right") - np.searchsorted(
        completed, t_us, side="right"
    )
    out["session_velocity"] = np.where(horizon <= end, sessions / (VELOCITY_DAYS / 7), np.nan)

    out["first_session_success"] = _first_session_labels(facts, completed, churn_times, t_us, context)

    engaged_days = np.asarray(sorted(facts.engaged_days), dtype=np.int64)
    today = t_us // DAY_US
    engaged = np.searchsorted(engaged_days, today + HEALTH_DAYS, side="right") - np.searchsorted(
        engaged_days, today, side="right"
    )
    out["engaged_days_30d"] = np.where(np.isnan(out["churn_risk_30d"]), np.nan, engaged.astype(np.float64))
    return out


def _first_session_labels(
    facts: CustomerFacts,
    completed: np.ndarray,
    churn_times: np.ndarray,
    t_us: np.ndarray,
    context: LabelContext,
) -> np.ndarray:
    out = np.full(len(t_us), np.nan)
    first = facts.first_session(context.log_uses_flag)
    if first is None:
        return out  # no first session in the data: censored at every instant
    at, success = first
    if success < 0:  # no `success` on the event: did another session follow within FOLLOW_UP_DAYS?
        follow_up = at + FOLLOW_UP_DAYS * DAY_US
        later = completed[(completed > at) & (completed <= follow_up)]
        gone = _next_after(churn_times, np.array([at]))[0] <= follow_up
        if len(later):
            success = 1
        elif gone or follow_up <= context.end_us:
            success = 0
        else:
            return out  # too close to the end of the data to know
    before = (t_us < at) & (at <= t_us + FIRST_SESSION_HORIZON_DAYS * DAY_US)
    out[before] = float(success)
    return out


def health_scores(
    churn_30d: np.ndarray, engaged_days: np.ndarray, reference: EngagementReference
) -> np.ndarray:
    """0-100 health (module docstring) from `customer_labels`' churn_risk_30d and engaged_days_30d
    and the instant's reference distribution; NaN where censored."""
    percentile = reference.percentile(engaged_days)
    return np.where(np.isnan(churn_30d), np.nan, 50.0 * (1.0 - churn_30d) + 50.0 * percentile)


@dataclass
class EngagementReference:
    """Counts of engaged days (0..HEALTH_DAYS) among every active customer with a known label at one
    instant: the population the percentile ranks against. Mergeable across shards."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(HEALTH_DAYS + 1, dtype=np.int64))

    def add(self, engaged_days: np.ndarray) -> None:
        known = engaged_days[~np.isnan(engaged_days)].astype(np.int64)
        self.counts += np.bincount(np.clip(known, 0, HEALTH_DAYS), minlength=HEALTH_DAYS + 1)

    def merge(self, other: EngagementReference) -> None:
        self.counts += other.counts

    def percentile(self, engaged_days: np.ndarray) -> np.ndarray:
        total = int(self.counts.sum())
        out = np.full(len(engaged_days), np.nan)
        if not total:
            return out
        below = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        known = ~np.isnan(engaged_days)
        value = np.clip(engaged_days[known].astype(np.int64), 0, HEALTH_DAYS)
        out[known] = (below[value] + 0.5 * self.counts[value]) / total
        return out


@dataclass
class MarketActivity:
    """Per UTC day and subject: bookings, and the tutors with a booking or completed session.
    Built per shard of customers and merged; `supply_demand` turns it into labels."""

    bookings: dict[int, np.ndarray] = field(default_factory=dict)  # day -> [20] counts
    tutors: dict[tuple[int, int], set[str]] = field(default_factory=dict)  # (day, subject) -> tutor ids

    def add(self, kind: str, t_us: int, subject: str | None, tutor_id: str | None) -> None:
        if subject is None or (kind != "session_booked" and kind != "session_completed"):
            return
        s = SUBJECT_INDEX.get(subject)
        if s is None:
            return
        day = t_us // DAY_US
        if kind == "session_booked":
            row = self.bookings.get(day)
            if row is None:
                row = self.bookings[day] = np.zeros(len(SUBJECTS), dtype=np.int64)
            row[s] += 1
        if tutor_id is not None:
            self.tutors.setdefault((day, s), set()).add(tutor_id)

    def merge(self, other: MarketActivity) -> None:
        for day, row in other.bookings.items():
            if day in self.bookings:
                self.bookings[day] = self.bookings[day] + row
            else:
                self.bookings[day] = row.copy()
        for key, tutors in other.tutors.items():
            self.tutors.setdefault(key, set()).update(tutors)

    def supply_demand(self, days: Sequence[int], first_day: int, last_day: int) -> np.ndarray:
        """[len(days), 20] labels for the instants at the end of each of `days` (NaN masked), given
        the data's first and last UTC day (windows must lie inside them). Both sides are weekly
        ratios (bookings / distinct tutors of one week), the past one the mean of its four weeks, so
        the windows compare like with like."""
        out = np.full((len(days), len(SUBJECTS)), np.nan)
        weeks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for row, day in enumerate(days):
            if day + SUPPLY_AHEAD_DAYS > last_day or day - SUPPLY_BEHIND_DAYS + 1 < first_day:
                continue
            b_ahead, t_ahead = self._week(day + 1, weeks)
            past = [self._week(day - 7 * (k + 1) + 1, weeks) for k in range(SUPPLY_BEHIND_DAYS // 7)]
            b_behind = np.sum([b for b, _ in past], axis=0)
            ok = (b_ahead >= SUPPLY_MIN_BOOKINGS) & (b_behind >= SUPPLY_MIN_BOOKINGS) & (t_ahead > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.array([b / t for b, t in past])  # NaN / inf where a week had no tutor
                ok &= np.all(np.isfinite(ratios), axis=0)
                behind = ratios.mean(axis=0)
                change = (b_ahead / t_ahead) / behind - 1.0
            ok &= np.isfinite(change)
            out[row] = np.where(
                ok, np.clip(SUPPLY_SCALE * np.nan_to_num(change), -SUPPLY_CLIP, SUPPLY_CLIP), np.nan
            )
        return out

    def _week(
        self, first: int, cache: dict[int, tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bookings and distinct active tutors per subject over the 7 days from `first`."""
        if first not in cache:
            bookings = np.zeros(len(SUBJECTS), dtype=np.float64)
            tutors = np.zeros(len(SUBJECTS), dtype=np.float64)
            for day in range(first, first + 7):
                if day in self.bookings:
                    bookings += self.bookings[day]
            for s in range(len(SUBJECTS)):
                seen: set[str] = set()
                for day in range(first, first + 7):
                    seen.update(self.tutors.get((day, s), ()))
                tutors[s] = len(seen)
            cache[first] = (bookings, tutors)
        return cache[first]


@dataclass
class LabelScan:
    """Every customer's label facts from one pass over a log (what a backtest report needs)."""

    facts: dict[str, CustomerFacts] = field(default_factory=dict)
    end_us: int | None = None  # the latest event time
    log_uses_flag: bool = False

    def churn_events(self) -> dict[str, list[int]]:
        return {cid: fact.churns for cid, fact in self.facts.items() if fact.churns}

    def context(self) -> LabelContext:
        return LabelContext(
            end_us=self.end_us if self.end_us is not None else 0, log_uses_flag=self.log_uses_flag
        )


def scan_label_facts(paths: str | Sequence[str]) -> LabelScan:
    """One pass over an event path, keeping what labels need. JSON Lines are read without full
    validation (only the fields labels use, with the same time parsing), so the pass is a few
    seconds per million events; a line that is not a valid event for these fields is skipped,
    as the pipeline's dead-letter queue would take it."""
    scan = LabelScan()
    for source in event_sources(paths):
        if source.is_parquet:
            for _, item in read_source(source):
                if not isinstance(item, Exception):
                    fields = item.__dict__
                    _scan_one(
                        scan,
                        item.customer_id,
                        item.event_id,
                        item.type,
                        to_us(item.occurred_at),
                        fields.get("first_session", False),
                        fields.get("success"),
                    )
            continue
        with open_text(source) as handle:
            for line in handle:
                _scan_line(scan, line)
    return scan


def _scan_line(scan: LabelScan, line: str) -> None:
    if not line.strip():
        return
    try:
        obj = unwrap_envelope(loads_json(line))
        kind, cid, eid, when = obj["type"], obj["customer_id"], obj["event_id"], obj["occurred_at"]
        moment = datetime.fromisoformat(when)
    except (ValueError, KeyError, TypeError, AttributeError):
        return
    if (
        moment.tzinfo is None
        or not isinstance(cid, str)
        or not isinstance(eid, str)
        or not isinstance(kind, str)
    ):
        return
    first = obj.get("first_session", False) if kind == "session_completed" else False
    success = obj.get("success") if kind == "session_completed" else None
    _scan_one(
        scan,
        cid,
        eid,
        kind,
        to_us(moment.astimezone(UTC)),
        first is True,
        success if isinstance(success, bool) else None,
    )


def _scan_one(
    scan: LabelScan, cid: str, eid: str, kind: str, t_us: int, first: bool, success: bool | None
) -> None:
    fact = scan.facts.get(cid)
    if fact is None:
        fact = scan.facts[cid] = CustomerFacts()
    if fact.add(eid, kind, t_us, first, success):
        scan.end_us = t_us if scan.end_us is None else max(scan.end_us, t_us)
        if first and kind == "session_completed":
            scan.log_uses_flag = True
