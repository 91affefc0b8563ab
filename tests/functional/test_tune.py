"""`churn-worker tune`: the sweep on stdout, a plot next to the config, and a config file that
`config validate`, the settings loader and `backtest --config` take as written.

The model is not the point here: a fake in-process scorer whose predictions follow the features
stands in for the bundle (no TensorFlow), so every rule has thresholds worth sweeping.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.worker import main
from jobs.backtest.scorer import InProcessScorer
from model.simulator import simulate, write_simulation
from tests.fakes import FeatureScorer
from worker.settings import load_settings


@pytest.fixture(autouse=True)
def fake_model(monkeypatch: pytest.MonkeyPatch, tiny_bundle: Path) -> None:
    monkeypatch.setattr(InProcessScorer, "from_bundle_dir", classmethod(lambda cls, path: FeatureScorer()))
    # A fresh cache of loaded bundles: the fake must not stay cached as tiny_bundle's model for later tests.
    monkeypatch.setattr("jobs.backtest.scorer._LOADED", {})
    # No default bundle either: training it takes minutes on a fresh machine, and the fake scores.
    monkeypatch.setattr("cli.commands.backtest.bundle_dir_or_default", lambda bundle: bundle or tiny_bundle)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_simulation(
        simulate(customers=120, days=45, seed=12), tmp_path_factory.mktemp("sim") / "sim.jsonl"
    )


def test_tune_writes_a_config_the_worker_accepts_as_it_is(
    sim: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "base.toml"
    base.write_text('table_prefix = "prod-"\n\n[alerts.high_churn_risk]\ncooldown_hours = 24\n')
    out = tmp_path / "tuned" / "alerts.toml"
    code = main(
        [
            "tune",
            str(sim["events"]),
            "--outcomes",
            str(sim["outcomes"]),
            "--out",
            str(out),
            "--config",
            str(base),
            "--target-precision",
            "0.3",
            "--max-fpr",
            "0.3",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "[alerts.ib_call_spike]" in printed and "calls14 >= 2" in printed and "<- chosen" in printed
    assert f"wrote {out}" in printed

    assert main(["config", "validate", str(out)]) == 0
    assert f"{out}: valid" in capsys.readouterr().out
    settings = load_settings(out)
    assert settings.table_prefix == "prod-"  # the base file's other settings are carried over
    assert settings.alerts.high_churn_risk.cooldown_hours == 24  # ... and its cooldowns
    text = out.read_text()
    for rule in (
        "ib_call_spike",
        "high_churn_risk",
        "health_score_critical",
        "first_session_risk",
        "session_velocity_drop",
    ):
        assert f"[alerts.{rule}]" in text
    plot = out.with_suffix(".html").read_text()
    assert plot.count("<svg") == 5 and "alerts / 1k / week" in plot

    report_dir = tmp_path / "report"
    assert (
        main(
            [
                "backtest",
                str(sim["events"]),
                "--outcomes",
                str(sim["outcomes"]),
                "--config",
                str(out),
                "--out",
                str(report_dir),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["alerts"] >= 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["config"] == settings.alerts.model_dump(mode="json")  # the backtest ran with the tuned file


def test_tune_disables_a_rule_no_threshold_can_satisfy(
    sim: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "strict.toml"
    assert (
        main(
            [
                "tune",
                str(sim["events"]),
                "--outcomes",
                str(sim["outcomes"]),
                "--out",
                str(out),
                "--target-precision",
                "1",
                "--max-fpr",
                "0.0001",
                "--min-alerted",
                "1000",
                "--json",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert not any(rule["enabled"] for rule in result["rules"].values())
    alerts = load_settings(out).alerts
    assert not any(alerts.rule(name).enabled for name in result["rules"])


def test_tune_needs_outcomes_and_a_toml_name(
    sim: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:  # argparse: --outcomes is required
        main(["tune", str(sim["events"]), "--out", str(tmp_path / "x.toml")])
    assert refused.value.code == 2
    assert (
        main(
            [
                "tune",
                str(sim["events"]),
                "--outcomes",
                str(sim["outcomes"]),
                "--out",
                str(tmp_path / "x.yaml"),
            ]
        )
        == 2
    )
    assert "name it *.toml" in capsys.readouterr().err


def test_tune_carries_over_the_file_churn_config_names(
    sim: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --config, the file in force is CHURN_CONFIG's (the deployed tasks' object): tune
    keeps its other settings, so the file it writes can replace that one as it is."""
    base = tmp_path / "in-force.toml"
    base.write_text('table_prefix = "prod-"\n')
    monkeypatch.setenv("CHURN_CONFIG", str(base))
    out = tmp_path / "tuned.toml"
    argv = ["tune", str(sim["events"]), "--outcomes", str(sim["outcomes"]), "--out", str(out), "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    monkeypatch.delenv("CHURN_CONFIG")
    assert load_settings(out).table_prefix == "prod-"
