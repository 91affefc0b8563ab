"""What changed: the inputs that moved a customer's score most since their previous scoring.

Every alert carries `changes` (up to three inputs: previous and current value, and each one's share
of the movement), `previous_score_at`, `previous_churn_probability` and `what_changed`, one line a
person reads: "churn risk 31% -> 68% since 20 Nov: completed sessions in the last 7 days 4 -> 0;
inbound support calls in the last 14 days 0 -> 2".

The previous scoring, at no extra DynamoDB write per event:
- its instant is the profile's `scored_us`, which the writes that already happen per scoring set:
  the profile Put of the event path (written just before the scoring it describes) and the
  sweeper's completion UpdateItem (`features/STORE.md`);
- its inputs are recomputed from the customer's state as it was before this batch's events (the
  store hands out that copy, `ApplyResult.previous`, from what it read anyway) at that instant:
  the same features the model saw then, since windows are kept per UTC day and the events since are
  exactly this batch's (a customer is scored after every batch). A re-scoring has no new events:
  the state as read is the previous one.
- its score: the model scores the previous inputs again, in one extra call per batch that alerts
  (rows only for the customers with an alert), so a model deployed in between explains the inputs
  with today's weights.

Shares, from the model itself: the endpoint's `feature_importance` is an absolute attribution
against the training mean, top 10 only, which cannot be subtracted between two scorings. So the
same call also scores the current inputs with one changed input put back to its previous value,
for each candidate input (those among the current top attributions or the rules' own inputs, then
the largest relative moves; at most `MAX_CANDIDATES`). An input's effect is the current churn risk
minus that row's; its share is its effect over the sum of the candidates' absolute effects
(signed: positive pushed the risk up). The three largest are listed.

Never in the way: the call is bounded (`EXPLAIN_TIMEOUT_SECONDS`, one attempt, its own circuit
breaker in the worker), and any failure, a rules-only alert or a missing explainer leaves the
changes without shares (values still compared) and `previous_churn_probability` null. A customer
scored for the first time has no changes and `previous_score_at` null.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from features.registry import FEATURE_NAMES, compute_features_batch, describe
from features.state import CustomerState, from_us, to_us
from worker.alerts.rules import Alert, Change, Prediction
from worker.exceptions import FatalAwsError

if TYPE_CHECKING:
    from worker.ports import Scorer

log = structlog.get_logger(__name__)

MAX_CHANGES = 3
MAX_CANDIDATES = 32
EXPLAIN_TIMEOUT_SECONDS = 5.0
RULE_INPUTS = ("ib_call_count_14d", "session_frequency_30d", "has_first_session", "payment_amount_30d")


def _label(description: str) -> str:
    text = description.split(" (")[0]
    for window in ("7", "14", "30"):
        text = text.replace(f", last {window} days", f" in the last {window} days")
    return text.replace("whole days since", "days since")


LABELS: dict[str, str] = {d["name"]: _label(d["description"]) for d in describe()}


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def previous_inputs(
    customers: Sequence[str],
    current: Mapping[str, CustomerState],
    previous: Mapping[str, CustomerState] | None,
    as_of: datetime,
) -> dict[str, tuple[datetime, np.ndarray]]:
    """Per customer with a previous scoring before `as_of`: (its instant, its inputs)."""
    wanted: list[tuple[str, CustomerState, datetime]] = []
    for cid in customers:
        state = (previous or {}).get(cid) or current[cid]
        scored_us = state.profile.scored_us
        if scored_us is None or scored_us >= to_us(as_of):
            continue
        wanted.append((cid, state, from_us(scored_us)))
    if not wanted:
        return {}
    # One matrix for all, each row at its own instant (a call per customer was ~4% of the worker's
    # CPU on alert-heavy traffic: the features' numpy work is per call, not per row).
    matrix = compute_features_batch([state for _, state, _ in wanted], [at for _, _, at in wanted])
    return {cid: (at, matrix[i]) for i, (cid, _, at) in enumerate(wanted)}


def _candidates(before: np.ndarray, now: np.ndarray, prediction: Prediction | None) -> list[int]:
    changed = np.flatnonzero(~np.isclose(before, now, rtol=1e-9, atol=1e-9))
    if not len(changed):
        return []
    preferred = set(RULE_INPUTS)
    if prediction is not None:
        preferred |= {f.feature for f in prediction.feature_importance}
    first = [int(i) for i in changed if FEATURE_NAMES[i] in preferred]
    relative = np.abs(now[changed] - before[changed]) / (np.abs(before[changed]) + np.abs(now[changed]) + 1.0)
    rest = [
        int(changed[i])
        for i in np.argsort(-relative, kind="stable")
        if FEATURE_NAMES[changed[i]] not in preferred
    ]
    return (first + rest)[:MAX_CANDIDATES]


def _risk(row: Any) -> float | None:
    value = row.get("churn_risk_30d") if isinstance(row, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(1.0, max(0.0, float(value)))


def summary(
    previous_at: datetime | None,
    as_of: datetime,
    changes: Sequence[Change],
    before: float | None,
    after: float | None,
) -> str | None:
    """The one line: "churn risk 31% -> 68% since 20 Nov: ..."."""
    if previous_at is None:
        return None
    when = (
        previous_at.strftime("%H:%M UTC")
        if previous_at.date() == as_of.date()
        else previous_at.strftime("%-d %b")
    )
    head = (
        f"churn risk {before:.0%} -> {after:.0%} since {when}"
        if before is not None and after is not None
        else f"since {when}"
    )
    if not changes:
        return f"{head}: no input changed"
    moves = "; ".join(f"{c.label} {_number(c.previous)} -> {_number(c.current)}" for c in changes)
    return f"{head}: {moves}"


async def explain(
    alerts: list[Alert],
    customers: Sequence[str],
    matrix: np.ndarray,
    predictions: Sequence[Prediction | None],
    states: Mapping[str, CustomerState],
    previous: Mapping[str, CustomerState] | None,
    as_of: datetime,
    explainer: Scorer | None,
) -> list[Alert]:
    """The alerts with what changed for their customers filled in (see the module docstring)."""
    if not alerts:
        return alerts
    row_of = {cid: i for i, cid in enumerate(customers)}
    alerted = sorted({alert.customer_id for alert in alerts})
    before = previous_inputs(alerted, states, previous, as_of)
    plans: dict[str, tuple[int, list[int]]] = {}  # customer -> (first row in the call, candidates)
    rows: list[np.ndarray] = []
    for cid in alerted:
        if cid not in before:
            continue
        prediction = predictions[row_of[cid]]
        current, (_, old) = matrix[row_of[cid]], before[cid]
        picked = _candidates(old, current, prediction)
        if prediction is None or explainer is None:
            plans[cid] = (-1, picked)
            continue
        plans[cid] = (len(rows), picked)
        rows += [current, old]
        for index in picked:
            reverted = current.copy()
            reverted[index] = old[index]
            rows.append(reverted)
    answers: list[Any] = []
    if rows and explainer is not None:
        try:
            answers = await asyncio.wait_for(explainer.score(np.vstack(rows)), EXPLAIN_TIMEOUT_SECONDS)
            if len(answers) != len(rows):
                raise ValueError(f"{len(answers)} answers for {len(rows)} rows")
        except FatalAwsError:
            raise
        except Exception as exc:  # an outage, a timeout, a bad answer: changes without shares
            log.warning("could not score what changed; alerts go out without shares", error=str(exc))
            answers = []
    explained: dict[str, dict[str, Any]] = {}
    for cid, (start, picked) in plans.items():
        at, old = before[cid]
        current = matrix[row_of[cid]]
        effects: list[float | None] = [None] * len(picked)
        before_risk = after_risk = None
        if start >= 0 and answers:
            after_risk, before_risk = _risk(answers[start]), _risk(answers[start + 1])
            reverted = [_risk(answers[start + 2 + k]) for k in range(len(picked))]
            if after_risk is not None and None not in reverted:
                effects = [after_risk - r for r in reverted if r is not None]
        total = sum(abs(e) for e in effects if e is not None)
        entries = []
        for k, index in enumerate(picked):
            effect = effects[k]
            share = None if effect is None else (round(effect / total, 3) if total > 0 else 0.0)
            entries.append((effect, index, share))
        if all(effect is not None for effect, _, _ in entries):
            # By the share as published (3 decimals), then the input's position: two scorers whose
            # float32 outputs differ in the last bits (the endpoint, the backtest's in-process
            # model) list the same inputs in the same order.
            entries.sort(key=lambda e: (-abs(e[2] or 0.0), e[1]))
            entries = [e for e in entries if e[0]] or entries[:0]
        changes = tuple(
            Change(
                feature=FEATURE_NAMES[index],
                label=LABELS[FEATURE_NAMES[index]],
                previous=round(float(old[index]), 4),
                current=round(float(current[index]), 4),
                share=share,
            )
            for _, index, share in entries[:MAX_CHANGES]
        )
        prediction = predictions[row_of[cid]]
        risk_now = prediction.churn_risk_30d if prediction is not None else None
        explained[cid] = {
            "changes": changes,
            "previous_score_at": at,
            "previous_churn_probability": None if before_risk is None else round(before_risk, 4),
            "what_changed": summary(
                at, as_of, changes, before_risk, risk_now if before_risk is not None else None
            ),
        }
    return [
        alert.model_copy(update=explained[alert.customer_id]) if alert.customer_id in explained else alert
        for alert in alerts
    ]
