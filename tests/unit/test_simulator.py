"""The marketplace simulator: deterministic, contract-shaped events, outcomes and truth that agree,
an exact oracle, and the `churn-model simulate` command."""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cli.model_simulate import register, run_simulate
from features.eventfile import read_event_file
from features.events import SUBJECTS, validate_event
from features.exceptions import EventParseError
from model.simulator import (
    SEGMENTS,
    SHOCK_PROB,
    Simulation,
    _step,
    churn_tables,
    hazard,
    load_simulation,
    simulate,
    write_simulation,
)

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(200, 60, seed=5, start=START, progress=False)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_same_seed_same_events_other_seed_other_events(sim: Simulation) -> None:
    again = simulate(200, 60, seed=5, start=START, progress=False)
    assert again.events == sim.events
    assert again.outcomes == sim.outcomes
    np.testing.assert_array_equal(again.truth.health, sim.truth.health)
    other = simulate(200, 60, seed=6, start=START, progress=False)
    assert other.events != sim.events


def test_every_event_is_a_valid_contract_event_in_time_order(sim: Simulation) -> None:
    events = sim.events
    assert len(events) > 200 * 60 * 0.5  # a real marketplace's worth: about one event per customer-day
    for event in events:
        validate_event(event)  # raises on any contract violation
        assert event["occurred_at"].endswith("Z")
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    times = [_utc(e["occurred_at"]) for e in events]
    assert times == sorted(times)
    assert times[-1] < START + timedelta(days=60)
    kinds = Counter(e["type"] for e in events)
    assert set(kinds) == {
        "customer_signed_up",
        "subscription_changed",
        "session_booked",
        "session_completed",
        "session_cancelled",
        "session_rated",
        "ib_call",
        "login",
        "message_sent",
        "payment_succeeded",
        "payment_failed",
        "customer_churned",
    }
    assert kinds["customer_signed_up"] == 200
    assert {e["customer_id"] for e in events} == {f"c-{i:06d}" for i in range(200)}
    assert all(e["tutor_id"].startswith("t-") for e in events if "tutor_id" in e)


def test_event_ids_number_each_customers_history_in_time_order(sim: Simulation) -> None:
    seen: dict[str, int] = defaultdict(int)
    for event in sim.events:
        seen[event["customer_id"]] += 1
        assert event["event_id"] == f"{event['customer_id']}-{seen[event['customer_id']]}"


def test_nothing_after_churn_but_a_rare_last_call(sim: Simulation) -> None:
    churned_at = {o["customer_id"]: _utc(o["churned_at"]) for o in sim.outcomes if o["churned_at"]}
    assert 10 <= len(churned_at) <= 120  # some churn, most stay
    churn_events = [e for e in sim.events if e["type"] == "customer_churned"]
    assert {e["customer_id"]: _utc(e["occurred_at"]) for e in churn_events} == churned_at
    assert len(churn_events) == len(churned_at)
    after = [
        e
        for e in sim.events
        if e["customer_id"] in churned_at and _utc(e["occurred_at"]) > churned_at[e["customer_id"]]
    ]
    assert {e["type"] for e in after} <= {"ib_call"}
    assert len(after) <= 0.3 * len(churned_at)


def test_first_sessions_are_flagged_once_with_their_success(sim: Simulation) -> None:
    completed: dict[str, list[dict]] = defaultdict(list)
    for event in sim.events:
        if event["type"] == "session_completed":
            completed[event["customer_id"]].append(event)
    outcome = {o["customer_id"]: o for o in sim.outcomes}
    assert completed
    for cid, sessions in completed.items():
        firsts = [s for s in sessions if s.get("first_session")]
        assert len(firsts) == 1, cid
        assert sessions[0] is firsts[0]  # the earliest completed session is the first
        assert isinstance(firsts[0]["success"], bool)
        assert all("success" not in s for s in sessions[1:])
        assert outcome[cid]["first_session_success"] is firsts[0]["success"]
    successes = [o["first_session_success"] for o in sim.outcomes if o["first_session_success"] is not None]
    assert 0.5 < np.mean(successes) < 0.95


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_history_invariants_hold_for_other_seeds(seed: int) -> None:
    """Per customer, in time order: sign-up first, the first completed session flagged, nothing after
    churn but a call, and a rating only after a completed session."""
    frame = simulate(250, 40, seed=seed, start=START, progress=False).frame
    for _, events in frame.groupby("customer_id", sort=False):
        types = events["type"].tolist()
        assert types[0] == "customer_signed_up"
        completed = events[events["type"] == "session_completed"]
        if len(completed):
            assert completed["first_session"].tolist() == [True] + [False] * (len(completed) - 1)
        if "customer_churned" in types:
            assert set(types[types.index("customer_churned") + 1 :]) <= {"ib_call"}
        if "session_rated" in types:
            assert types.index("session_completed") < types.index("session_rated")


def test_truth_agrees_with_outcomes_day_by_day(sim: Simulation) -> None:
    truth = sim.truth
    assert truth.health.shape == (200, 60)
    for outcome in sim.outcomes:
        signed = _utc(outcome["signed_up_at"])
        churned = _utc(outcome["churned_at"]) if outcome["churned_at"] else None
        for d in range(60):
            end = START + timedelta(days=d + 1)
            point = truth.at(outcome["customer_id"], d)
            if signed >= end:
                assert point.segment is None and point.health is None
            elif churned is not None and churned < end:
                assert point.segment == "churned" and point.health is None and point.churn_prob_30d is None
            else:
                assert point.segment in SEGMENTS[:3]
                assert 0 <= point.health <= 100
                assert 0 <= point.churn_prob_14d <= point.churn_prob_30d <= 1
                expected = (
                    "thriving" if point.health >= 80 else "healthy" if point.health >= 60 else "at_risk"
                )
                assert point.segment == expected
        assert truth.at(outcome["customer_id"], START.date() + timedelta(days=3)) == truth.at(
            outcome["customer_id"], 3
        )
    assert truth.supply_demand.shape == (60, len(SUBJECTS))
    assert np.isfinite(truth.supply_demand).all() and np.abs(truth.supply_demand).max() <= 5
    assert truth.supply_demand.std(axis=0).min() > 0  # it moves
    with pytest.raises(IndexError):
        truth.at("c-000000", 60)


def test_oracle_tables_match_the_simulated_dynamics() -> None:
    """The true churn probabilities are exact for the chain the simulator runs: check by Monte Carlo."""
    rng = np.random.default_rng(0)
    runs = 12_000
    tables = churn_tables()
    for mu, h0 in ((40, 45), (70, 30), (85, 85)):
        mus, h = np.full(runs, mu), np.full(runs, h0)
        churned_by = np.full(runs, 99)
        for day in range(1, 31):
            h = _step(rng, mus, h, rng.random(runs) < SHOCK_PROB)
            leave = (churned_by == 99) & (rng.random(runs) < hazard(h))
            churned_by[leave] = day
        for horizon in (14, 30):
            empirical = np.mean(churned_by <= horizon)
            assert abs(empirical - tables[horizon][mu, h0]) < 0.02, (mu, h0, horizon)
    assert tables[30][40, 30] > 0.8 > 0.05 > tables[30][85, 85]


def test_true_churn_probability_is_calibrated_on_a_simulation() -> None:
    big = simulate(1500, 41, seed=9, start=START, progress=False)
    churned = np.array(
        [_utc(o["churned_at"]).timestamp() if o["churned_at"] else np.inf for o in big.outcomes]
    )
    day = 10
    active = ~np.isnan(big.truth.churn_prob_30d[:, day])
    end = (START + timedelta(days=day + 1)).timestamp()
    realised = (churned[active] >= end) & (churned[active] < end + 30 * 86_400)
    predicted = big.truth.churn_prob_30d[active, day]
    assert abs(realised.mean() - predicted.mean()) < 0.03
    assert realised[predicted > 0.5].mean() > 0.7 > 0.05 > realised[predicted < 0.05].mean()


def test_behaviour_follows_latent_health(sim: Simulation) -> None:
    """Unhappy customers log in and book less and call more: health is readable from events."""
    day = 40
    end = START + timedelta(days=day + 1)
    recent: dict[str, Counter] = defaultdict(Counter)
    for event in sim.events:
        if end - timedelta(days=14) <= _utc(event["occurred_at"]) < end:
            recent[event["customer_id"]][event["type"]] += 1
    health = sim.truth.health[:, day]
    rows = np.flatnonzero(~np.isnan(health))
    ids = [f"c-{i:06d}" for i in rows]
    logins = np.array([recent[c]["login"] for c in ids])
    booked = np.array([recent[c]["session_booked"] for c in ids])
    calls = np.array([recent[c]["ib_call"] for c in ids])
    assert np.corrcoef(health[rows], logins)[0, 1] > 0.4
    assert np.corrcoef(health[rows], booked)[0, 1] > 0.3
    low, high = health[rows] < 35, health[rows] >= 60
    assert calls[low].mean() > 5 * max(calls[high].mean(), 0.01)


@pytest.mark.parametrize("name", ["sim.jsonl", "sim.jsonl.gz", "sim.parquet"])
def test_written_files_read_back_and_feed_the_worker(sim: Simulation, tmp_path: Path, name: str) -> None:
    paths = write_simulation(sim, tmp_path / name)
    assert paths == {
        "events": tmp_path / name,
        "outcomes": tmp_path / "sim.outcomes.jsonl",
        "truth": tmp_path / "sim.truth.npz",
    }
    parsed = list(read_event_file(paths["events"]))  # the worker's own reader
    assert not [e for _, e in parsed if isinstance(e, EventParseError)]
    assert len(parsed) == len(sim.events)
    outcomes = [json.loads(line) for line in paths["outcomes"].read_text().splitlines()]
    assert outcomes == sim.outcomes
    assert all(set(o) >= {"customer_id", "churned_at"} for o in outcomes)
    back = load_simulation(paths["events"])
    assert back.events == sim.events
    assert (back.start, back.days, back.seed) == (sim.start, sim.days, sim.seed)
    np.testing.assert_array_equal(back.truth.churn_prob_30d, sim.truth.churn_prob_30d)
    np.testing.assert_array_equal(back.truth.supply_demand, sim.truth.supply_demand)


def test_bad_sizes_and_file_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        simulate(0, 10, seed=1)
    with pytest.raises(ValueError, match=r"\.jsonl"):
        write_simulation(simulate(5, 3, seed=1, progress=False), tmp_path / "events.csv")
    with pytest.raises(FileNotFoundError, match="simulate"):
        load_simulation(tmp_path / "missing.jsonl")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="churn-model")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_simulate_command_writes_files_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run" / "events.jsonl.gz"
    args = _parser().parse_args(
        [
            "simulate",
            "--customers",
            "30",
            "--days",
            "20",
            "--seed",
            "3",
            "--out",
            str(out),
            "--start",
            "2026-05-01",
            "--no-progress",
            "--json",
        ]
    )
    assert args.func is run_simulate
    assert run_simulate(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert captured.err == ""  # --no-progress: no bar
    assert summary["customers"] == 30 and summary["start"] == "2026-05-01T00:00:00Z"
    assert summary["events"] == sum(1 for _ in read_event_file(out))
    assert summary["churned"] == sum(1 for o in load_simulation(out).outcomes if o["churned_at"])
    assert all(Path(p).exists() for p in summary["files"].values())
    args.json = False
    run_simulate(args)
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and f"{summary['events']} events" in line and "30 customers" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["--customers", "0", "--days", "5", "--out", "x.jsonl"],
        ["--customers", "ten", "--days", "5", "--out", "x.jsonl"],
        ["--customers", "5", "--days", "5", "--out", "x.csv"],
        ["--customers", "5", "--days", "5", "--out", "x.jsonl", "--start", "2026-03-01T10:00"],
        ["--customers", "5", "--days", "5"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["simulate", *argv])
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err
