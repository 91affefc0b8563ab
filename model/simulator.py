"""A simulated tutoring marketplace with ground truth: events in the shape of docs/contracts.md,
outcomes, and the latent state behind them.

The model, per customer:
- A latent health `h` (integers 0-100) around a personal baseline `mu`, set at sign-up from the tier,
  the quality of the assigned tutor, whether the first session will succeed, and noise. Day to day
  `h` reverts towards `mu` with Gaussian noise; with a small daily chance a shock (a bad session, a
  tutor cancelling, a failed charge, or nothing visible) knocks it down. Below `SPIRAL_AT` reversion
  stops and health drifts down: unhappy customers who stop getting value keep sliding.
- Behaviour is drawn from `h`: logins, messages, bookings (and so sessions), ratings, cancellations,
  failed payments, downgrades and inbound calls (rare when happy, frequent and mostly negative near
  the spiral). Health is therefore readable from a month of behaviour, but only through Poisson noise.
- Churn is a daily hazard of `h` plus a small floor (customers also leave for reasons that show in no
  event). After churning a customer emits nothing but, rarely, one more call.
- 60% of customers signed up before the start (up to 400 days before): their sign-up and first
  session are emitted at their real times, the rest of their history is not (tracking starts at
  `start`), and their latent state is that of a survivor. The others sign up during the simulation.

The latent process is a Markov chain on (mu, h), so the true probability of churning within 14 or
30 days from any state is exact: a backward recursion over the chain (`churn_tables`), not a guess.

Per subject, expected demand (bookings of active customers) is set against tutor supply (a lagged
follow of demand times a slow random availability): `supply_demand` is the excess demand in units of
10% of supply, clipped to +-5, and a shortage makes tutors cancel more often.

Everything is drawn from one `numpy.random.Generator`: the same seed gives the same events.
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from features.eventfile import EVENT_SUFFIXES
from features.events import EVENT_TYPES, SUBJECTS, TIERS
from features.state import DAY_US, to_us

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so a seed alone fixes the output
SEGMENTS: tuple[str, ...] = ("thriving", "healthy", "at_risk", "churned")
NOT_SIGNED_UP = -1  # segment code before sign-up
HORIZONS = (14, 30)

# Latent dynamics (one step = one day).
REVERSION = 0.06  # share of the gap to mu closed per day
NOISE_SD = 2.5
SHOCK_PROB = 0.02
SHOCK_SIZES = np.arange(6, 16)  # uniform drop, health points
SPIRAL_AT = 35.0  # below this health drifts down instead of recovering
SPIRAL_DRIFT = 1.5
SHOCK_CALL_PROB = 0.1  # a shocked customer calls about it
RATING_PROB = 0.6  # a held session gets rated
BASELINE_MEAN = 68.0  # mean of mu before the tier, tutor and first-session effects
EXISTING_SHARE = 0.6  # customers who signed up before the simulation starts
BURN_IN_DAYS = 60  # existing customers are survivors of this much latent history

_GRID = np.arange(101, dtype=np.float64)
_HOUR_US = 3_600_000_000
_MINUTE_US = 60_000_000
_KIND = {name: i for i, name in enumerate(EVENT_TYPES)}
_SENTIMENTS = ("negative", "neutral", "positive")
_CANCELLED_BY = ("customer", "tutor")
_PRICE = np.array([39.0, 79.0, 149.0])  # monthly, by tier
_TIER_P = [0.35, 0.45, 0.20]
_SUBJECT_WEIGHT = np.array([10, 6, 7, 5, 6, 6, 5, 7, 5, 6, 5, 3, 3, 4, 3, 3, 8, 5, 3, 6], dtype=float)
_SUBJECT_P = _SUBJECT_WEIGHT / _SUBJECT_WEIGHT.sum()


def expit(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Standard normal CDF via erf (Abramowitz and Stegun 7.1.26, error < 2e-7): numpy only. The
    sampler and the oracle share these tables, so the oracle stays exact for the chain simulated."""
    x = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152014 + t * 1.061405429))))
    erf = 1.0 - poly * np.exp(-x * x)
    cdf: np.ndarray = 0.5 * (1.0 + np.sign(z) * erf)
    return cdf


def hazard(h: np.ndarray) -> np.ndarray:
    """Daily churn probability at health h: a 0.03% floor plus a steep rise below ~25."""
    return 0.0003 + 0.1 * expit((25.0 - h) / 5.0)


def login_rate(h: np.ndarray) -> np.ndarray:
    """Logins per day: over one a day when content, one every few days near the spiral."""
    return 0.05 + 1.2 * expit((h - 45.0) / 12.0)


def message_rate(h: np.ndarray) -> np.ndarray:
    return 0.03 + 0.35 * h / 100.0


def call_rate(h: np.ndarray) -> np.ndarray:
    """Expected inbound calls per day: rare when content, several a week in the spiral."""
    return 0.003 + 0.3 * expit((28.0 - h) / 2.5)


@lru_cache(maxsize=1)
def _kernels() -> tuple[np.ndarray, np.ndarray]:
    """Cumulative transition tables [mu, h, h'] without and with a shock."""
    mu, h = _GRID[:, None, None], _GRID[None, :, None]
    w = expit((h - SPIRAL_AT) / 2.0)
    mean = w * (h + REVERSION * (mu - h)) + (1 - w) * (h - SPIRAL_DRIFT)
    edges = np.concatenate([[-np.inf], _GRID[1:] - 0.5, [np.inf]])[None, None, :]

    def cdf(m: np.ndarray) -> np.ndarray:
        return _normal_cdf((edges[..., 1:] - m) / NOISE_SD)  # P(h' <= j), clipped at 0 and 100 by the edges

    calm = cdf(mean)
    shocked = np.mean([cdf(mean - size) for size in SHOCK_SIZES], axis=0)
    calm[..., -1] = shocked[..., -1] = 1.0
    return calm, shocked


@lru_cache(maxsize=1)
def churn_tables() -> dict[int, np.ndarray]:
    """P(churn within k days | mu, h today) for k in HORIZONS, shape [101 mu, 101 h]."""
    calm, shocked = _kernels()
    step = (1 - SHOCK_PROB) * np.diff(calm, prepend=0.0, axis=-1) + SHOCK_PROB * np.diff(
        shocked, prepend=0.0, axis=-1
    )
    stay = 1.0 - hazard(_GRID)
    survive = np.ones((101, 101))
    out = {}
    for k in range(1, max(HORIZONS) + 1):
        survive = np.einsum("mxy,my->mx", step, stay[None, :] * survive)
        if k in HORIZONS:
            out[k] = 1.0 - survive
    return out


def _step(rng: np.random.Generator, mu: np.ndarray, h: np.ndarray, shock: np.ndarray) -> np.ndarray:
    calm, shocked = _kernels()
    rows = np.where(shock[:, None], shocked[mu, h], calm[mu, h])
    stepped: np.ndarray = np.minimum((rows < rng.random(len(h))[:, None]).sum(axis=1), 100)
    return stepped


class TruthPoint(NamedTuple):
    health: float | None
    churn_prob_14d: float | None
    churn_prob_30d: float | None
    segment: str | None  # None before sign-up


@dataclass
class Truth:
    """Latent state at the end of each simulated UTC day (day 0 = the day of `start`)."""

    start: datetime
    customer_ids: np.ndarray  # str [n]
    health: np.ndarray  # float32 [n, days], NaN unless active at the end of the day
    churn_prob_14d: np.ndarray  # float32 [n, days], NaN unless active
    churn_prob_30d: np.ndarray
    segment: np.ndarray  # int8 [n, days]: index into SEGMENTS, NOT_SIGNED_UP before sign-up
    supply_demand: np.ndarray  # float32 [days, 20], SUBJECTS order

    @cached_property
    def index(self) -> dict[str, int]:
        return {str(cid): i for i, cid in enumerate(self.customer_ids)}

    def day_index(self, day: int | date | datetime) -> int:
        if isinstance(day, datetime):
            day = day.astimezone(UTC).date()
        if isinstance(day, date):
            day = (day - self.start.date()).days
        if not 0 <= day < self.health.shape[1]:
            raise IndexError(f"day {day} is outside the simulation (0..{self.health.shape[1] - 1})")
        return day

    def at(self, customer_id: str, day: int | date | datetime) -> TruthPoint:
        i, d = self.index[customer_id], self.day_index(day)
        code = int(self.segment[i, d])

        def num(a: np.ndarray) -> float | None:
            return None if np.isnan(a[i, d]) else float(a[i, d])

        seg = None if code == NOT_SIGNED_UP else SEGMENTS[code]
        return TruthPoint(num(self.health), num(self.churn_prob_14d), num(self.churn_prob_30d), seg)

    def supply_demand_at(self, day: int | date | datetime) -> np.ndarray:
        scores: np.ndarray = self.supply_demand[self.day_index(day)]
        return scores


@dataclass
class Simulation:
    """What `simulate` returns. `frame` has one row per event in time order: the CONTRACTS fields in
    COLUMNS (None or NaN where a type has no such field) and `occurred_us` (int microseconds)."""

    start: datetime
    days: int
    frame: pd.DataFrame
    outcomes: list[dict[str, Any]]  # CONTRACTS section 5, one per customer, with extra fields
    truth: Truth
    seed: int | None = None

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @cached_property
    def events(self) -> list[dict[str, Any]]:
        """Every event as the JSON object of docs/contracts.md, in time order."""
        return frame_to_events(self.frame)


# Fields each event type carries beyond the common four (docs/contracts.md, Customer events).
EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "customer_signed_up": ("tier",),
    "subscription_changed": ("tier",),
    "session_booked": ("subject", "tutor_id"),
    "session_completed": ("subject", "tutor_id", "duration_minutes", "first_session", "success"),
    "session_cancelled": ("subject", "cancelled_by"),
    "session_rated": ("rating", "tutor_id"),
    "ib_call": ("sentiment",),
    "login": (),
    "message_sent": (),
    "payment_succeeded": ("amount",),
    "payment_failed": ("amount",),
    "customer_churned": (),
}
COLUMNS = (
    "event_id",
    "customer_id",
    "type",
    "occurred_at",
    "tier",
    "subject",
    "tutor_id",
    "duration_minutes",
    "first_session",
    "success",
    "cancelled_by",
    "rating",
    "sentiment",
    "amount",
)


def event_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The frame's CONTRACTS columns as numpy object arrays (slicing pandas string columns is slow)."""
    return {c: frame[c].to_numpy(dtype=object) for c in COLUMNS}


def frame_to_events(
    frame: pd.DataFrame | dict[str, np.ndarray], rows: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Event dicts for `rows` (positions, default all) of an event frame or its `event_columns`, in order."""
    columns = event_columns(frame) if isinstance(frame, pd.DataFrame) else frame
    rows = np.arange(len(columns["type"])) if rows is None else rows
    cols = {c: columns[c][rows] for c in COLUMNS}
    out: list[dict[str, Any]] = [{}] * len(rows)
    for kind, extra in EVENT_FIELDS.items():
        where = np.flatnonzero(cols["type"] == kind)
        values = [cols[c][where] for c in ("event_id", "customer_id", "occurred_at", *extra)]
        for pos, row in zip(where.tolist(), zip(*(v.tolist() for v in values), strict=True), strict=True):
            event = {"event_id": row[0], "customer_id": row[1], "type": kind, "occurred_at": row[2]}
            for name, value in zip(extra, row[3:], strict=True):
                if value is not None and value == value:  # None and NaN mean "absent"
                    event[name] = value.item() if isinstance(value, np.generic) else value
            out[pos] = event
    return out


class _Buffer:
    """Columns of events as they are drawn, one array per call; joined once at the end."""

    NAMES = ("cust", "t", "kind", "subj", "tutor", "value", "flag", "success", "post")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in self.NAMES}

    def add(
        self,
        cust: np.ndarray,
        t: np.ndarray,
        kind: str,
        subj: Any = -1,
        tutor: Any = -1,
        value: Any = np.nan,
        flag: Any = -1,
        success: Any = -1,
        post: bool = False,
    ) -> None:
        n = len(cust)
        if not n:
            return
        given = {
            "cust": cust,
            "t": t,
            "kind": _KIND[kind],
            "subj": subj,
            "tutor": tutor,
            "value": value,
            "flag": flag,
            "success": success,
            "post": post,
        }
        for name, v in given.items():
            self.parts[name].append(np.broadcast_to(np.asarray(v), (n,)))

    def join(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) for name, parts in self.parts.items()}


@dataclass
class _Market:
    """The fixed cast: customers and tutors, and what the simulator knows about them from day one."""

    signup_us: np.ndarray
    signup_day: np.ndarray  # negative: signed up before the start
    tier: np.ndarray
    subjects: np.ndarray  # [n, 2]: primary, secondary (-1 none)
    tutors: np.ndarray  # [n, 2]: the assigned tutor per subject
    first_success: np.ndarray  # bool: will the first session succeed
    mu: np.ndarray
    h0: np.ndarray
    tutor_quality: np.ndarray
    pool_start: np.ndarray  # tutors are numbered by subject: pool of s = pool_start[s] + [0, pool_size[s])
    pool_size: np.ndarray

    def random_tutor(self, rng: np.random.Generator, subj: np.ndarray) -> np.ndarray:
        tutors: np.ndarray = self.pool_start[subj] + (rng.random(len(subj)) * self.pool_size[subj]).astype(
            np.int64
        )
        return tutors


def _market(rng: np.random.Generator, n: int, days: int, start_us: int) -> _Market:
    pool_size = np.maximum(2, np.rint(_SUBJECT_P * n * 0.05)).astype(np.int64)
    pool_start = np.concatenate([[0], np.cumsum(pool_size)[:-1]])
    quality = rng.normal(0.0, 1.0, pool_size.sum())
    existing = rng.random(n) < EXISTING_SHARE
    tenure_us = rng.integers(14 * DAY_US, 400 * DAY_US, n)
    new_us = rng.integers(0, days * DAY_US, n)
    signup_us = (start_us + np.where(existing, -tenure_us, new_us)) // 1000 * 1000
    signup_day = (signup_us - start_us) // DAY_US
    tier = rng.choice(3, n, p=_TIER_P)
    primary = rng.choice(20, n, p=_SUBJECT_P)
    secondary = np.where(rng.random(n) < 0.5, (primary + rng.integers(1, 20, n)) % 20, -1)
    subjects = np.stack([primary, secondary], axis=1)
    pool_of = np.stack([primary, np.maximum(secondary, 0)], axis=1)  # no secondary: never used
    tutors = pool_start[pool_of] + (rng.random((n, 2)) * pool_size[pool_of]).astype(np.int64)
    q = quality[tutors[:, 0]]
    first_success = rng.random(n) < expit(0.9 + 0.8 * q + 0.3 * (tier - 1))
    base = BASELINE_MEAN + np.array([-3.0, 0.0, 4.0])[tier] + 5.0 * q + np.where(first_success, 4.0, -20.0)

    def draw(size: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.normal(0.0, 11.0, size)
        return z, rng.normal(0.0, 5.0, size)

    z, e = draw(n)
    mu = np.clip(np.rint(base + z), 5, 97).astype(np.int64)
    h0 = np.clip(np.rint(mu + e), 0, 100).astype(np.int64)
    # Existing customers are those who survived their history: redraw anyone who would have churned.
    todo = np.flatnonzero(existing)
    for _ in range(12):
        h, alive = h0[todo].copy(), np.ones(len(todo), bool)
        for _ in range(BURN_IN_DAYS):
            h = _step(rng, mu[todo], h, rng.random(len(todo)) < SHOCK_PROB)
            alive &= rng.random(len(todo)) >= hazard(h)
        h0[todo[alive]] = h[alive]
        todo = todo[~alive]
        if not len(todo):
            break
        z, e = draw(len(todo))
        mu[todo] = np.clip(np.rint(base[todo] + z), 5, 97)
        h0[todo] = np.clip(np.rint(mu[todo] + e), 0, 100)
    return _Market(
        signup_us, signup_day, tier, subjects, tutors, first_success, mu, h0, quality, pool_start, pool_size
    )


def customer_ids(n: int) -> np.ndarray:
    """c-000000, c-000001, ...: zero-padded, so they sort in creation order."""
    return np.char.add("c-", np.char.zfill(np.arange(n).astype(str), 6))


def booking_rate(h: np.ndarray, tier: np.ndarray) -> np.ndarray:
    """Sessions booked per day: ~2.7 a week when thriving, under one when at risk."""
    rate: np.ndarray = np.array([0.85, 1.0, 1.2])[tier] * (0.03 + 0.42 * (h / 100.0) ** 1.5)
    return rate


@dataclass
class _Supply:
    """Per subject: tutor supply follows expected demand with a two-week lag, times a slowly wandering
    availability (log scale, AR(1)). The score is excess demand in units of 10% of supply, within +-5."""

    availability: np.ndarray
    supply: np.ndarray | None = None

    def score(self, rng: np.random.Generator, subjects: np.ndarray, rate: np.ndarray) -> np.ndarray:
        share = np.where(subjects[:, 1] >= 0, 0.75, 1.0)  # bookings split over primary and secondary
        demand = np.bincount(subjects[:, 0], rate * share, 20)
        demand += np.bincount(np.maximum(subjects[:, 1], 0), rate * (1 - share), 20)
        self.supply = demand + 1e-3 if self.supply is None else self.supply + (demand - self.supply) / 14.0
        self.availability = 0.95 * self.availability + rng.normal(0.0, 0.03, 20)
        capacity = self.supply * np.exp(self.availability)
        scores: np.ndarray = np.clip(10.0 * (demand - capacity) / np.maximum(capacity, 1e-3), -5, 5)
        return scores


def simulate(
    customers: int, days: int, seed: int, start: datetime | None = None, progress: bool | None = None
) -> Simulation:
    """Simulate `customers` over `days` whole UTC days from the day of `start` (default 2026-01-01).

    progress: a tqdm bar on stderr; None shows it only on a terminal and for long runs."""
    if customers < 1 or days < 1:
        raise ValueError("customers and days must be at least 1")
    start = (start or DEFAULT_START).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start_us, end_us = to_us(start), to_us(start) + days * DAY_US
    rng = np.random.default_rng(seed)
    m = _market(rng, customers, days, start_us)
    n = customers
    buf = _Buffer()
    _history(rng, m, buf, np.flatnonzero(m.signup_day < 0))

    h = m.h0.copy()
    tier = m.tier.copy()
    churn_us = np.full(n, np.iinfo(np.int64).max)
    active = m.signup_day < 0
    first_done = m.signup_day < 0
    health = np.full((n, days), -1, np.int16)
    supply_demand = np.zeros((days, 20), np.float32)
    market = _Supply(rng.normal(0.0, 0.1, 20))
    pending: dict[int, list[tuple[np.ndarray, ...]]] = {}
    retries: dict[int, list[np.ndarray]] = {}
    show = progress if progress is not None else (sys.stderr.isatty() and customers * days >= 200_000)
    for d in tqdm(range(days), desc="simulate", unit="day", file=sys.stderr, disable=not show):
        day_us = start_us + d * DAY_US
        moving = np.flatnonzero(active)
        shock = np.zeros(n, bool)
        shock[moving] = rng.random(len(moving)) < SHOCK_PROB
        h[moving] = _step(rng, m.mu[moving], h[moving], shock[moving])
        joining = np.flatnonzero(m.signup_day == d)
        active[joining] = True
        buf.add(joining, m.signup_us[joining], "customer_signed_up", flag=m.tier[joining])
        today = np.flatnonzero(active)
        health[today, d] = h[today]
        leaving = moving[rng.random(len(moving)) < hazard(h[moving])]
        churn_us[leaving] = day_us + rng.integers(0, DAY_US // 1000, len(leaving)) * 1000
        lo = np.maximum(day_us, m.signup_us + _MINUTE_US)

        def times(idx: np.ndarray, lo: np.ndarray = lo, day_us: int = day_us) -> np.ndarray:
            span = (day_us + DAY_US - lo[idx]) // 1000
            at: np.ndarray = lo[idx] + (rng.random(len(idx)) * span).astype(np.int64) * 1000
            return at

        rate = booking_rate(h, tier)
        supply_demand[d] = market.score(rng, m.subjects[today], rate[today])

        for kind, rates in (
            ("login", login_rate(h)),
            ("message_sent", message_rate(h)),
            ("ib_call", call_rate(h)),
        ):
            who = np.repeat(today, rng.poisson(rates[today]))
            flag = -1 if kind != "ib_call" else _sentiment(rng, h[who])
            buf.add(who, times(who), kind, flag=flag)
        _book(rng, m, buf, d, day_us, today, times, rate, first_done, pending, end_us)
        shocked = np.flatnonzero(shock & active & first_done)  # before today's sessions: after a first one
        _sessions(rng, m, buf, pending.pop(d, []), h, active, first_done, supply_demand[d])
        _payments(rng, m, buf, d, today, times, h, tier, retries)
        _tier_changes(rng, buf, today, times, h, tier)
        _shocks(rng, m, buf, day_us, shocked, times, tier)
        buf.add(leaving, churn_us[leaving], "customer_churned", post=True)
        callers = leaving[rng.random(len(leaving)) < 0.08]  # one more call, about the cancellation
        after = churn_us[callers] + rng.integers(_HOUR_US, 48 * _HOUR_US, len(callers)) // 1000 * 1000
        buf.add(callers, after, "ib_call", flag=rng.choice([0, 1], len(callers), p=[0.7, 0.3]), post=True)
        active[leaving] = False

    frame = _frame(buf.join(), churn_us, end_us, customers)
    ids = customer_ids(customers)
    truth = _truth(start, ids, health, churn_us, m, supply_demand)
    outcomes = _outcomes(frame, ids, m, churn_us)
    return Simulation(start, days, frame, outcomes, truth, seed)


def _sentiment(rng: np.random.Generator, h: np.ndarray) -> np.ndarray:
    negative = 0.1 + 0.8 * expit((45.0 - h) / 7.0)
    u = rng.random(len(h))
    return np.where(u < negative, 0, np.where(u < negative + (1 - negative) * 0.55, 1, 2))


def _history(rng: np.random.Generator, m: _Market, buf: _Buffer, idx: np.ndarray) -> None:
    """Existing customers: their sign-up and first session, before the start. Later history is unseen."""
    buf.add(idx, m.signup_us[idx], "customer_signed_up", flag=m.tier[idx])
    booked = m.signup_us[idx] + rng.integers(_HOUR_US, 20 * _HOUR_US, len(idx)) // 1000 * 1000
    held = (m.signup_us[idx] // DAY_US + rng.integers(1, 6, len(idx))) * DAY_US + 16 * _HOUR_US
    subj, tutor = m.subjects[idx, 0], m.tutors[idx, 0]
    buf.add(idx, booked, "session_booked", subj=subj, tutor=tutor)
    length = _length(rng, np.full(len(idx), 60), m.h0[idx])
    _complete(
        rng, m, buf, idx, subj, tutor, held + length.astype(np.int64) * _MINUTE_US, length, m.h0[idx], True
    )


def _book(
    rng: np.random.Generator,
    m: _Market,
    buf: _Buffer,
    d: int,
    day_us: int,
    today: np.ndarray,
    times: Any,
    rate: np.ndarray,
    first_done: np.ndarray,
    pending: dict[int, list[tuple[np.ndarray, ...]]],
    end_us: int,
) -> None:
    """Bookings today for sessions 1-4 days ahead; new customers book their first eagerly."""
    want = np.where(first_done[today], rate[today], np.maximum(rate[today], 0.4))
    who = np.repeat(today, rng.poisson(want))
    second = (m.subjects[who, 1] >= 0) & (rng.random(len(who)) < 0.25)
    subj = m.subjects[who, second.astype(int)]
    tutor = np.where(rng.random(len(who)) < 0.8, m.tutors[who, second.astype(int)], m.random_tutor(rng, subj))
    lead = rng.choice([1, 2, 3, 4], len(who), p=[0.35, 0.3, 0.2, 0.15])
    begins = day_us + lead * DAY_US + rng.integers(14 * _HOUR_US, 22 * _HOUR_US, len(who)) // 1000 * 1000
    buf.add(who, times(who), "session_booked", subj=subj, tutor=tutor)
    for ahead in range(1, 5):
        pick = (lead == ahead) & (begins < end_us)
        if pick.any():
            pending.setdefault(d + ahead, []).append((who[pick], subj[pick], tutor[pick], begins[pick]))


def _sessions(
    rng: np.random.Generator,
    m: _Market,
    buf: _Buffer,
    due: list[tuple[np.ndarray, ...]],
    h: np.ndarray,
    active: np.ndarray,
    first_done: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Sessions due today: cancelled by the tutor (more in a shortage), by the customer, or held."""
    if not due:
        return
    who, subj, tutor, begins = (np.concatenate(parts) for parts in zip(*due, strict=True))
    keep = active[who]
    who, subj, tutor, begins = who[keep], subj[keep], tutor[keep], begins[keep]
    day_us = begins // DAY_US * DAY_US
    by_tutor = rng.random(len(who)) < 0.02 + 0.04 * np.clip(scores[subj], 0, 5) + 0.04 * (
        m.tutor_quality[tutor] < -1
    )
    by_customer = ~by_tutor & (rng.random(len(who)) < 0.03 + 0.3 * expit((40.0 - h[who]) / 6.0))
    gone = by_tutor | by_customer
    when = (
        day_us[gone]
        + (rng.random(gone.sum()) * (begins[gone] - day_us[gone]) // 1000).astype(np.int64) * 1000
    )
    buf.add(who[gone], when, "session_cancelled", subj=subj[gone], flag=by_tutor[gone].astype(int))
    held = np.flatnonzero(~gone)
    length = _length(rng, np.array([45, 60, 60])[m.tier[who[held]]], h[who[held]])
    done = begins[held] + length.astype(np.int64) * _MINUTE_US
    by_end = np.argsort(done, kind="stable")  # the first session is the first to be completed
    held, length, done = held[by_end], length[by_end], done[by_end]
    _, first_pos = np.unique(who[held], return_index=True)
    is_first = np.zeros(len(held), bool)
    is_first[first_pos] = ~first_done[who[held][first_pos]]
    first_done[who[held]] = True
    for first in (False, True):
        part = is_first == first
        rows = held[part]
        _complete(
            rng, m, buf, who[rows], subj[rows], tutor[rows], done[part], length[part], h[who[rows]], first
        )


def _length(rng: np.random.Generator, minutes: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Session minutes: the tier's nominal length, cut shorter by unhappy customers."""
    return np.clip(np.rint(minutes * (0.75 + 0.25 * h / 100.0) + rng.normal(0, 5, len(h))), 10, 180)


def _complete(
    rng: np.random.Generator,
    m: _Market,
    buf: _Buffer,
    who: np.ndarray,
    subj: np.ndarray,
    tutor: np.ndarray,
    done: np.ndarray,
    length: np.ndarray,
    h: np.ndarray,
    first: bool,
) -> None:
    """A held session: completed, then (often) rated; ratings follow health and tutor quality."""
    success = m.first_success[who].astype(int) if first else -1
    buf.add(
        who, done, "session_completed", subj=subj, tutor=tutor, value=length, flag=int(first), success=success
    )
    stars = 1 + 4 * expit((h - 45.0) / 14.0 + 0.45 * m.tutor_quality[tutor]) + rng.normal(0, 0.55, len(who))
    stars = np.clip(np.rint(stars), 1, 5)
    if first:
        stars = np.where(m.first_success[who], np.maximum(stars, 4), np.minimum(stars, 2))
    rated = rng.random(len(who)) < (0.8 if first else RATING_PROB)
    later = done[rated] + rng.integers(5 * _MINUTE_US, 3 * _HOUR_US, rated.sum()) // 1000 * 1000
    buf.add(who[rated], later, "session_rated", tutor=tutor[rated], value=stars[rated])


def _payments(
    rng: np.random.Generator,
    m: _Market,
    buf: _Buffer,
    d: int,
    today: np.ndarray,
    times: Any,
    h: np.ndarray,
    tier: np.ndarray,
    retries: dict[int, list[np.ndarray]],
) -> None:
    """Monthly charges from the sign-up day; a failed charge is retried once, three days later."""
    due = today[(d - m.signup_day[today]) % 30 == 0]
    again = np.concatenate(retries.pop(d, [np.zeros(0, np.int64)]))
    again = again[np.isin(again, today)]
    who = np.concatenate([due, again])
    fails = rng.random(len(who)) < 0.02 + 0.3 * expit((30.0 - h[who]) / 5.0)
    when = times(who)
    joined = m.signup_day[who] == d  # first charge right after sign-up
    when[joined] = m.signup_us[who[joined]] + rng.integers(1, 10, joined.sum()) * _MINUTE_US
    buf.add(who[~fails], when[~fails], "payment_succeeded", value=_PRICE[tier[who[~fails]]])
    buf.add(who[fails], when[fails], "payment_failed", value=_PRICE[tier[who[fails]]])
    first_try = fails.copy()
    first_try[len(due) :] = False
    retries.setdefault(d + 3, []).append(who[first_try])


def _tier_changes(
    rng: np.random.Generator, buf: _Buffer, today: np.ndarray, times: Any, h: np.ndarray, tier: np.ndarray
) -> None:
    down = (tier[today] > 0) & (rng.random(len(today)) < 0.006 * expit((50.0 - h[today]) / 6.0))
    up = (tier[today] < 2) & (rng.random(len(today)) < 0.002 * expit((h[today] - 80.0) / 4.0))
    who = today[down | up]
    tier[who] += np.where(up[down | up], 1, -1)
    buf.add(who, times(who), "subscription_changed", flag=tier[who])


def _shocks(
    rng: np.random.Generator,
    m: _Market,
    buf: _Buffer,
    day_us: int,
    who: np.ndarray,
    times: Any,
    tier: np.ndarray,
) -> None:
    """What a health shock looks like from outside: a bad session, a tutor cancelling, a failed charge,
    or nothing at all. Some shocked customers call about it."""
    kind = rng.choice(4, len(who), p=[0.45, 0.25, 0.1, 0.2])
    subj = m.subjects[who, 0]
    tutor = m.random_tutor(rng, subj)
    booked = (
        day_us - rng.integers(1, 3, len(who)) * DAY_US + rng.integers(8 * _HOUR_US, 20 * _HOUR_US, len(who))
    )
    booked = np.maximum(booked, m.signup_us[who] + _MINUTE_US) // 1000 * 1000
    at = times(who)
    s = kind <= 1  # a bad session or a tutor cancellation: both were booked a day or two before
    buf.add(who[s], booked[s], "session_booked", subj=subj[s], tutor=tutor[s])
    bad = kind == 0
    buf.add(
        who[bad],
        at[bad],
        "session_completed",
        subj=subj[bad],
        tutor=tutor[bad],
        value=rng.integers(15, 40, bad.sum()).astype(float),
        flag=0,
    )
    rated = bad & (rng.random(len(who)) < 0.85)
    buf.add(
        who[rated],
        at[rated] + 10 * _MINUTE_US,
        "session_rated",
        tutor=tutor[rated],
        value=rng.choice([1.0, 2.0], rated.sum()),
    )
    c = kind == 1
    buf.add(who[c], at[c], "session_cancelled", subj=subj[c], flag=1)
    p = kind == 2
    buf.add(who[p], at[p], "payment_failed", value=_PRICE[tier[who[p]]])
    calls = rng.random(len(who)) < SHOCK_CALL_PROB
    buf.add(who[calls], at[calls] + _HOUR_US, "ib_call", flag=rng.choice([0, 1], calls.sum(), p=[0.7, 0.3]))


def _frame(cols: dict[str, np.ndarray], churn_us: np.ndarray, end_us: int, customers: int) -> pd.DataFrame:
    """Drop what falls after churn (bar the allowed last call) or after the end; sort; name; number."""
    keep = (cols["t"] < end_us) & ((cols["t"] <= churn_us[cols["cust"]]) | cols["post"])
    cols = {k: v[keep] for k, v in cols.items()}
    order = np.lexsort((np.arange(len(cols["t"])), cols["cust"], cols["t"]))
    cols = {k: v[order] for k, v in cols.items()}
    cust, kind, flag, subj = cols["cust"], cols["kind"], cols["flag"], cols["subj"]
    counts = np.bincount(cust, minlength=customers)
    seq = np.empty(len(cust), np.int64)  # position of each event within its customer's history
    seq[np.argsort(cust, kind="stable")] = np.arange(len(cust)) - np.repeat(
        np.cumsum(counts) - counts, counts
    )
    ids = customer_ids(customers)[cust]
    types = np.array(EVENT_TYPES, dtype=object)[kind]

    def pick(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.full(len(cust), None, dtype=object)
        out[mask] = values[mask]
        return out

    def named(names: tuple[str, ...], kinds: tuple[str, ...]) -> np.ndarray:
        mask = np.isin(kind, [_KIND[k] for k in kinds])
        return pick(mask, np.array(names, dtype=object)[np.clip(flag, 0, len(names) - 1)])

    def flags(values: np.ndarray) -> np.ndarray:
        return values.astype(bool).astype(object)  # Python bools, as JSON and pydantic want them

    completed = kind == _KIND["session_completed"]
    has_tutor = np.isin(kind, [_KIND[k] for k in ("session_booked", "session_completed", "session_rated")])
    value = cols["value"]
    frame = pd.DataFrame(
        {
            "event_id": np.char.add(np.char.add(ids, "-"), (seq + 1).astype(str)),
            "customer_id": ids,
            "type": types,
            "occurred_at": np.char.add(
                np.datetime_as_string(cols["t"].astype("datetime64[us]"), unit="ms"), "Z"
            ),
            "tier": named(TIERS, ("customer_signed_up", "subscription_changed")),
            "subject": pick(subj >= 0, np.array(SUBJECTS, dtype=object)[np.maximum(subj, 0)]),
            "tutor_id": pick(
                has_tutor,
                np.array([f"t-{i:04d}" for i in range(cols["tutor"].max(initial=0) + 1)], dtype=object)[
                    np.maximum(cols["tutor"], 0)
                ],
            ),
            "duration_minutes": np.where(completed, value, np.nan),
            "first_session": pick(completed, flags(flag == 1)),
            "success": pick(completed & (cols["success"] >= 0), flags(cols["success"] == 1)),
            "cancelled_by": named(_CANCELLED_BY, ("session_cancelled",)),
            "rating": np.where(kind == _KIND["session_rated"], value, np.nan),
            "sentiment": named(_SENTIMENTS, ("ib_call",)),
            "amount": np.where(
                np.isin(kind, [_KIND["payment_succeeded"], _KIND["payment_failed"]]), value, np.nan
            ),
            "occurred_us": cols["t"],
        }
    )
    return frame


def _truth(
    start: datetime,
    ids: np.ndarray,
    health: np.ndarray,
    churn_us: np.ndarray,
    m: _Market,
    supply_demand: np.ndarray,
) -> Truth:
    days = health.shape[1]
    end_of_day = to_us(start) + (np.arange(days) + 1) * DAY_US  # the first instant after each day
    churned = churn_us[:, None] < end_of_day[None, :]
    signed = m.signup_us[:, None] < end_of_day[None, :]
    active = signed & ~churned & (health >= 0)
    h = np.where(active, health, 0)
    tables = churn_tables()
    mu = m.mu[:, None]
    segment = np.select([~signed, churned, h >= 80, h >= 60], [NOT_SIGNED_UP, 3, 0, 1], 2).astype(np.int8)

    def masked(values: np.ndarray) -> np.ndarray:
        return np.where(active, values, np.nan).astype(np.float32)

    return Truth(
        start, ids, masked(h), masked(tables[14][mu, h]), masked(tables[30][mu, h]), segment, supply_demand
    )


def _outcomes(frame: pd.DataFrame, ids: np.ndarray, m: _Market, churn_us: np.ndarray) -> list[dict[str, Any]]:
    firsts = frame[frame["first_session"].eq(True)].drop_duplicates("customer_id")
    first = dict(zip(firsts["customer_id"], firsts["success"], strict=True))
    never = np.iinfo(np.int64).max

    def iso(us: int) -> str:
        return str(np.datetime_as_string(np.datetime64(int(us), "us"), unit="ms")) + "Z"

    return [
        {
            "customer_id": cid,
            "churned_at": None if churn_us[i] == never else iso(churn_us[i]),
            "signed_up_at": iso(m.signup_us[i]),
            "tier": TIERS[m.tier[i]],
            "primary_subject": SUBJECTS[m.subjects[i, 0]],
            "first_session_success": first.get(cid),
            "baseline_health": int(m.mu[i]),
        }
        for i, cid in enumerate(ids.tolist())
    ]


def _paths(out_path: Path) -> dict[str, Path]:
    name = out_path.name
    for suffix in sorted(EVENT_SUFFIXES, key=len, reverse=True):  # `x.ndjson` also ends in `.json`
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            return {
                "events": out_path,
                "outcomes": out_path.with_name(stem + ".outcomes.jsonl"),
                "truth": out_path.with_name(stem + ".truth.npz"),
            }
    raise ValueError(f"{out_path}: the events file must end in {', '.join(EVENT_SUFFIXES)}")


def write_simulation(sim: Simulation, out_path: str | Path) -> dict[str, Path]:
    """Events (format by extension), `<stem>.outcomes.jsonl` and `<stem>.truth.npz`; returns the paths."""
    paths = _paths(Path(out_path))
    paths["events"].parent.mkdir(parents=True, exist_ok=True)
    if paths["events"].name.lower().endswith(".parquet"):
        sim.frame.drop(columns="occurred_us").to_parquet(paths["events"], index=False)
    else:
        gz = paths["events"].name.lower().endswith(".gz")
        opener: Any = functools.partial(gzip.open, compresslevel=6) if gz else open
        with opener(paths["events"], "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(event, separators=(",", ":")) + "\n" for event in sim.events)
    with paths["outcomes"].open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(outcome, separators=(",", ":")) + "\n" for outcome in sim.outcomes)
    t = sim.truth
    np.savez_compressed(
        paths["truth"],
        start=np.array(t.start.isoformat()),
        days=np.array(sim.days),
        seed=np.array(-1 if sim.seed is None else sim.seed),
        customer_ids=t.customer_ids.astype(str),
        health=t.health,
        churn_prob_14d=t.churn_prob_14d,
        churn_prob_30d=t.churn_prob_30d,
        segment=t.segment,
        supply_demand=t.supply_demand,
    )
    return paths


def load_simulation(events_path: str | Path) -> Simulation:
    """Read back what `write_simulation` wrote (events, outcomes and truth next to them)."""
    paths = _paths(Path(events_path))
    for what, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: missing {what}; write it with `churn-model simulate --out {paths['events']}`"
            )
    if paths["events"].name.lower().endswith(".parquet"):
        frame = pd.read_parquet(paths["events"])
    else:
        frame = pd.read_json(paths["events"], lines=True, dtype=False)
    frame = frame.reindex(columns=list(COLUMNS)).astype(object).where(lambda f: f.notna(), None)
    for col in ("duration_minutes", "rating", "amount"):
        frame[col] = frame[col].astype(float)
    instants = pd.to_datetime(frame["occurred_at"], utc=True, format="ISO8601")
    frame["occurred_us"] = instants.dt.as_unit("us").astype("int64")
    frame = frame.sort_values("occurred_us", kind="stable").reset_index(drop=True)
    with paths["outcomes"].open(encoding="utf-8") as handle:
        outcomes = [json.loads(line) for line in handle if line.strip()]
    with np.load(paths["truth"], allow_pickle=False) as z:
        start = datetime.fromisoformat(str(z["start"]))
        truth = Truth(
            start,
            z["customer_ids"],
            z["health"],
            z["churn_prob_14d"],
            z["churn_prob_30d"],
            z["segment"],
            z["supply_demand"],
        )
        days, seed = int(z["days"]), int(z["seed"])
    return Simulation(start, days, frame, outcomes, truth, None if seed < 0 else seed)
