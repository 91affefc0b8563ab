"""`churn-model train/evaluate/compare --events --outcomes` end to end on a log from the second
generator (data the model's authors did not shape), the gate refusing a worse candidate, deploy
refusing what failed the gate, and bad input as one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from cli.model import main
from model.altsim import generate, write_log

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def alt_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_log(generate(700, 80, seed=21), tmp_path_factory.mktemp("alt"))


@pytest.fixture(scope="module")
def trained(alt_log: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    code = main(
        [
            "train",
            "--events",
            str(alt_log["events"]),
            "--outcomes",
            str(alt_log["outcomes"]),
            "--out",
            str(out),
            "--epochs",
            "8",
            "--max-train-rows",
            "8000",
            "--quiet",
            "--json",
        ]
    )
    assert code == 0
    return out


@pytest.mark.slow  # trains a small model: ~1-2 minutes on two cores
def test_train_on_a_log_writes_a_calibrated_bundle_with_its_card(trained: Path) -> None:
    metadata = json.loads((trained / "metadata.json").read_text())
    assert (
        metadata["data"]["source"] == "events" and metadata["data"]["log"]["first_session_flag_used"] is False
    )
    assert metadata["calibration"]["churn_risk_30d"]["rows"] > 0  # fitted on the validation period
    evaluation = json.loads((trained / "metrics.json").read_text())["evaluation"]
    assert {"out_of_time_and_customer", "out_of_customer", "validation_period"} <= set(evaluation)
    card = (trained / "MODEL_CARD.md").read_text()
    for fact in (
        "## Data",
        "period:",
        "30-day churn rate",
        "## Labels",
        "censored",
        "Calibration",
        "feature hash",
    ):
        assert fact in card
    assert (trained / "baselines.pkl").exists() and (trained / "training_customers.txt.gz").exists()
    # two members averaged: the earlier-instants network (out of time) and the every-instant one
    members = metadata["training"]["members"]
    assert set(members) == {"earlier_instants", "every_instant"}
    assert members["every_instant"]["fit_rows"] > members["earlier_instants"]["fit_rows"]
    assert set(evaluation["members"]) == set(members) and "### members" in card
    assert "strictly out-of-time" in evaluation["out_of_time_and_customer"]["note"]


@pytest.mark.slow
def test_evaluate_reports_every_head_both_readings_baselines_and_rules(
    trained: Path, alt_log: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code = main(
        [
            "evaluate",
            "--bundle",
            str(trained),
            "--events",
            str(alt_log["events"]),
            "--outcomes",
            str(alt_log["outcomes"]),
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    metrics = {t["metric"] for t in report["targets"]}
    assert {
        "ib_call_spike_precision",
        "ib_call_spike_recall",
        "critical_alert_false_positive_rate",
        "critical_alert_false_share",
        "churn_auc_roc_14d",
        "churn_auc_roc_30d",
        "health_score_mae",
        "inference_latency_p95_ms",
    } == metrics
    assert set(report["heads"]) == {
        "first_session_success",
        "session_velocity",
        "churn_risk_14d",
        "churn_risk_30d",
        "supply_demand",
        "health_score",
    }
    assert set(report["baselines"]["churn_risk_30d"]) == {"logistic", "gbm"}
    assert report["calibration_30d"]["bins"] and report["calibration_30d"]["ece"] is not None
    assert set(report["alerts"]) == {
        "IB_CALL_SPIKE",
        "HIGH_CHURN_RISK",
        "HEALTH_SCORE_CRITICAL",
        "FIRST_SESSION_RISK",
        "SESSION_VELOCITY_DROP",
    }
    assert report["left_out_training_customers"] > 0  # the customers it learnt from are not scored
    assert report["customers"] + report["left_out_training_customers"] <= 700


@pytest.mark.slow
def test_the_gate_refuses_a_worse_candidate_and_deploy_honours_it(
    trained: Path,
    alt_log: dict[str, Path],
    tiny_bundle: Path,
    tmp_path: Path,
    aws_endpoint: str,
    unique_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    worse = tmp_path / "worse"
    shutil.copytree(tiny_bundle, worse)  # 300 random rows, one epoch: no match for a model of the log
    history = ["--events", str(alt_log["events"]), "--outcomes", str(alt_log["outcomes"])]
    assert (
        main(["compare", "--candidate", str(worse), "--incumbent", str(trained), *history, "--rounds", "50"])
        == 1
    )
    assert "FAIL: worse on" in capsys.readouterr().out
    gate = json.loads((worse / "gate.json").read_text())
    assert gate["passed"] is False and gate["failed"]
    assert gate["candidate_version"] == json.loads((worse / "metadata.json").read_text())["model_version"]

    bucket = f"{unique_prefix}models"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
    deploy = [
        "deploy",
        "--bundle",
        str(worse),
        "--bucket",
        bucket,
        "--role-arn",
        ROLE,
        "--endpoint-name",
        f"{unique_prefix}ep",
    ]
    assert main(deploy) == 2
    err = capsys.readouterr().err
    assert "failed the promotion gate" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert main([*deploy, "--force", "--json"]) == 0
    assert "although it failed the promotion gate" in capsys.readouterr().err

    # A candidate no worse than the incumbent passes: the same model under another directory (which of
    # the trained and the random bundle is better calibrated on ~100 held-out customers is chance).
    same = tmp_path / "same"
    shutil.copytree(trained, same)
    assert (
        main(
            [
                "compare",
                "--candidate",
                str(same),
                "--incumbent",
                str(trained),
                *history,
                "--rounds",
                "50",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["passed"] is True


def _events(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _event(cid: str, kind: str, day: int, n: int, **fields: object) -> dict[str, object]:
    return {
        "event_id": f"{cid}-{n}",
        "customer_id": cid,
        "type": kind,
        "occurred_at": f"2026-01-{day:02d}T10:00:00Z",
        **fields,
    }


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown_ids", "never appear in the events"),
        ("before_sign_up", "churned before they signed up"),
        ("empty_log", "the log is empty"),
        ("unreadable", "no such file or directory"),
        ("bad_outcomes", "not an outcome"),
        ("no_outcomes", "--events and --outcomes go together"),
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_2(
    case: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _events(
        tmp_path / "e.jsonl",
        [
            _event("c1", "customer_signed_up", 10, 0, tier="budget"),
            *(_event("c1", "login", d, d) for d in range(11, 31)),
        ],
    )
    outcomes = tmp_path / "o.jsonl"
    rows = {
        "unknown_ids": [{"customer_id": "ghost", "churned_at": None}],
        "before_sign_up": [{"customer_id": "c1", "churned_at": "2026-01-02T00:00:00Z"}],
    }.get(case, [])
    outcomes.write_text("".join(json.dumps(r) + "\n" for r in rows) if case != "bad_outcomes" else "{oops\n")
    events = {
        "empty_log": str(_events(tmp_path / "empty.jsonl", [])),
        "unreadable": str(tmp_path / "nope.jsonl"),
    }.get(case, str(log))
    argv = ["train", "--events", events, "--outcomes", str(outcomes), "--out", str(tmp_path / "b"), "--quiet"]
    if case == "no_outcomes":
        argv = ["evaluate", "--bundle", str(tmp_path), "--events", events]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_an_s3_prefix_is_an_event_path(aws_endpoint: str, unique_prefix: str) -> None:
    """`s3://bucket/prefix/` lists the event objects (moto over HTTP) and reads them like files."""
    import gzip

    from features.eventfile import event_sources, read_events

    s3 = boto3.client("s3", region_name="us-east-1")
    bucket = f"{unique_prefix}archive"
    s3.create_bucket(Bucket=bucket)
    for day, n in (("2026-01-02", 2), ("2026-01-01", 1)):
        body = "".join(
            json.dumps(_event("c1", "login", int(day[-2:]), i + 10 * int(day[-2:]))) + "\n" for i in range(n)
        )
        s3.put_object(
            Bucket=bucket, Key=f"events/date={day}/part.jsonl.gz", Body=gzip.compress(body.encode())
        )
    s3.put_object(Bucket=bucket, Key="events/sim.outcomes.jsonl", Body=b"{}\n")
    sources = event_sources(f"s3://{bucket}/events/")
    assert [s.name for s in sources] == [
        f"s3://{bucket}/events/date=2026-01-01/part.jsonl.gz",
        f"s3://{bucket}/events/date=2026-01-02/part.jsonl.gz",
    ]
    assert [r.item.event_id for r in read_events(sources)] == ["c1-10", "c1-20", "c1-21"]  # type: ignore[union-attr]


@pytest.mark.slow  # starts a local Dask cluster of two processes
def test_examples_on_two_dask_workers_are_the_examples_built_in_process(alt_log: dict[str, Path]) -> None:
    import numpy as np

    from model.owndata import BuildOptions, build_examples

    def build(workers: int) -> object:
        options = BuildOptions(mode="evaluation", shards=4, workers=workers)
        return build_examples(str(alt_log["events"]), alt_log["outcomes"], options, say=lambda m: None)[0]

    here, there = build(1), build(2)
    a, b = np.lexsort((here.t_us, here.customer)), np.lexsort((there.t_us, there.customer))  # type: ignore[attr-defined]
    np.testing.assert_array_equal(here.x[a], there.x[b])  # type: ignore[attr-defined]
    np.testing.assert_array_equal(here.y["health_score"][a], there.y["health_score"][b])  # type: ignore[attr-defined]
