"""A second marketplace generator, built to differ from `model.simulator` in structure, not only in
parameters: data the model's authors did not shape, to test whether training transfers.

What differs from the main simulator:
- Churn drivers and hazard shapes. No latent "health" with a spiral. Instead five mechanisms:
  an early-tenure hazard that decays over the first weeks (disappointed newcomers); exam-prep
  customers (SAT/ACT) who leave soon after their exam date (goal reached: they were engaged until
  the end); involuntary churn after repeated failed charges; tutor attrition (the assigned tutor
  leaves the platform, sessions get cancelled, satisfaction drops until a new match); and slow
  fatigue (engagement decays, with a hazard rising with days since the last session, Weibull-like).
- Event mix and rates: chatty customers (messages are the most common event), few logins (a
  mobile app that stays logged in), ratings rare, calls mostly about billing with neutral sentiment.
- Schedules and seasonality: sessions on fixed weekly slots, fewer on weekends, a holiday week with
  little activity, bursts before exams.
- The log itself: most customers signed up before the log starts and have no sign-up event; no
  `first_session`/`success` flags (a producer that never sets them); tier up- and downgrades; a
  few customers churn and sign up again; about 2% of events arrive late (out of time order, up to
  two days) and about 1% are delivered twice (same event_id).
- Outcomes follow docs/contracts.md, Outcomes files (the latest churn after the latest sign-up; a
  customer who came back is not churned).

`generate(customers, days, seed)` returns the events in arrival order and the outcomes;
`write_log(log, directory)` writes `events/part-NN.jsonl.gz` files and `outcomes.jsonl`.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.events import SUBJECTS, TIERS

DAY_US = 86_400_000_000
HOUR_US = DAY_US // 24
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
EXAM_SUBJECTS = (SUBJECTS.index("sat_prep"), SUBJECTS.index("act_prep"))
PRICE = np.array([29.0, 59.0, 119.0])
WEEKDAY_FACTOR = np.array([1.0, 1.05, 1.1, 1.05, 0.9, 0.55, 0.5])  # Monday .. Sunday


def _iso(us: np.ndarray | int) -> str:
    text = str(np.datetime64(int(us), "us"))
    return text[:23] + "Z" if "." in text else text + ".000Z"


@dataclass
class AltLog:
    events: list[dict[str, Any]]  # arrival order
    outcomes: list[dict[str, Any]]
    start: datetime
    days: int
    hazard: np.ndarray | None = None  # float32 [customers, days]: the daily churn hazard (NaN when inactive)
    customer_ids: list[str] | None = None

    def oracle_30d(self, customer: int, day: int) -> float:
        """A clairvoyant 30-day churn score from the realised daily hazards of the next 30 days
        (while the customer stays): 1 - (1 - their mean)^30. A rough ceiling for a model's ranking,
        not an expectation (it peeks at how the customer's state actually evolved)."""
        assert self.hazard is not None
        ahead = self.hazard[customer, day + 1 : day + 31]
        ahead = ahead[~np.isnan(ahead)]
        return float(1 - (1 - ahead.mean()) ** 30) if len(ahead) else float("nan")


class _Emitter:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[tuple[int, str, dict[str, Any]]] = []  # (occurred_us, customer, event)
        self.counter = 0

    def emit(self, customer: str, t_us: int, kind: str, **fields: Any) -> None:
        self.counter += 1
        event = {
            "event_id": f"ev{self.counter:09d}",
            "customer_id": customer,
            "type": kind,
            "occurred_at": _iso(t_us),
            **fields,
        }
        self.rows.append((t_us, customer, event))


def generate(customers: int, days: int, seed: int, start: datetime = START) -> AltLog:
    rng = np.random.default_rng(seed)
    start_us = int(start.timestamp() * 1_000_000) // DAY_US * DAY_US
    out = _Emitter(rng)
    n = customers
    ids = [f"u{seed % 1000:03d}x{i:06d}" for i in range(n)]
    existing = rng.random(n) < 0.7
    join_day = np.where(existing, -rng.integers(20, 700, n), rng.integers(0, days, n))
    tier = rng.choice(3, n, p=[0.5, 0.35, 0.15])
    subject = rng.choice(len(SUBJECTS), n)
    exam = rng.random(n) < 0.18
    subject[exam] = rng.choice(EXAM_SUBJECTS, exam.sum())
    exam_day = np.where(exam, np.maximum(join_day, 0) + rng.integers(30, 150, n), 10**6)
    slots = [np.sort(rng.choice(7, rng.integers(1, 4), replace=False)) for _ in range(n)]
    tutors_per_subject = max(3, n // 60)
    tutor = subject * 1000 + rng.integers(0, tutors_per_subject, n)
    tutor_gone_until = np.full(n, -1)  # day a new tutor is matched after the old one left
    engagement = np.clip(rng.beta(4, 2, n), 0.05, 1.0)
    newcomer_doubt = (
        rng.random(n) < 0.3
    )  # a disappointing start: high hazard in the first weeks, and it shows
    engagement[newcomer_doubt & ~existing] = np.clip(
        rng.beta(2, 5, (newcomer_doubt & ~existing).sum()), 0.05, 1.0
    )
    drifter = rng.random(n) < 0.35  # a third lose interest over weeks; the rest stay engaged
    fatigue = np.where(drifter, rng.gamma(3.0, 0.008, n), rng.gamma(1.0, 0.0008, n))  # daily engagement decay
    chatty = rng.gamma(2.0, 1.5, n)  # messages per day when engaged
    card_risk = rng.beta(1.2, 25, n)  # chance a monthly charge fails
    fails_in_row = np.zeros(n, dtype=int)
    last_session_day = join_day.copy()
    active = existing.copy()
    churn_days: list[list[int]] = [[] for _ in range(n)]
    returned = np.zeros(n, dtype=bool)
    holiday = set(range(days // 2, days // 2 + 7))
    hazards = np.full((n, days), np.nan, dtype=np.float32)
    for i in np.flatnonzero(existing):  # existing customers: only a payment anniversary, no sign-up event
        last_session_day[i] = -rng.integers(0, 6)

    for d in range(days):
        day_us = start_us + d * DAY_US
        weekday = (d + start.weekday()) % 7
        season = WEEKDAY_FACTOR[weekday] * (0.35 if d in holiday else 1.0)
        joining = np.flatnonzero((join_day == d) & ~active)
        for i in joining:
            at = (
                day_us + int(rng.integers(8 * 3600, 12 * 3600)) * 1_000_000
            )  # mornings: before any churn that day
            out.emit(ids[i], at, "customer_signed_up", tier=TIERS[tier[i]])
            active[i] = True
            last_session_day[i] = d
        alive = np.flatnonzero(active)
        tenure = d - join_day[alive]
        # Engagement: fatigue, a small daily recovery for happy matches, noise.
        engagement[alive] = np.clip(
            engagement[alive] * (1 - fatigue[alive]) + rng.normal(0, 0.01, len(alive)), 0.02, 1.0
        )
        # Tutor attrition: a tutor leaves; until rematched (3-20 days) sessions are cancelled by the tutor.
        leaves = alive[rng.random(len(alive)) < 0.0025]
        tutor_gone_until[leaves] = d + rng.integers(3, 21, len(leaves))
        engagement[leaves] *= 0.8
        rematched = alive[tutor_gone_until[alive] == d]
        tutor[rematched] = subject[rematched] * 1000 + rng.integers(0, tutors_per_subject, len(rematched))
        for i in alive:
            _customer_day(
                out,
                rng,
                int(i),
                ids[i],
                d,
                day_us,
                weekday,
                season,
                slots[i],
                tier,
                subject,
                tutor,
                tutor_gone_until,
                engagement,
                chatty,
                card_risk,
                fails_in_row,
                last_session_day,
                join_day,
                exam_day,
            )
        # Hazard: early tenure + exam done + involuntary + fatigue (days since last session) + tier.
        since = d - last_session_day[alive]
        hazard = (
            0.0002
            + np.where(
                newcomer_doubt[alive] & (tenure >= 0), 0.03 * np.exp(-np.maximum(tenure, 0) / 10.0), 0.0
            )
            + np.where(d > exam_day[alive] + 3, 0.08, 0.0)
            + np.where(fails_in_row[alive] >= 2, 0.3, 0.0)
            + 0.0015 * np.clip(np.maximum(since, 0) / 7.0, 0, 6) ** 2
            + 0.03 * (1 - engagement[alive]) ** 4
            + np.where(tutor_gone_until[alive] > d, 0.006, 0.0)
            + np.where(tier[alive] == 0, 0.0004, 0.0)
        )
        hazards[alive, d] = np.clip(hazard, 0, 0.9)
        leaving = alive[rng.random(len(alive)) < np.clip(hazard, 0, 0.9)]
        for i in leaving:
            t = day_us + int(rng.integers(13 * 3600, 23 * 3600)) * 1_000_000
            out.emit(ids[i], t, "customer_churned")
            churn_days[i].append(d)
            active[i] = False
            if rng.random() < 0.15:
                out.emit(ids[i], t + int(rng.integers(2, 30)) * HOUR_US, "ib_call", sentiment="negative")
            if not returned[i] and rng.random() < 0.12 and d + 14 < days:  # comes back in 2-6 weeks
                returned[i] = True
                join_day[i] = d + int(rng.integers(14, 43))
                engagement[i] = float(np.clip(rng.beta(4, 2), 0.2, 1.0))
                fails_in_row[i] = 0
                exam_day[i] = 10**6

    rows = out.rows
    end_us = start_us + days * DAY_US
    rows = [row for row in rows if row[0] < end_us]
    arrival = np.array([t for t, _, _ in rows], dtype=np.int64)
    late = rng.random(len(rows)) < 0.02
    arrival[late] += rng.integers(1, 48, late.sum()) * HOUR_US
    order = np.argsort(arrival, kind="stable")
    events = [rows[k][2] for k in order.tolist()]
    dupes = rng.random(len(events)) < 0.01
    for k in np.flatnonzero(dupes)[::-1].tolist():  # a second delivery, a little later in the file
        events.insert(min(len(events), k + int(rng.integers(1, 500))), dict(events[k]))
    outcomes = _outcomes(rows, ids)
    return AltLog(events, outcomes, start, days, hazards, ids)


def _customer_day(
    out: _Emitter,
    rng: np.random.Generator,
    i: int,
    cid: str,
    d: int,
    day_us: int,
    weekday: int,
    season: float,
    slots: np.ndarray,
    tier: np.ndarray,
    subject: np.ndarray,
    tutor: np.ndarray,
    gone_until: np.ndarray,
    engagement: np.ndarray,
    chatty: np.ndarray,
    card_risk: np.ndarray,
    fails: np.ndarray,
    last_session: np.ndarray,
    join_day: np.ndarray,
    exam_day: np.ndarray,
) -> None:
    e = float(engagement[i])

    def at(lo: int = 7, hi: int = 23) -> int:
        return day_us + int(rng.integers(lo * 60, hi * 60)) * 60_000_000

    for _ in range(rng.poisson(chatty[i] * e * season)):
        out.emit(cid, at(), "message_sent")
    if rng.random() < 0.08 * season:
        out.emit(cid, at(), "login")
    burst = 2.0 if 0 <= exam_day[i] - d <= 21 else (0.15 if d > exam_day[i] else 1.0)  # cramming, then done
    if weekday in slots or (burst > 1 and rng.random() < 0.3):
        subj, tid = SUBJECTS[int(subject[i])], f"tt{int(tutor[i]):06d}"
        if rng.random() < min(0.97, (0.25 + 0.75 * e) * burst) * min(1.0, season + 0.3):
            ahead = min(int(rng.integers(1, 4)), max(0, d - int(join_day[i])))  # never before the sign-up day
            out.emit(cid, at(7, 11) - ahead * DAY_US, "session_booked", subject=subj, tutor_id=tid)
            begin = at(15, 20)
            if gone_until[i] > d:
                out.emit(cid, begin - HOUR_US, "session_cancelled", subject=subj, cancelled_by="tutor")
                engagement[i] *= 0.97
            elif rng.random() < 0.08 * (1.2 - e):
                out.emit(cid, begin - 2 * HOUR_US, "session_cancelled", subject=subj, cancelled_by="customer")
            else:
                minutes = float(np.clip(rng.normal([45, 60, 75][tier[i]] * (0.7 + 0.3 * e), 8), 15, 150))
                done = begin + int(minutes * 60_000_000)
                out.emit(
                    cid,
                    done,
                    "session_completed",
                    subject=subj,
                    tutor_id=tid,
                    duration_minutes=round(minutes, 1),
                )
                last_session[i] = d
                engagement[i] = min(1.0, e + 0.01)
                if rng.random() < 0.2:
                    stars = float(np.clip(np.round(2.5 + 2.5 * e + rng.normal(0, 0.7)), 1, 5))
                    out.emit(
                        cid,
                        done + int(rng.integers(5, 600)) * 60_000_000,
                        "session_rated",
                        rating=stars,
                        tutor_id=tid,
                    )
    if (d - join_day[i]) % 30 == 0 or (
        fails[i] and rng.random() < 0.35
    ):  # charges, and retries after a failure
        amount = float(PRICE[tier[i]])
        if rng.random() < card_risk[i] * (3 if fails[i] else 1):
            out.emit(cid, at(1, 6), "payment_failed", amount=amount)
            fails[i] += 1
            if rng.random() < 0.5:
                out.emit(
                    cid,
                    at(9, 17),
                    "ib_call",
                    sentiment=str(rng.choice(["neutral", "negative"], p=[0.6, 0.4])),
                )
        else:
            out.emit(cid, at(1, 6), "payment_succeeded", amount=amount)
            fails[i] = 0
    if rng.random() < 0.004:
        out.emit(
            cid,
            at(9, 17),
            "ib_call",
            sentiment=str(rng.choice(["neutral", "positive", "negative"], p=[0.6, 0.25, 0.15])),
        )
    change = rng.random()
    if change < 0.002 * (1.3 - e) and tier[i] > 0:
        tier[i] -= 1
        out.emit(cid, at(), "subscription_changed", tier=TIERS[tier[i]])
    elif change > 1 - 0.0008 * e and tier[i] < 2:
        tier[i] += 1
        out.emit(cid, at(), "subscription_changed", tier=TIERS[tier[i]])


def _outcomes(rows: list[tuple[int, str, dict[str, Any]]], ids: list[str]) -> list[dict[str, Any]]:
    """docs/contracts.md, Outcomes files: the latest churn after the latest sign-up, else null."""
    last_churn: dict[str, int] = {}
    last_sign_up: dict[str, int] = {}
    for t, cid, event in rows:
        if event["type"] == "customer_churned":
            last_churn[cid] = max(last_churn.get(cid, t), t)
        elif event["type"] == "customer_signed_up":
            last_sign_up[cid] = max(last_sign_up.get(cid, t), t)
    out = []
    for cid in ids:
        churned = last_churn.get(cid)
        if churned is not None and churned <= last_sign_up.get(cid, -1):
            churned = None
        out.append({"customer_id": cid, "churned_at": None if churned is None else _iso(churned)})
    return out


def write_log(log: AltLog, directory: Path, files: int = 4) -> dict[str, Path]:
    """`directory/events/part-NN.jsonl.gz` (the arrival order cut into `files` parts, as an archive
    would hold it) and `directory/outcomes.jsonl`."""
    events_dir = directory / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(log.events) // files)
    for k in range(files):
        with gzip.open(
            events_dir / f"part-{k:02d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=3
        ) as handle:
            for event in log.events[k * per_file : (k + 1) * per_file]:
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
    outcomes = directory / "outcomes.jsonl"
    with outcomes.open("w", encoding="utf-8") as handle:
        for row in log.outcomes:
            handle.write(json.dumps(row) + "\n")
    return {"events": events_dir, "outcomes": outcomes}
