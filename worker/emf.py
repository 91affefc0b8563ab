"""CloudWatch metrics from the worker's own numbers: CloudWatch Embedded Metric Format (EMF) lines.

The worker's `/metrics` (Prometheus) and `/readyz` are for scrapers; CloudWatch alarms need the same
numbers as CloudWatch metrics. Every `CHURN_EMF_INTERVAL_SECONDS` (the ECS task definition sets 60;
0, the default, turns this off) the worker writes one JSON line to stdout in EMF: the awslogs log
driver ships it to the task's log group like any log line, and CloudWatch Logs extracts the metrics
from it (no agent, no PutMetricData permission, no extra request per minute). infra/alarms.yaml
alarms on them.

Namespace `ChurnAlerts`, one dimension `TablePrefix` (one deployment). Gauges are reported as they
are at the instant of the line; counters as their increase since the previous line, so CloudWatch's
Sum over a period is the count in that period whatever the number of tasks.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from worker.metrics import Metrics

NAMESPACE = "ChurnAlerts"
DIMENSION = "TablePrefix"
# EMF metric name -> (Metrics gauge name, unit). The re-scoring gauges are exposed on /metrics as
# churn_rescore_due_customers and churn_rescore_lag_seconds (age of the oldest due customer).
GAUGES: dict[str, tuple[str, str]] = {
    "RescoreDueCustomers": ("rescore_due_customers", "Count"),
    "RescoreLagSeconds": ("rescore_lag_seconds", "Seconds"),
}
# EMF metric name -> (Metrics counter name, unit); /metrics shows them as churn_<name>_total.
COUNTERS: dict[str, tuple[str, str]] = {
    "CustomersRescored": ("customers_rescored", "Count"),
    "EventsIn": ("events_in", "Count"),
    "EventsQuarantined": ("events_quarantined", "Count"),
    "AlertsPublished": ("alerts_published", "Count"),
    "BatchesFailed": ("batches_failed", "Count"),
    "ScoringFailures": ("scoring_failures", "Count"),
    "AwsRequests": ("aws_requests", "Count"),
    "ServedRowsDropped": ("served_rows_dropped", "Count"),  # the served-feature log under pressure
}


class EmfReporter:
    """`WorkerReady` (1 while /readyz is green, else 0) and the numbers above, one line per interval."""

    def __init__(
        self,
        metrics: Metrics,
        is_ready: Callable[[], bool],
        table_prefix: str,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._is_ready = is_ready
        self._dimension = table_prefix
        self._out = out
        self._clock = clock
        self._last: dict[str, float] = {name: metrics.total(source) for name, (source, _) in COUNTERS.items()}

    def record(self) -> dict[str, Any]:
        """The next EMF object (and moves the counters' baseline to now)."""
        values: dict[str, float] = {"WorkerReady": 1.0 if self._is_ready() else 0.0}
        units = {"WorkerReady": "None"}
        for name, (source, unit) in GAUGES.items():
            if source in self._metrics.gauges:  # absent until the re-scorer reports: no data, not zero
                values[name], units[name] = float(self._metrics.gauges[source]), unit
        for name, (source, unit) in COUNTERS.items():
            total = self._metrics.total(source)
            values[name], units[name] = max(total - self._last[name], 0.0), unit
            self._last[name] = total
        return {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [[DIMENSION]],
                        "Metrics": [{"Name": name, "Unit": units[name]} for name in values],
                    }
                ],
            },
            DIMENSION: self._dimension,
            **values,
        }

    def emit(self) -> None:
        out = self._out or sys.stdout
        out.write(json.dumps(self.record(), separators=(",", ":")) + "\n")
        out.flush()

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """A line every `interval` seconds until `stop`. None on the way out: a task stopped by a
        deploy is not an unready worker, and its absence is what the alarm's missing data covers."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                self.emit()
