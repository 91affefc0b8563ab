"""Threshold sweeps: the cooldown maths against the real ledger, the sweep against the backtest it
replaces, and the written config against the worker's settings loader."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.churn_outcomes import load_outcomes
from features.state import from_us
from jobs.backtest.report import alert_arrays, population
from jobs.backtest.runner import BacktestOptions, BacktestResult, run_backtest
from jobs.backtest.source import HOUR_US
from jobs.tuning import (
    TRIGGERS,
    Candidate,
    RuleResult,
    TuneTargets,
    apply_cooldown,
    candidates,
    config_text,
    evaluate,
    sweep,
)
from model.simulator import simulate, write_simulation
from tests.fakes import FeatureScorer
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import ClaimStatus, MemoryAlertLedger
from worker.alerts.rules import Alert, AlertType
from worker.settings import load_settings

T0 = 1_800_000_000_000_000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40 * 24)), max_size=60),
    st.sampled_from([24, 72, 168]),
)
def test_cooldown_picks_what_the_ledger_lets_through(rows: list[tuple[int, int]], hours: int) -> None:
    """Any triggering instants, in any order: the same alerts as MemoryAlertLedger's claims."""
    customer = np.array([c for c, _ in rows], dtype=np.int64)
    t_us = np.array([T0 + h * HOUR_US for _, h in rows], dtype=np.int64)
    got = apply_cooldown(customer, t_us, hours * HOUR_US)

    async def ledger_says() -> set[tuple[int, int]]:
        ledger, sent = MemoryAlertLedger(), set()
        for c, t in sorted(zip(customer.tolist(), t_us.tolist(), strict=True), key=lambda r: (r[1], r[0])):
            at = from_us(t)
            alert = Alert(alert_type=AlertType.IB_CALL_SPIKE, customer_id=f"c{c}", as_of=at, message="m")
            claim = await ledger.claim(alert, at, timedelta(hours=hours))
            if claim.status is ClaimStatus.NEW:
                await ledger.mark_sent(claim.alert)
                sent.add((c, t))
        return sent

    assert set(zip(got[0].tolist(), got[1].tolist(), strict=True)) == asyncio.run(ledger_says())
    assert len(got[0]) == len(set(zip(got[0].tolist(), got[1].tolist(), strict=True)))


@pytest.fixture(scope="module")
def backtested(tmp_path_factory: pytest.TempPathFactory) -> tuple[BacktestResult, Any]:
    paths = write_simulation(
        simulate(customers=60, days=30, seed=4), tmp_path_factory.mktemp("sim") / "sim.jsonl"
    )
    out = tmp_path_factory.mktemp("out") / "alerts.jsonl"
    options = BacktestOptions(window_us=6 * HOUR_US, progress=False)
    result = asyncio.run(run_backtest(paths["events"], FeatureScorer(), out, options))
    return result, load_outcomes(paths["outcomes"])


def test_the_sweep_at_the_backtested_thresholds_reproduces_the_backtest(
    backtested: tuple[BacktestResult, Any],
) -> None:
    result, outcomes = backtested
    base = AlertsConfig()
    columns, pop = result.log.columns(), population(result, outcomes)
    seen = 0
    for rule in candidates():
        params = {
            name: float(value)
            for name, value in base.rule(rule).model_dump().items()
            if name in candidates()[rule][0].params
        }
        mask = TRIGGERS[rule](columns, params, base)
        cooldown = int(base.rule(rule).cooldown.total_seconds() * 1e6)
        customer, t = apply_cooldown(columns["customer"][mask], columns["t_us"][mask], cooldown)
        expected_customer, expected_t = alert_arrays(result, rule.upper())
        assert sorted(zip(customer.tolist(), t.tolist(), strict=True)) == sorted(
            zip(expected_customer.tolist(), expected_t.tolist(), strict=True)
        ), rule
        assert evaluate(columns, pop, base, Candidate(rule, params, "base"))["alerts"] == len(expected_t)
        seen += len(expected_t)
    assert seen == len(result.alerts.types) > 0


def test_sweep_chooses_the_best_recall_that_meets_the_targets(backtested: tuple[BacktestResult, Any]) -> None:
    result, outcomes = backtested
    targets = TuneTargets(precision=0.2, max_fpr=0.5, min_alerted=2)
    results = sweep(result.log.columns(), population(result, outcomes), AlertsConfig(), targets)
    assert [r.rule for r in results] == list(candidates())
    for r in results:
        qualified = [s for _, s in r.rows if targets.met(s)]
        if r.chosen is None:
            assert not qualified
        else:
            chosen = next(s for c, s in r.rows if c is r.chosen)
            assert chosen["recall"] == max(s["recall"] for s in qualified)
    impossible = sweep(
        result.log.columns(), population(result, outcomes), AlertsConfig(), TuneTargets(1.0, 0.0, 10**6)
    )
    assert not any(r.enabled for r in impossible)


def test_the_written_config_loads_as_written(tmp_path: Path) -> None:
    base = AlertsConfig.model_validate({"ib_call_spike": {"cooldown_hours": 24}})
    chosen = RuleResult(
        "ib_call_spike", chosen=Candidate("ib_call_spike", {"min_calls_14d": 3.0}, "calls >= 3")
    )
    velocity = RuleResult(
        "session_velocity_drop",
        chosen=Candidate(
            "session_velocity_drop", {"max_predicted_velocity": 0.5, "min_session_frequency_30d": 1.5}, "v"
        ),
    )
    disabled = RuleResult("health_score_critical")
    text = config_text(
        [chosen, velocity, disabled],
        base,
        {"table_prefix": "prod-", "retention_days": 40},
        ["a header", 'with "quotes"'],
    )
    path = tmp_path / "tuned.toml"
    path.write_text(text)
    loaded = load_settings(path)
    assert loaded.table_prefix == "prod-" and loaded.retention_days == 40
    assert loaded.alerts.ib_call_spike.min_calls_14d == 3 and loaded.alerts.ib_call_spike.cooldown_hours == 24
    assert loaded.alerts.session_velocity_drop.max_predicted_velocity == 0.5
    assert loaded.alerts.health_score_critical.enabled is False
    assert (
        loaded.alerts.high_churn_risk == AlertsConfig().high_churn_risk
    )  # rules not in the sweep: as they were


def test_candidates_are_all_valid_configs() -> None:
    for rule, options in candidates().items():
        for candidate in options:
            AlertsConfig.model_validate({rule: candidate.params})
