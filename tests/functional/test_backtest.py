"""`churn-worker backtest`: the same alerts as the live worker on moto, deterministic outputs, bad lines.

The live side is the worker's own stack on moto's server: DynamoDB feature store and alert ledger,
SNS publisher (read back through a raw-delivery SQS subscription) and the SageMaker client against
the local endpoint serving the same tiny bundle. Both sides get the same batches, the same injected
clock and the same day-end re-scoring of quiet customers (whose states the live side reads back from
DynamoDB); their alert bodies must be equal apart from `created_at`.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from cli.worker import main
from features.activity import day_end_us
from features.due import SCORED_AT
from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.layout import PROFILE_BUCKET
from features.state import DAY_US, CustomerState, to_us
from jobs.backtest.clock import SimulatedClock
from jobs.backtest.recording import TRIGGERS, MemoryDeadLetterQueue
from jobs.backtest.rescoring import DayEndRescoring
from jobs.backtest.runner import BacktestOptions, run_backtest
from jobs.backtest.scorer import InProcessScorer
from jobs.backtest.source import HOUR_US, Batch, read_lines, time_batches
from model.bundle import load_bundle
from model.server import LocalEndpoint, LocalPredictor
from model.simulator import simulate, write_simulation
from tests.fakes import FeatureScorer
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.publisher import SnsAlertPublisher, create_alert_topic
from worker.pipeline import Pipeline, ScoreOutcome
from worker.scoring import SageMakerScorer

WINDOW_US = 6 * HOUR_US
RETENTION = timedelta(days=35)


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight days of 20 simulated customers, plus one customer calling support three times."""
    sim = simulate(customers=20, days=12, seed=3)
    cut = (sim.end - timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%S")
    events = [e for e in sim.events if e["occurred_at"] >= cut]
    base = sim.end - timedelta(days=5)
    extra = [
        {
            "event_id": "spike-0",
            "customer_id": "c-spike",
            "type": "customer_signed_up",
            "tier": "premium",
            "occurred_at": (base - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ]
    extra += [
        {
            "event_id": f"spike-{i}",
            "customer_id": "c-spike",
            "type": "ib_call",
            "sentiment": "negative",
            "occurred_at": (base + timedelta(hours=20 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for i in (1, 2, 3)
    ]
    events = sorted(events + extra, key=lambda e: e["occurred_at"])
    path = tmp_path_factory.mktemp("log") / "small.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def batches(path: Path) -> list[Batch]:
    return [b for b in time_batches(read_lines(path), WINDOW_US) if isinstance(b, Batch)]


async def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    empty = 0
    while empty < 2:
        response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = response.get("Messages", [])
        empty = 0 if messages else empty + 1
        bodies += [json.loads(m["Body"]) for m in messages]
        if messages:
            await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
    return bodies


class SweptPipeline(Pipeline):
    """The live pipeline, and after a re-scoring the profile's `scored_us`, which the live sweeper
    writes in its completion UpdateItem (worker/rescore.py): where the next alert's "what changed"
    starts. DayEndRescoring stands in for the sweeper here, without the due index."""

    def __init__(self, ddb: Any, table: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ddb, self._table = ddb, table

    async def score_customers(
        self, states: Any, now: datetime, trigger: Any = "event", *args: Any, **kwargs: Any
    ) -> ScoreOutcome:
        outcome = await super().score_customers(states, now, trigger, *args, **kwargs)
        if trigger == "rescore":
            for cid in set(states) - outcome.unscored:
                await self._ddb.update_item(
                    TableName=self._table,
                    Key={"customer_id": {"S": cid}, "bucket": {"S": PROFILE_BUCKET}},
                    UpdateExpression="SET #scored = :scored",
                    ExpressionAttributeNames={"#scored": SCORED_AT},
                    ExpressionAttributeValues={":scored": {"N": str(to_us(now))}},
                )
        return outcome


async def live_alerts(path: Path, prefix: str, endpoint_url: str) -> list[dict[str, Any]]:
    """The live worker's stack on moto, fed the backtest's batches at the backtest's clock."""
    session = get_session()
    async with (
        session.create_client("dynamodb", region_name="us-east-1") as ddb,
        session.create_client("sns", region_name="us-east-1") as sns,
        session.create_client("sqs", region_name="us-east-1") as sqs,
        session.create_client(
            "sagemaker-runtime", region_name="us-east-1", endpoint_url=endpoint_url
        ) as runtime,
    ):
        await create_feature_table(ddb, table_name(prefix))
        await create_alert_table(ddb, alert_table_name(prefix))
        topic = await create_alert_topic(sns, f"{prefix}alerts")
        url = (await sqs.create_queue(QueueName=f"{prefix}tail"))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
            "QueueArn"
        ]
        await sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
        )
        clock = SimulatedClock()
        store = DynamoDBFeatureStore(ddb, table_name(prefix), RETENTION)
        known: set[str] = set()

        async def states() -> dict[str, CustomerState]:
            return await store.get(known)

        pipeline = SweptPipeline(
            ddb,
            table_name(prefix),
            store=store,
            scorer=SageMakerScorer(runtime, "churn-health"),
            explainer=SageMakerScorer(runtime, "churn-health"),  # "what changed", as worker.runtime wires it
            ledger=DynamoDBAlertLedger(ddb, alert_table_name(prefix)),
            publisher=SnsAlertPublisher(sns, topic),  # created_at from the wall clock, as in production
            dlq=MemoryDeadLetterQueue(),
            alerts=AlertsConfig(),
            retention=RETENTION,
            clock=clock,
        )
        rescoring = DayEndRescoring(pipeline, store, clock, RETENTION, states)
        for batch in batches(path):
            assert batch.window_end_us is not None
            rescoring.start(batch.window_end_us)
            await rescoring.days_ending_by(batch.window_end_us - 1)
            clock.advance_to_us(batch.window_end_us)
            settlement = await pipeline.process(batch.records)
            assert not settlement.failed and not settlement.quarantined
            customers = {json.loads(record.body)["customer_id"] for record in batch.records}
            known.update(customers)
            rescoring.scored(customers, batch.window_end_us)
            await rescoring.days_ending_by(batch.window_end_us)
        await rescoring.days_ending_by(day_end_us(batch.window_end_us // DAY_US))
        return await drain(sqs, url)


def close(a: Any, b: Any) -> bool:
    """Equal, with model outputs compared to 1e-4: the backtest scores each customer group in a call
    of its own (shard-independent results), the live worker a whole batch, and float32 matmuls
    differ in their last bits with the rows that share them."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    return bool(a == b)


def without_created_at(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bodies without their wall-clock instant, and with "what changed" reduced to whether it
    has any: its shares are ratios of differences between near-equal churn risks (one input put
    back at a time), a few thousandths apart on the tiny model, so the last float32 bits of the
    two scorers reorder near-equal shares and so which three are listed. tests/functional/actionable/test_alert_changes.py checks
    the shares themselves."""
    return sorted(
        (
            {k: v for k, v in b.items() if k not in ("created_at", "what_changed")}
            | {"changes": bool(b.get("changes"))}
            for b in bodies
        ),
        key=lambda b: b["alert_id"],
    )


async def test_backtest_publishes_what_the_live_worker_publishes(
    small_log: Path,
    tiny_bundle: Path,
    tiny_endpoint: LocalEndpoint,
    aws_endpoint: str,
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    scorer = InProcessScorer(LocalPredictor(load_bundle(tiny_bundle)))
    options = BacktestOptions(window_us=WINDOW_US, progress=False)
    result = await run_backtest(small_log, scorer, tmp_path / "alerts.jsonl", options)
    backtest = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    live = await live_alerts(small_log, unique_prefix, tiny_endpoint.url)

    assert result.batches == len(batches(small_log))
    assert "IB_CALL_SPIKE" in {b["type"] for b in backtest}
    assert result.scored_customer_days == result.active_customer_days > 0  # quiet customers too
    assert (
        0 < (result.log.columns()["trigger"] == TRIGGERS.index("rescore")).sum() < result.scored_customer_days
    )
    assert len(backtest) == len(live) == len(result.alerts.types)
    assert close(without_created_at(backtest), without_created_at(live))
    # the backtest's clock is event time: created_at is the batch's time, which is also as_of
    assert all(b["created_at"] == b["as_of"] for b in backtest)


def run_cli(*args: str) -> int:
    return main(["backtest", *map(str, args)])


def test_same_events_and_config_give_identical_outputs(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_simulation(simulate(customers=30, days=20, seed=8), tmp_path / "sim.jsonl")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert (
            run_cli(
                events["events"],
                "--outcomes",
                events["outcomes"],
                "--bundle",
                tiny_bundle,
                "--out",
                out,
                "--batch-hours",
                "24",
            )
            == 0
        )
    printed = capsys.readouterr().out
    assert "ib_call_spike_precision" in printed and "events/s" in printed
    for name in ("alerts.jsonl", "report.json", "report.html"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    report = json.loads((outs[0] / "report.json").read_text())
    assert report["alerts"]["total"] == len((outs[0] / "alerts.jsonl").read_text().splitlines())
    spike = report["alerts"]["by_type"]["IB_CALL_SPIKE"]
    assert {
        "precision",
        "recall",
        "false_positive_rate",
        "median_lead_time_days",
        "alerts_per_1000_customers_per_week",
        "customers_alerted",
    } <= set(spike)
    assert report["model"]["health_mae"] is not None  # the simulator's truth file sits beside the outcomes
    assert [t["metric"] for t in report["targets"]] == [
        "ib_call_spike_precision",
        "ib_call_spike_recall",
        "critical_alert_false_positive_rate",
        "critical_alert_false_share",
        "churn_auc_roc_14d",
        "churn_auc_roc_30d",
        "health_score_mae",
    ]
    html = (outs[0] / "report.html").read_text()
    assert html.count("<svg") >= 4 and "http" not in html.replace("http://www.w3.org/2000/svg", "")


def test_a_bad_line_stops_with_its_number_or_is_skipped(
    small_log: Path, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = small_log.read_text().splitlines()
    lines.insert(4, "{not json")
    lines.insert(
        9,
        json.dumps(
            {
                "event_id": "x-1",
                "customer_id": "c-1",
                "type": "teleported",
                "occurred_at": "2026-01-05T00:00:00Z",
            }
        ),
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert run_cli(bad, "--bundle", tiny_bundle, "--out", tmp_path / "stop") == 2
    assert "bad.jsonl:5: not_json" in capsys.readouterr().err

    assert run_cli(bad, "--bundle", tiny_bundle, "--out", tmp_path / "skip", "--on-error", "skip") == 0
    err = capsys.readouterr().err
    assert "bad.jsonl:5: skipped: not_json" in err and "bad.jsonl:10: skipped: unknown_type" in err
    report = json.loads((tmp_path / "skip" / "report.json").read_text())
    assert report["events"]["bad_lines_skipped"] == 2
    assert report["outcomes"].startswith("n/a")


def test_endpoint_scoring_gives_the_same_file_as_the_model_in_process(
    small_log: Path,
    tiny_bundle: Path,
    tiny_endpoint: LocalEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--endpoint NAME` goes through the worker's SageMaker client (here to the local endpoint)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", tiny_endpoint.url)
    assert run_cli(small_log, "--bundle", tiny_bundle, "--out", tmp_path / "local", "--batch-hours", "6") == 0
    assert (
        run_cli(small_log, "--endpoint", "churn-health", "--out", tmp_path / "remote", "--batch-hours", "6")
        == 0
    )
    local, remote = (
        (tmp_path / "local" / "alerts.jsonl").read_bytes(),
        (tmp_path / "remote" / "alerts.jsonl").read_bytes(),
    )
    assert local and local == remote
    report = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert report["scoring"] == "endpoint churn-health"
    assert report["model_version"] == load_bundle(tiny_bundle).model_version


async def test_a_customer_who_goes_quiet_is_alerted_by_day_end_rescoring_alone(tmp_path: Path) -> None:
    """No event after day 2, yet their risk grows with days_since_last_session: HIGH_CHURN_RISK
    fires at a day's end with no event that day; a churned customer is never re-scored."""
    day0 = datetime(2026, 3, 1, 9, tzinfo=UTC)

    def event(n: int, cid: str, kind: str, at: datetime, **extra: Any) -> dict[str, Any]:
        return {
            "event_id": f"{cid}-{n}",
            "customer_id": cid,
            "type": kind,
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            **extra,
        }

    events = [
        event(0, "c-quiet", "customer_signed_up", day0, tier="standard"),
        event(
            1,
            "c-quiet",
            "session_completed",
            day0 + timedelta(days=1),
            subject="algebra",
            tutor_id="t-1",
            duration_minutes=60.0,
        ),
        event(0, "c-gone", "customer_signed_up", day0, tier="standard"),
        event(1, "c-gone", "customer_churned", day0 + timedelta(days=1)),
        event(0, "c-busy", "customer_signed_up", day0, tier="standard"),
    ]
    events += [event(i, "c-busy", "login", day0 + timedelta(days=i)) for i in range(1, 40)]
    path = tmp_path / "quiet.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    alerts = AlertsConfig.model_validate({"high_churn_risk": {"min_churn_risk_30d": 0.5}})
    result = await run_backtest(
        path, FeatureScorer(), tmp_path / "alerts.jsonl", BacktestOptions(alerts=alerts, progress=False)
    )

    bodies = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    quiet = [b for b in bodies if b["customer_id"] == "c-quiet" and b["type"] == "HIGH_CHURN_RISK"]
    assert quiet, "the quiet customer was never alerted"
    assert datetime.fromisoformat(quiet[0]["as_of"]) >= day0 + timedelta(days=20)  # risk grew while silent
    gone_alerts = [b for b in bodies if b["customer_id"] == "c-gone"]
    assert all(
        datetime.fromisoformat(b["as_of"]) < day0 + timedelta(days=1) for b in gone_alerts
    )  # none after churn
    columns = result.log.columns()
    gone = result.log.index["c-gone"]
    assert (columns["customer"] == gone).sum() <= 2  # its event days only, never re-scored after the churn
    assert result.scored_customer_days == result.active_customer_days
