"""End-to-end worker figures against moto's server and the local model endpoint (each in a
process of its own, as `churn-worker local` runs them):

- throughput: the live events queued up before the worker starts (a backlog), events/s through the
  whole pipeline, and how well it batches (SageMaker invocations per event);
- latency: live events at a steady rate, p50/p95 event-to-alert latency (SQS SentTimestamp to the
  SNS publish of the alert);
- AWS requests per 1,000 events by service, and SageMaker invocations per event.

Targets (docs/performance.md): <= 0.05 SageMaker invocations per event on a batched workload; p95
event-to-alert latency under 2 s locally. moto is far slower than AWS: throughput here is a floor.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import defaultdict
from pathlib import Path

from cli.commands.local import drive, load_events, split_events, use_local_aws
from jobs.training import ensure_default_bundle
from localaws import ChildServer
from worker.logs import configure_logging
from worker.settings import Settings


def report(title: str, result: object) -> None:
    metrics, sent, seconds = result.metrics, result.sent, result.seconds  # type: ignore[attr-defined]
    print(
        f"{title}: {sent:,} live events in {seconds:.1f} s = {sent / seconds:,.1f} events/s; "
        f"alerts {sum(result.received.values())}"
    )  # type: ignore[attr-defined]
    latency = metrics.quantiles("event_to_alert_latency_ms")
    if latency:
        print(
            f"  event-to-alert latency: p50 {latency['p50']:,.0f} ms, p95 {latency['p95']:,.0f} ms "
            f"(target p95 < 2,000 ms), {int(latency['count'])} alerts"
        )
    by_service: dict[str, float] = defaultdict(float)
    for (name, labels), value in metrics.counters.items():
        if name == "aws_requests":
            by_service[dict(labels)["service"]] += value
    per_1000 = ", ".join(
        f"{service} {count / sent * 1000:,.0f}" for service, count in sorted(by_service.items())
    )
    print(f"  AWS requests per 1,000 events: {per_1000}")
    invocations = by_service.get("sagemaker-runtime", 0)
    print(f"  SageMaker invocations per event: {invocations / sent:.3f} (target <= 0.05 batched)")


async def main() -> None:
    events = load_events(customers=150, days=30, seed=11, events_file=None)
    history, live = split_events(events, live_days=1)
    base = Settings()
    burst = await drive(base.model_copy(update={"table_prefix": "bench-burst-"}), history, live, 0, False)
    report("throughput (a backlog of all live events)", burst)
    for rate in (5, 10):
        steady = await drive(
            base.model_copy(update={"table_prefix": f"bench-steady{rate}-"}), history, live, rate, False
        )
        report(f"latency (steady {rate} events/s)", steady)


if __name__ == "__main__":
    configure_logging(json_logs=False, level="WARNING")
    bundle = ensure_default_bundle(progress=True)
    moto = ChildServer([sys.executable, "-m", "localaws", "--port", "0"], "moto")
    endpoint = ChildServer(
        [str(Path(sys.executable).with_name("churn-model")), "serve", "--bundle", str(bundle), "--port", "0"],
        "model endpoint",
    )
    try:
        use_local_aws(moto.url)
        os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = endpoint.url
        asyncio.run(main())
    finally:
        endpoint.stop()
        moto.stop()
