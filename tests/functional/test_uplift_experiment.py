"""The A/B holdout end to end on simulated history: the backtest assigns every alert its arm as the
live worker does, and `churn-worker uplift` finds no effect where there is none and recovers a
treatment effect injected into the outcomes (a share of the treated churners do not churn) within
its confidence interval."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cli.worker import main
from features.state import parse_iso_us as _us
from jobs.backtest.runner import BacktestOptions, run_backtest
from jobs.uplift import DAY_US, AlertRow, outcome
from model.simulator import simulate, write_simulation
from tests.fakes import FeatureScorer
from worker.alerts.experiment import ExperimentConfig, assign_arm

pytestmark = pytest.mark.slow

EXPERIMENT = ExperimentConfig(control_fraction=0.5, salt="uplift-test")
TYPE = "IB_CALL_SPIKE"  # rules-only and precise: enough churners per arm in a small simulation
SHARE_SAVED = 0.5  # of the treated churners, this share does not churn: the injected effect


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("uplift")
    paths = write_simulation(simulate(customers=600, days=60, seed=12), out / "sim.jsonl")
    alerts = out / "alerts.jsonl"
    options = BacktestOptions(progress=False, experiment=EXPERIMENT)
    asyncio.run(run_backtest(paths["events"], FeatureScorer(), alerts, options))
    return {**paths, "alerts": alerts, "dir": out}


def bodies(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def uplift_report(
    history: dict[str, Path], outcomes: Path, end: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    capsys.readouterr()
    assert (
        main(
            [
                "uplift",
                "--outcomes",
                str(outcomes),
                "--alerts",
                str(history["alerts"]),
                "--end",
                end,
                "--json",
            ]
        )
        == 0
    )
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_the_backtest_gives_every_alert_the_arm_the_live_worker_would(history: dict[str, Path]) -> None:
    alerts = bodies(history["alerts"])
    assert alerts and all(b["arm"] == assign_arm(b["customer_id"], b["type"], EXPERIMENT) for b in alerts)
    pairs = {(b["customer_id"], b["type"]): b["arm"] for b in alerts}
    arms = Counter(pairs.values())
    assert 0.4 < arms["control"] / len(pairs) < 0.6  # about half the (customer, type) pairs held out


def test_uplift_finds_no_effect_then_recovers_an_injected_one(
    history: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = [json.loads(line) for line in history["outcomes"].read_text().splitlines()]
    churned_us = {o["customer_id"]: _us(o["churned_at"]) for o in outcomes if o["churned_at"]}
    end = max(b["as_of"] for b in bodies(history["alerts"]))
    before = uplift_report(history, history["outcomes"], end, capsys)["by_type"][TYPE]
    assert before["ci_low"] <= 0 <= before["ci_high"]  # no intervention happened: no effect found

    # The treated churners of TYPE's pairs: every other one (in id order) is saved by the intervention.
    first: dict[str, dict[str, Any]] = {}
    for body in bodies(history["alerts"]):
        if body["type"] == TYPE and body["customer_id"] not in first:
            first[body["customer_id"]] = body
    results = {
        c: outcome(AlertRow(c, TYPE, _us(b["as_of"]), b["arm"]), churned_us.get(c), _us(end), 30)
        for c, b in first.items()
        if b["arm"] == "treatment"
    }
    treated = [c for c, result in results.items() if result is not None]  # not censored
    # (only churners whose 30 days end inside the data: saved, they count as stayed, not as censored)
    churners = sorted(
        c for c, result in results.items() if result and _us(first[c]["as_of"]) + 30 * DAY_US <= _us(end)
    )
    saved = set(churners[:: int(1 / SHARE_SAVED)])
    injected = -len(saved) / len(treated)  # the true effect on the treatment arm's churn rate
    changed = tmp_path / "treated.outcomes.jsonl"
    changed.write_text(
        "".join(
            json.dumps({**o, "churned_at": None if o["customer_id"] in saved else o["churned_at"]}) + "\n"
            for o in outcomes
        )
    )

    after = uplift_report(history, changed, end, capsys)["by_type"][TYPE]
    assert after["treatment"]["pairs"] == len(treated) and after["control"] == before["control"]
    assert after["difference"] == pytest.approx(before["difference"] + injected)  # measured exactly
    assert after["ci_low"] <= injected <= after["ci_high"]  # the effect, recovered within the 95 % CI
    assert after["ci_high"] < 0 and after["p_value"] < 0.05  # and told apart from no effect
    capsys.readouterr()
    assert main(["uplift", "--outcomes", str(changed), "--alerts", str(history["alerts"]), "--end", end]) == 0
    assert f"{TYPE}" in capsys.readouterr().out
