"""worker/emf.py: the EMF lines CloudWatch turns into the metrics infra/alarms.yaml alarms on."""

from __future__ import annotations

import asyncio
import io
import json

from worker.emf import COUNTERS, DIMENSION, NAMESPACE, EmfReporter
from worker.metrics import Metrics


def declared(record: dict) -> dict[str, str]:
    [directive] = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE and directive["Dimensions"] == [[DIMENSION]]
    return {m["Name"]: m["Unit"] for m in directive["Metrics"]}


def test_a_record_is_valid_emf_with_readiness_and_counter_increases() -> None:
    metrics = Metrics()
    metrics.inc("events_in", 5)
    ready = [True]
    reporter = EmfReporter(metrics, lambda: ready[0], "churn-", clock=lambda: 1_700_000_000.5)
    metrics.inc("events_in", 3)
    metrics.inc("aws_requests", 2, service="sqs", operation="ReceiveMessage")
    metrics.inc("aws_requests", 1, service="dynamodb", operation="Query")
    record = reporter.record()
    units = declared(record)
    assert record["_aws"]["Timestamp"] == 1_700_000_000_500
    assert record[DIMENSION] == "churn-"
    assert record["WorkerReady"] == 1.0 and units["WorkerReady"] == "None"
    assert record["EventsIn"] == 3.0, "the increase since the reporter started, not the process total"
    assert record["AwsRequests"] == 3.0, "summed over every label"
    assert set(COUNTERS) <= set(units) and all(name in record for name in units)

    ready[0] = False
    metrics.inc("events_in", 1)
    again = reporter.record()
    assert (again["WorkerReady"], again["EventsIn"], again["AwsRequests"]) == (0.0, 1.0, 0.0)


def test_rescoring_gauges_appear_once_reported() -> None:
    metrics = Metrics()
    reporter = EmfReporter(metrics, lambda: True, "p-")
    first = reporter.record()
    assert "RescoreLagSeconds" not in declared(first), "no data until the re-scorer reports, not a fake zero"
    metrics.set("rescore_due_customers", 42)
    metrics.set("rescore_lag_seconds", 3600.5)
    second = reporter.record()
    assert declared(second)["RescoreLagSeconds"] == "Seconds"
    assert (second["RescoreDueCustomers"], second["RescoreLagSeconds"]) == (42.0, 3600.5)


class Lines(io.StringIO):
    """Sets `stop` once `want` lines were written."""

    def __init__(self, stop: asyncio.Event, want: int) -> None:
        super().__init__()
        self.stop, self.want = stop, want

    def flush(self) -> None:
        if self.getvalue().count("\n") >= self.want:
            self.stop.set()


async def test_run_writes_a_json_line_per_interval_until_stopped() -> None:
    stop = asyncio.Event()
    out = Lines(stop, want=3)
    task = asyncio.create_task(EmfReporter(Metrics(), lambda: True, "p-", out=out).run(0.01, stop))
    await asyncio.wait_for(task, 1)
    lines = out.getvalue().splitlines()
    assert all(json.loads(line)["WorkerReady"] == 1.0 for line in lines)
