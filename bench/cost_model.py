"""The monthly AWS bill of a deployment, from per-event figures measured by bench_cost.py.

Nothing per event is a constant here: requests by operation, DynamoDB read/write units, SageMaker
invocations, worker CPU and event bytes all come from a `Measured` that a run fills in, so when a
later change cuts requests per event (as the batched store did) the bill printed by `make bench` follows. What is
fixed is the price list (us-east-1, on-demand, no free tier) and the few sizing rules below, each
stated where it is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PRICES_AS_OF = "2026-11-30"
# us-east-1 list prices (USD), as published on the services' pricing pages (DynamoDB on-demand after
# the November 2024 reduction). Not fetched at run time: check them before budgeting.
PRICES = {
    "dynamodb_wru_per_million": 0.625,
    "dynamodb_rru_per_million": 0.125,
    "dynamodb_storage_gb_month": 0.25,
    "dynamodb_pitr_gb_month": 0.20,
    "sqs_requests_per_million": 0.40,  # standard queue, per 64 KB chunk of a request
    "sns_publish_per_million": 0.50,  # per 64 KB chunk of a Publish or PublishBatch request; SQS deliveries free
    "s3_put_per_thousand": 0.005,
    "s3_standard_gb_month": 0.023,
    "sagemaker_ml_m5_xlarge_hour": 0.23,  # real-time inference instance
    "fargate_vcpu_hour": 0.04048,
    "fargate_gb_hour": 0.004445,
    "kms_key_month": 1.00,
    "cloudwatch_alarm_month": 0.10,
    "cloudwatch_custom_metric_month": 0.30,
    "cloudwatch_logs_ingest_gb": 0.50,
}
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = 30.4
# Sizing rules (infra/ templates' defaults): traffic peaks at PEAK x the daily average; a task
# (2 vCPU, 4 GB) is run at TASK_CPU_TARGET utilisation; the endpoint holds the scaling target of
# infra/model-scaling.yaml; the archive writes one gzip object per task per minute at ARCHIVE_RATIO.
PEAK = 3.0
TASK_VCPU, TASK_GB, TASK_CPU_TARGET, MIN_TASKS = 2, 4, 0.6, 1
INVOCATIONS_PER_INSTANCE_MINUTE, MIN_INSTANCES = 600, 1
ARCHIVE_RATIO = 0.15  # gzip of JSON Lines events
EMF_METRICS, ALARMS, LOG_BYTES_PER_TASK_MINUTE = 10, 6, 2_000


@dataclass
class Measured:
    """Per-event figures from one run (bench_cost.py)."""

    events: int
    requests: dict[tuple[str, str], float]  # (service, operation) -> requests in the run
    rru: float  # DynamoDB read request units in the run
    wru: float
    cpu_seconds: float  # worker process CPU while it worked through `events`
    event_bytes: float  # mean JSON size of an event
    partition_bytes: float  # mean feature-store bytes per customer (profile + ~35 days of pages)
    events_per_customer_day: float
    producer_requests: dict[tuple[str, str], float] = field(default_factory=dict)  # sending the events in

    def per_event(self, service: str, operation: str | None = None) -> float:
        return (
            sum(v for (s, o), v in self.requests.items() if s == service and operation in (None, o))
            / self.events
        )


def monthly_bill(m: Measured, events_per_day: float) -> dict[str, float]:
    """USD per month by line, for `events_per_day` on average."""
    p = PRICES
    month = events_per_day * DAYS_PER_MONTH
    tasks, instances = sizing(m, events_per_day)
    customers = events_per_day / m.events_per_customer_day
    table_gb = customers * m.partition_bytes / 1e9
    sqs_per_event = (
        m.per_event("sqs") + sum(v for (s, _), v in m.producer_requests.items() if s == "sqs") / m.events
    )
    archive_gb = month * m.event_bytes * ARCHIVE_RATIO / 1e9
    return {
        "DynamoDB requests": month
        * (
            m.rru / m.events * p["dynamodb_rru_per_million"]
            + m.wru / m.events * p["dynamodb_wru_per_million"]
        )
        / 1e6,
        "DynamoDB storage + PITR": table_gb * (p["dynamodb_storage_gb_month"] + p["dynamodb_pitr_gb_month"]),
        "SQS (producer + worker)": month * sqs_per_event * p["sqs_requests_per_million"] / 1e6,
        "SNS publishes": month * m.per_event("sns") * p["sns_publish_per_million"] / 1e6,
        "S3 archive (PUTs, 1st month storage)": tasks * HOURS_PER_MONTH * 60 * p["s3_put_per_thousand"] / 1e3
        + archive_gb * p["s3_standard_gb_month"],
        "SageMaker endpoint (ml.m5.xlarge)": instances * HOURS_PER_MONTH * p["sagemaker_ml_m5_xlarge_hour"],
        "ECS Fargate (2 vCPU/4 GB tasks)": tasks
        * HOURS_PER_MONTH
        * (TASK_VCPU * p["fargate_vcpu_hour"] + TASK_GB * p["fargate_gb_hour"]),
        "KMS, CloudWatch (alarms, EMF metrics, logs)": p["kms_key_month"]
        + ALARMS * p["cloudwatch_alarm_month"]
        + EMF_METRICS * p["cloudwatch_custom_metric_month"]
        + tasks * HOURS_PER_MONTH * 60 * LOG_BYTES_PER_TASK_MINUTE / 1e9 * p["cloudwatch_logs_ingest_gb"],
    }


def sizing(m: Measured, events_per_day: float) -> tuple[int, int]:
    """(worker tasks, endpoint instances) at the peak of `events_per_day`."""
    peak_per_second = events_per_day / 86_400 * PEAK
    tasks = max(
        MIN_TASKS, math.ceil(peak_per_second * m.cpu_seconds / m.events / (TASK_VCPU * TASK_CPU_TARGET))
    )
    per_minute = peak_per_second * 60 * m.per_event("sagemaker-runtime")
    return tasks, max(MIN_INSTANCES, math.ceil(per_minute / INVOCATIONS_PER_INSTANCE_MINUTE))


def report(m: Measured, volumes: tuple[float, ...] = (1e6, 1e7, 1e8)) -> str:
    lines = [f"per event (measured over {m.events:,} events):"]
    for (service, operation), count in sorted(m.requests.items()):
        lines.append(f"  {service:<18} {operation:<30} {count / m.events:8.4f}")
    for (service, operation), count in sorted(m.producer_requests.items()):
        lines.append(f"  {service:<18} {operation + ' (producer)':<30} {count / m.events:8.4f}")
    lines.append(f"  AWS requests per event (worker): {sum(m.requests.values()) / m.events:.3f}")
    lines.append(
        f"  DynamoDB RRU {m.rru / m.events:.3f}, WRU {m.wru / m.events:.3f} per event; "
        f"worker CPU {m.cpu_seconds / m.events * 1000:.2f} ms per event; event {m.event_bytes:.0f} B; "
        f"{m.partition_bytes / 1024:.1f} KiB per customer in the feature table"
    )
    bills = [monthly_bill(m, volume) for volume in volumes]
    width = 14
    lines.append(f"\nmonthly USD at list prices (us-east-1, {PRICES_AS_OF}; peak = {PEAK:g} x average):")
    lines.append(f"  {'events per day':<40}" + "".join(f"{f'{v / 1e6:g} M':>{width}}" for v in volumes))
    for key in bills[0]:
        values = [bill[key] for bill in bills]
        lines.append(f"  {key:<40}" + "".join(f"{v:>{width},.2f}" for v in values))
    lines.append(f"  {'total':<40}" + "".join(f"{sum(b.values()):>{width},.2f}" for b in bills))
    lines.append(
        f"  {'per million events':<40}"
        + "".join(
            f"{sum(b.values()) / (v * DAYS_PER_MONTH / 1e6):>{width},.2f}"
            for v, b in zip(volumes, bills, strict=True)
        )
    )
    sizes = [sizing(m, v) for v in volumes]
    lines.append(
        f"  {'worker tasks / endpoint instances':<40}" + "".join(f"{f'{t} / {i}':>{width}}" for t, i in sizes)
    )
    return "\n".join(lines)
