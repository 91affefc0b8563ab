"""Survivor history: a log's stretch in which only customers who stayed are recorded has its churn
and health labels censored, and only then (model/survivorship.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from features.state import DAY_US
from model.owndata import BuildOptions, build_examples
from model.survivorship import HORIZON_DAYS, censor_survivor_history, find_survivor_history

RNG = np.random.default_rng(5)
END = 200 * DAY_US  # the data's latest event: every horizon below lies inside it


def instants(days: int, per_day: int) -> np.ndarray:
    return np.repeat(np.arange(days, dtype=np.int64) * DAY_US + DAY_US - 1, per_day)


def test_a_long_stretch_without_any_churner_is_survivor_history() -> None:
    t = instants(120, 100)
    y = (RNG.random(len(t)) < 0.08).astype(np.float64)
    y[t < 60 * DAY_US] = 0.0  # the exported history: only customers who stayed
    labels = {
        "churn_risk_30d": y.copy(),
        "churn_risk_14d": y.copy(),
        "health_score": np.full(len(t), 80.0),
        "session_velocity": np.ones(len(t)),
    }
    found = censor_survivor_history(t, labels, END)
    assert found is not None
    first = int(t[y > 0].min())
    assert found.until_us == first + HORIZON_DAYS * DAY_US
    masked = t < found.until_us
    for name in ("churn_risk_30d", "churn_risk_14d", "health_score"):
        assert np.isnan(labels[name][masked]).all() and not np.isnan(labels[name][~masked]).any()
    assert not np.isnan(labels["session_velocity"]).any()  # who left does not decide this one
    assert found.masked_rows == int(masked.sum())
    assert "survivor history" in found.warning() and "no churner" in found.warning()


def test_a_log_that_churns_from_its_start_is_left_alone() -> None:
    t = instants(120, 100)
    y = (RNG.random(len(t)) < 0.08).astype(np.float64)
    assert find_survivor_history(t, y, END) is None


def test_a_quiet_start_that_chance_explains_is_left_alone() -> None:
    t = instants(120, 20)
    y = (RNG.random(len(t)) < 0.004).astype(np.float64)
    y[t < 40 * DAY_US] = 0.0  # 800 instants at 0.4 %: about 3 churners expected, none is not news
    assert find_survivor_history(t, y, END) is None


def test_the_end_of_a_log_labelled_only_by_its_churners_is_not_mistaken_for_a_churn_rate() -> None:
    t = instants(50, 100)
    y = np.where(t < 40 * DAY_US, 0.0, np.nan)  # horizons past the end: only churners are labelled
    y[(t >= 40 * DAY_US) & (RNG.random(len(t)) < 0.05)] = 1.0
    assert find_survivor_history(t, y, 50 * DAY_US) is None


def test_censored_labels_do_not_count_and_no_churner_at_all_is_not_survivorship() -> None:
    t = instants(60, 100)
    assert find_survivor_history(t, np.zeros(len(t)), END) is None
    y = np.full(len(t), np.nan)
    assert find_survivor_history(t, y, END) is None


def _log(tmp_path: Path) -> tuple[Path, Path]:
    """200 customers exported with their sign-ups a year back and nothing else before day 0 (the
    pipeline's start), then daily logins; from day 0 on, a tenth of them churn."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[dict[str, object]] = []
    outcomes = []

    def at(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    for i in range(200):
        cid = f"c{i:03d}"
        signed = start - timedelta(days=int(RNG.integers(60, 365)))
        events.append(
            {
                "event_id": f"{cid}-s",
                "customer_id": cid,
                "type": "customer_signed_up",
                "occurred_at": at(signed),
            }
        )
        gone = start + timedelta(days=float(RNG.uniform(5, 90))) if i % 10 == 0 else None
        for day in range(-60, 100, 2):  # the export kept two months of logins
            moment = start + timedelta(days=day, hours=9)
            if gone is not None and moment >= gone:
                break
            events.append(
                {"event_id": f"{cid}-{day}", "customer_id": cid, "type": "login", "occurred_at": at(moment)}
            )
        outcomes.append({"customer_id": cid, "churned_at": at(gone) if gone else None})
    events.sort(key=lambda e: str(e["occurred_at"]))
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    out = tmp_path / "outcomes.jsonl"
    out.write_text("".join(json.dumps(o) + "\n" for o in outcomes))
    return log, out


def test_building_examples_censors_an_exported_survivor_history_and_says_so(tmp_path: Path) -> None:
    log, outcomes = _log(tmp_path)
    said: list[str] = []
    examples, _ = build_examples(log, outcomes, BuildOptions(mode="evaluation"), say=said.append)
    survivors = examples.summary["survivor_history"]
    assert survivors is not None and survivors["censored_instants"] > 0
    assert any("survivor history" in line for line in said)
    until = datetime.fromisoformat(survivors["until"].replace("Z", "+00:00"))
    before = examples.t_us < int(until.timestamp() * 1_000_000)
    assert before.any() and np.isnan(examples.y["churn_risk_30d"][before]).all()
    assert np.nansum(examples.y["churn_risk_30d"][~before]) > 0
