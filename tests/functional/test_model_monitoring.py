"""Watching the model in production, on moto's S3: a pipeline serves a simulated log and writes its
served-feature sample beside the event archive; `churn-model skew` finds nothing on the clean run
and finds a late event and a changed feature definition when they are planted; a log from a
structurally different population (model/altsim.py) drives `churn-model drift`'s published PSI
above the threshold for days on end, and the ModelDrift alarm's metric math (evaluated here: moto
has no alarm evaluation) goes to ALARM; `churn-model monitor` writes its page."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from aiobotocore.session import get_session

from cli.model import main as churn_model
from features.registry import FEATURE_INDEX, FEATURE_NAMES
from features.store import MemoryFeatureStore
from jobs.monitoring import skew as skew_job
from jobs.monitoring.served import read_served
from model.drift import HEADS, load_distribution, training_distribution, write_distribution
from tests.fakes import FeatureScorer, ListDlq
from tests.fakes import record as fake_record
from tests.infra_policy import load
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.archive import S3EventArchive
from worker.pipeline import Pipeline
from worker.served_log import S3ServedWriter, ServedLog, served_uri

WINDOW = timedelta(hours=6)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _batches(
    events: Sequence[dict[str, Any]], late: dict[str, timedelta]
) -> list[tuple[datetime, list[dict]]]:
    """Events cut into 6-hour windows by arrival (occurrence, plus a delay for `late` event ids)."""
    grouped: dict[datetime, list[dict[str, Any]]] = {}
    for e in events:
        arrives = _at(e["occurred_at"]) + late.get(e["event_id"], timedelta(0))
        epoch = datetime(2020, 1, 1, tzinfo=UTC)
        end = epoch + ((arrives - epoch) // WINDOW + 1) * WINDOW - timedelta(microseconds=1)
        grouped.setdefault(end, []).append(e)
    return sorted(grouped.items(), key=lambda item: item[0])


async def _serve(
    events: Sequence[dict[str, Any]], bucket: str, late: dict[str, timedelta] | None = None
) -> None:
    """A worker's pipeline over the log: events archived to s3://bucket/events/, every scored row
    sampled (rate 1) to s3://bucket/served/."""
    now = [datetime(2020, 1, 1, tzinfo=UTC)]
    async with get_session().create_client("s3", region_name="us-east-1") as s3:
        pipeline = Pipeline(
            store=MemoryFeatureStore(),
            scorer=FeatureScorer(),
            ledger=MemoryAlertLedger(),
            publisher=MemoryAlertPublisher(),
            dlq=ListDlq(),
            alerts=AlertsConfig(),
            retention=timedelta(days=35),
            clock=lambda: now[0],
            archive=S3EventArchive(s3, f"s3://{bucket}/events/", "w1"),
        )
        pipeline.served_log = ServedLog(
            S3ServedWriter(s3, served_uri(f"s3://{bucket}/events/"), "w1"), 1.0, flush_records=300
        )
        for n, (end, batch) in enumerate(_batches(events, late or {})):
            now[0] = end
            settlement = await pipeline.process(
                [fake_record(e, n * 100_000 + i) for i, e in enumerate(batch)]
            )
            assert not settlement.failed
            await asyncio.sleep(0)  # let a background flush run, as the worker's loop would
        await pipeline.served_log.close()


@pytest.fixture(scope="module")
def simulated() -> list[dict[str, Any]]:
    from model.simulator import simulate

    return simulate(customers=25, days=16, seed=11).events


def _bucket(s3: Any, name: str) -> str:
    s3.create_bucket(Bucket=name)
    return name


def _run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = churn_model(argv)
    return code, out.getvalue()


def test_the_pipeline_samples_what_it_scored_and_skew_finds_nothing_on_the_clean_run(
    aws_endpoint: str, unique_prefix: str, simulated: list[dict[str, Any]], tmp_path: Path
) -> None:
    bucket = _bucket(boto3.client("s3", region_name="us-east-1"), f"{unique_prefix}clean")
    asyncio.run(_serve(simulated, bucket))
    rows = list(read_served(f"s3://{bucket}/served/"))
    assert len(rows) > 100
    first = rows[0]
    assert first.model_version == "fake-1" and len(first.features) == len(FEATURE_NAMES)
    assert set(first.outputs) == set(HEADS)
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="served/")["Contents"]]
    assert all(k.startswith("served/date=") and k.endswith(".jsonl.gz") for k in keys)

    code, out = _run(
        [
            "skew",
            "--since",
            "2026-01-01",
            "--archive",
            f"s3://{bucket}/events/",
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 0, out
    assert "no feature differs" in out
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["rows"] == len([r for r in rows if r.day >= "2026-01-01"]) and report["features"] == []


def test_skew_reports_an_event_the_live_path_saw_late(
    aws_endpoint: str, unique_prefix: str, simulated: list[dict[str, Any]], tmp_path: Path
) -> None:
    completed = [e for e in simulated if e["type"] == "session_completed" and e["occurred_at"] > "2026-01-05"]
    late = {completed[0]["event_id"]: timedelta(days=2)}  # archived two days after it happened
    bucket = _bucket(boto3.client("s3", region_name="us-east-1"), f"{unique_prefix}late")
    asyncio.run(_serve(simulated, bucket, late))

    code, out = _run(
        [
            "skew",
            "--since",
            "2026-01-01",
            "--archive",
            f"s3://{bucket}/events/",
            "--max-share",
            "0",
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 1, out
    skewed = {f["name"]: f for f in json.loads((tmp_path / "s.json").read_text())["features"]}
    assert "session_count_7d" in skewed, out
    example = skewed["session_count_7d"]["examples"][0]
    assert example["customer_id"] == completed[0]["customer_id"]
    assert example["offline"] == example["served"] + 1  # the session the live path had not seen yet
    # With the default share (1% of rows per feature) one late event is tolerated.
    assert _run(["skew", "--since", "2026-01-01", "--archive", f"s3://{bucket}/events/"])[0] == 0


def test_skew_reports_a_changed_feature_definition(
    aws_endpoint: str, unique_prefix: str, simulated: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = _bucket(boto3.client("s3", region_name="us-east-1"), f"{unique_prefix}def")
    asyncio.run(_serve(simulated, bucket))
    original = skew_job.compute_features_batch
    column = FEATURE_INDEX["ib_call_count_7d"]

    def changed(states: Any, as_of: datetime) -> np.ndarray:  # the offline code counts calls differently
        out = original(states, as_of)
        out[:, column] += 1.0
        return out

    monkeypatch.setattr(skew_job, "compute_features_batch", changed)
    code, out = _run(["skew", "--since", "2026-01-01", "--archive", f"s3://{bucket}/events/"])
    assert code == 1
    lines = [line.split() for line in out.splitlines() if line.startswith("  ib_call_count_7d")]
    assert lines and lines[0][2] == "100.00%" and float(lines[0][3]) == 1.0, out
    assert "session_count_7d" not in out


def _alarm_state(template: dict[str, Any], daily_max_psi: list[float], threshold: float) -> str:
    """Evaluate the ModelDrift alarm's metric math the way CloudWatch would over daily datapoints,
    with the stack's DriftPsiThreshold."""
    alarm = template["Resources"]["ModelDrift"]["Properties"]
    days = int(template["Parameters"]["DriftAlarmDays"]["Default"])
    (expression,) = [m for m in alarm["Metrics"] if "Expression" in m]
    text = expression["Expression"]
    text = text.get("Fn::Sub", text) if isinstance(text, dict) else text
    assert text.replace(" ", "") == "IF(m1>${DriftPsiThreshold},1,0)"
    breaching = [1.0 if value > threshold else 0.0 for value in daily_max_psi]
    recent = breaching[-days:]
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    return "ALARM" if len(recent) == days and all(v >= 1 for v in recent) else "OK"


def test_a_shifted_population_raises_drift_above_the_alarm(
    aws_endpoint: str,
    unique_prefix: str,
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    from model.altsim import generate
    from model.simulator import simulate

    # 38 days: the simulated log shows no history before its start, so its 30-day windows fill up
    # over the first month; from then on the population is stationary.
    simulated = simulate(customers=50, days=38, seed=11).events

    assert load_distribution(tiny_bundle) is not None  # training writes it into every bundle
    s3 = boto3.client("s3", region_name="us-east-1")
    clean = _bucket(s3, f"{unique_prefix}ref")
    asyncio.run(_serve(simulated, clean))
    # The reference: the clean population's own served rows, written as a bundle's training distribution.
    reference = list(read_served(f"s3://{clean}/served/", "2026-02-01"))
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    x = np.stack([r.features for r in reference])
    write_distribution(
        bundle, training_distribution(x, {h: np.array([r.outputs[h] for r in reference]) for h in HEADS})
    )

    shifted = _bucket(s3, f"{unique_prefix}alt")
    alt = generate(customers=50, days=11, seed=5, start=datetime(2026, 1, 28, tzinfo=UTC))
    asyncio.run(_serve(alt.events, shifted))

    template = load("alarms.yaml")
    states = {}
    for name, bucket in (("clean", clean), ("shifted", shifted)):
        code, out = _run(
            [
                "drift",
                "--since",
                "2026-02-01",
                "--served",
                f"s3://{bucket}/served/",
                "--bundle",
                str(bundle),
                "--emf",
                "--min-rows",
                "10",
                "--table-prefix",
                "t-",
            ]
        )
        assert code == 0
        lines = [json.loads(line) for line in out.splitlines()]
        daily = [line["DriftMaxPSI"] for line in lines if "DriftMaxPSI" in line]
        assert daily and all(line["TablePrefix"] == "t-" for line in lines)
        assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ChurnAlerts" for line in lines)
        # 50 simulated customers give ~60 rows a day: the largest of 150 features' PSI carries about
        # 1 of sampling noise at that size, so this stack sets DriftPsiThreshold 2 (the default,
        # 0.25, is for a production sample of hundreds of rows a day or more: --min-rows 200).
        states[name] = (_alarm_state(template, daily, 2.0), daily)
    assert states["shifted"][0] == "ALARM", states
    assert states["clean"][0] == "OK", states
    assert min(states["shifted"][1]) > max(states["clean"][1])

    page = tmp_path / "monitor.html"
    code, out = _run(
        [
            "monitor",
            "--since",
            "2026-02-01",
            "--archive",
            f"s3://{shifted}/events/",
            "--bundle",
            str(bundle),
            "--min-rows",
            "10",
            "--html",
            str(page),
        ]
    )
    assert code == 0, out
    text = page.read_text()
    assert "<svg" in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    for heading in (
        "Drift per feature and head",
        "Score distributions",
        "Calibration",
        "Training/serving skew",
    ):
        assert heading in text
    assert "calibration" in out and "skew:" in out and "drift (PSI" in out

    # The clean log over its whole period: rows whose 14 days have passed are settled, so the page
    # has calibration bins (churn from the archive's customer_churned events).
    clean_page = tmp_path / "clean.html"
    code, out = _run(
        [
            "monitor",
            "--since",
            "2026-01-01",
            "--archive",
            f"s3://{clean}/events/",
            "--bundle",
            str(bundle),
            "--min-rows",
            "10",
            "--html",
            str(clean_page),
            "--json",
            str(tmp_path / "m.json"),
        ]
    )
    assert code == 0, out
    result = json.loads((tmp_path / "m.json").read_text())
    head14 = next(h for h in result["calibration"] if h["head"] == "churn_risk_14d")
    assert head14["settled"] > 0 and head14["ece"] is not None
    assert sum(b["rows"] for b in head14["bins"]) == head14["settled"]
    assert result["skew"]["features"] == []  # the clean run: no skew
