"""`churn-worker tune` per segment and under a budget: per-tier thresholds where a tier has enough
outcomes, the global ones elsewhere (said so in the table and in the file), and `--max-per-day`.

A hand-made history where the tiers differ: premium customers who call once churn (and premium
customers who stay never call); budget customers who stay call once and those who churn call three
times. So one call is the best threshold for premium, two for budget and for everyone together, and
the standard tier has too few customers to judge.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.worker import main
from jobs.backtest.scorer import InProcessScorer
from tests.fakes import FeatureScorer
from worker.settings import load_settings

START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    monkeypatch.setattr(InProcessScorer, "from_bundle_dir", classmethod(lambda cls, path: FeatureScorer()))
    monkeypatch.setattr("jobs.backtest.scorer._LOADED", {})
    monkeypatch.setattr("cli.commands.backtest.bundle_dir_or_default", lambda bundle: bundle or tiny_bundle)


def _event(cid: str, n: int, kind: str, day: float, **fields: Any) -> dict[str, Any]:
    when = (START + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"event_id": f"{cid}-{n}", "customer_id": cid, "type": kind, "occurred_at": when, **fields}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    events: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    groups = [  # (tier, customers, calls, churns)
        ("premium", 30, 1, True),
        ("premium", 30, 0, False),
        ("budget", 30, 3, True),
        ("budget", 30, 1, False),
        ("standard", 4, 2, True),
        ("standard", 4, 0, False),
    ]
    for g, (tier, count, calls, churns) in enumerate(groups):
        for i in range(count):
            cid = f"{tier[0]}{g}-{i:02d}"
            events.append(_event(cid, 0, "customer_signed_up", 0.1 * (i % 5), tier=tier))
            events += [
                _event(cid, 1 + k, "ib_call", 10 + 0.1 * k, sentiment="negative") for k in range(calls)
            ]
            if churns:
                events.append(_event(cid, 9, "customer_churned", 14))
                outcomes.append({"customer_id": cid, "churned_at": (START + timedelta(days=14)).isoformat()})
            else:
                events.append(_event(cid, 9, "login", 45))  # the data runs 30 days past the alerts
                outcomes.append({"customer_id": cid, "churned_at": None})
    events.sort(key=lambda e: e["occurred_at"])
    root = tmp_path_factory.mktemp("segments")
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (root / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes))
    return {"events": root / "events.jsonl", "outcomes": root / "outcomes.jsonl"}


def tune(history: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "tune",
        str(history["events"]),
        "--outcomes",
        str(history["outcomes"]),
        "--out",
        str(out),
        "--max-fpr",
        "0.3",
        "--min-segment-outcomes",
        "20",
        *extra,
    ]


def test_tune_proposes_per_tier_thresholds_where_a_tier_has_enough_outcomes(
    history: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned.toml"
    assert main(tune(history, out, "--target-precision", "0.75")) == 0
    printed = capsys.readouterr().out
    assert "by_tier.premium: chosen calls14 >= 1 on its own customers" in printed
    assert "by_tier.budget: chose the global threshold (calls14 >= 2)" in printed
    assert "by_tier.standard: too few outcomes (4 churned, 4 stayed; 20 of each needed)" in printed

    text = out.read_text()
    assert "[alerts.ib_call_spike.by_tier.premium]" in text
    assert "[alerts.ib_call_spike.by_tier.budget]" not in text  # the same as the global one: no table
    assert (
        "# by_tier.standard: too few outcomes (4 churned, 4 stayed; 20 of each needed): the global thresholds apply"
        in text
    )
    spike = load_settings(out).alerts.ib_call_spike
    assert spike.min_calls_14d == 2
    assert spike.for_tier("premium").min_calls_14d == 1
    assert spike.for_tier("budget").min_calls_14d == 2
    assert spike.for_tier("standard").min_calls_14d == 2
    assert spike.for_tier(None).min_calls_14d == 2
    assert main(["config", "validate", str(out)]) == 0


def test_tune_json_names_each_tiers_choice_and_the_backtest_routes_by_tier(
    history: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tuned.toml"
    assert main(tune(history, out, "--target-precision", "0.75", "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    tiers = result["rules"]["ib_call_spike"]["tiers"]
    assert tiers["premium"]["own_thresholds"] and tiers["premium"]["chosen"] == {"min_calls_14d": 1}
    assert tiers["budget"]["chosen"] == {"min_calls_14d": 2}
    assert not tiers["standard"]["own_thresholds"]
    assert result["rules"]["ib_call_spike"]["by_tier"] == {"premium": {"min_calls_14d": 1, "enabled": True}}

    # The backtest with the tuned file alerts premium customers at one call, the others at two.
    report_dir = tmp_path / "report"
    assert (
        main(["backtest", str(history["events"]), "--config", str(out), "--out", str(report_dir), "--json"])
        == 0
    )
    capsys.readouterr()
    spikes = [
        json.loads(line)
        for line in (report_dir / "alerts.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "IB_CALL_SPIKE"
    ]
    alerted = {b["customer_id"] for b in spikes}
    assert {cid for cid in alerted if cid.startswith("p")} == {f"p0-{i:02d}" for i in range(30)}
    assert {cid for cid in alerted if cid.startswith("b")} == {f"b2-{i:02d}" for i in range(30)}  # not b3-*


def test_tune_chooses_under_a_budget_and_reports_alerts_per_day_against_it(
    history: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.toml"
    base.write_text('[budgets.callcenter]\ntypes = ["IB_CALL_SPIKE"]\nmax_per_day = 2\n')
    free = tmp_path / "free.toml"
    assert (
        main(
            tune(
                history,
                free,
                "--target-precision",
                "0.5",
                "--max-fpr",
                "0.5",
                "--config",
                str(base),
                "--json",
            )
        )
        == 0
    )
    unbounded = json.loads(capsys.readouterr().out)
    assert unbounded["rules"]["ib_call_spike"]["chosen"] == {
        "min_calls_14d": 1
    }  # best recall: everyone who called
    assert unbounded["budgets"]["callcenter"]["busiest_day"] > 2

    bounded = tmp_path / "bounded.toml"
    assert (
        main(
            tune(
                history,
                bounded,
                "--target-precision",
                "0.5",
                "--max-fpr",
                "0.5",
                "--config",
                str(base),
                "--max-per-day",
                "2",
            )
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "alerts per day against each budget, with the chosen thresholds" in printed
    assert "callcenter" in printed
    settings = load_settings(bounded)
    assert settings.alerts.ib_call_spike.min_calls_14d == 2  # one call a customer sends more than 2 a day
    assert settings.budgets.budget_for("IB_CALL_SPIKE", "premium") is not None  # the budget is carried over
    assert "at most 2 alerts a day" in bounded.read_text()


def test_tune_refuses_a_log_too_short_to_judge_any_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 20 days of events (21 calendar days): no alert has 30 days of data after it, so no precision can be read and
    # every rule would be disabled; tune says so (exit 2) instead of writing that config
    events = [
        _event("a", 0, "customer_signed_up", 0, tier="budget"),
        _event("a", 1, "ib_call", 5, sentiment="negative"),
    ]
    events += [_event("a", 2, "ib_call", 6, sentiment="negative"), _event("a", 3, "login", 20)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (tmp_path / "outcomes.jsonl").write_text(json.dumps({"customer_id": "a", "churned_at": None}) + "\n")
    short = {"events": tmp_path / "events.jsonl", "outcomes": tmp_path / "outcomes.jsonl"}
    out = tmp_path / "tuned.toml"
    assert main(tune(short, out)) == 2
    err = capsys.readouterr().err
    assert "the events span 21 days" in err and "more than 30 days of events" in err
    assert not out.exists()
