"""The monthly AWS bill of a deployment, from per-event figures measured by bench_cost.py.

Nothing per event is a constant here: requests by operation, DynamoDB read/write units, SageMaker
invocations, worker CPU and event bytes all come from a `Measured` that a run fills in, so when a
later change cuts requests per event (as the batched store did) the bill printed by `make bench` follows. What is
fixed is the price list (us-east-1, on-demand, no free tier) and the few sizing rules below, each
stated where it is used.

Two choices are the model's, per volume, and printed: the endpoint (always-on ml.m5.xlarge
instances, or Serverless Inference billed per GB-second: `endpoint_choice`, with the volume where
they cross, `crossover`) and the worker's task size (infra/service.yaml's TaskCpu: `task_size`).
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
    # Serverless Inference (on demand): per GB-second of processing time (1 GB: $0.00002/s, 2 GB:
    # $0.00004/s, ...), plus data in and out. Cold starts are not processing time.
    "sagemaker_serverless_gb_second": 0.00002,
    "sagemaker_serverless_data_gb": 0.016,
    "fargate_vcpu_hour": 0.04048,
    "fargate_gb_hour": 0.004445,
    "kms_key_month": 1.00,
    "cloudwatch_alarm_month": 0.10,
    "cloudwatch_custom_metric_month": 0.30,
    "cloudwatch_logs_ingest_gb": 0.50,
}
HOURS_PER_MONTH = 730
DAYS_PER_MONTH = 30.4
# Sizing rules (infra/ templates' defaults): traffic peaks at PEAK x the daily average; a task is
# run at TASK_CPU_TARGET utilisation of the cores its worker can use; the endpoint holds the scaling
# target of infra/model-scaling.yaml; the archive writes one gzip object per task per minute at
# ARCHIVE_RATIO. Task sizes: infra/service.yaml's TaskCpu choices (vCPU, GB), the cheapest that
# carries the peak is recommended. The worker is one asyncio process, so it uses one core whatever
# the task has (WORKER_CORES): a 2 vCPU task carries no more events than a 1 vCPU one. Its memory
# (~0.2-0.4 GB resident in the bench, the segment cache bounded at ~80 MB) fits the smallest.
PEAK = 3.0
TASK_SIZES = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0))
WORKER_CORES = 1.0
TASK_CPU_TARGET, MIN_TASKS = 0.6, 1
INVOCATIONS_PER_INSTANCE_MINUTE, MIN_INSTANCES = 600, 1
ARCHIVE_RATIO = 0.15  # gzip of JSON Lines events
# Serverless sizing (infra/model-endpoint.yaml's defaults): memory, and what one invocation bills.
# A measured invocation (the worker's scoring latency, p50, over batches of the measured size) is
# split into a fixed part and a part per row: INVOCATION_BASE_MS is the fixed part assumed (TF
# Serving's request overhead). At low volume a batch holds what arrives while it lingers
# (BATCH_WINDOW_S: the 50 ms linger and a receive round trip), so a call scores fewer rows: more
# calls per event, each paying the fixed part; a backlog's full batches would understate that.
SERVERLESS_MEMORY_GB = 2.0
INVOCATION_BASE_MS = 10.0
BATCH_WINDOW_S = 0.1
ROW_BYTES = 3_500  # one customer's 150 features in the request and its answer, JSON
ENDPOINT_OPTIONS = ("instances", "serverless")
MAX_SERVERLESS_CONCURRENCY = 200  # SageMaker's limit per serverless endpoint
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
    invocation_ms: float = 50.0  # the endpoint's time per call (p50 of the worker's scoring latency)
    rows_per_invocation: float = 50.0  # customers scored per call (p50 of the pipeline batches)

    def per_event(self, service: str, operation: str | None = None) -> float:
        return (
            sum(v for (s, o), v in self.requests.items() if s == service and operation in (None, o))
            / self.events
        )


def invocations_per_event(m: Measured, events_per_day: float, vcpu: float | None = None) -> float:
    """Endpoint calls per event at this volume: the measured rate, or more when traffic is too thin
    to fill a batch (a call per batch, a batch holding what one task receives in BATCH_WINDOW_S).
    `vcpu`: the worker tasks' size (None: the recommended one); smaller tasks, more of them, each
    receiving less: more calls per event."""
    measured = m.per_event("sagemaker-runtime")
    tasks = tasks_of(m, events_per_day, vcpu if vcpu is not None else task_size(m, events_per_day)[0])
    per_batch = max(1.0, events_per_day / 86_400 / tasks * BATCH_WINDOW_S)
    return max(measured, 1.0 / per_batch) if measured else 0.0


def serverless_month(m: Measured, events_per_day: float, vcpu: float | None = None) -> float:
    """USD per month of a Serverless Inference endpoint (SERVERLESS_MEMORY_GB) at this volume."""
    p = PRICES
    calls = events_per_day * DAYS_PER_MONTH * invocations_per_event(m, events_per_day, vcpu)
    if not calls:
        return 0.0
    rows = (
        events_per_day * DAYS_PER_MONTH * min(1.0, m.rows_per_invocation * m.per_event("sagemaker-runtime"))
    )
    per_row_ms = max(0.0, m.invocation_ms - INVOCATION_BASE_MS) / max(m.rows_per_invocation, 1.0)
    seconds = (calls * INVOCATION_BASE_MS + rows * per_row_ms) / 1000
    return (
        seconds * SERVERLESS_MEMORY_GB * p["sagemaker_serverless_gb_second"]
        + rows * ROW_BYTES / 1e9 * p["sagemaker_serverless_data_gb"]
    )


def serverless_concurrency(m: Measured, events_per_day: float, vcpu: float | None = None) -> int:
    """The MaxConcurrency a serverless endpoint needs at the peak of this volume: calls a second x
    seconds a call (SageMaker throttles calls beyond it; at most 200 per endpoint)."""
    calls = events_per_day / 86_400 * PEAK * invocations_per_event(m, events_per_day, vcpu)
    rows = (
        m.rows_per_invocation
        * m.per_event("sagemaker-runtime")
        / max(invocations_per_event(m, events_per_day, vcpu), 1e-9)
    )
    per_row_ms = max(0.0, m.invocation_ms - INVOCATION_BASE_MS) / max(m.rows_per_invocation, 1.0)
    seconds = (INVOCATION_BASE_MS + min(rows, m.rows_per_invocation) * per_row_ms) / 1000
    return max(1, math.ceil(calls * seconds))


def instances_month(m: Measured, events_per_day: float) -> float:
    return instances_of(m, events_per_day) * HOURS_PER_MONTH * PRICES["sagemaker_ml_m5_xlarge_hour"]


def endpoint_choice(m: Measured, events_per_day: float, vcpu: float | None = None) -> str:
    """The cheaper endpoint at this volume: "instances" (always on) or "serverless" (per use)."""
    if serverless_concurrency(m, events_per_day, vcpu) > MAX_SERVERLESS_CONCURRENCY:
        return "instances"
    return (
        "serverless"
        if serverless_month(m, events_per_day, vcpu) < instances_month(m, events_per_day)
        else "instances"
    )


def endpoint_month(m: Measured, events_per_day: float, vcpu: float | None = None) -> float:
    """USD a month of the cheaper endpoint at this volume, with worker tasks of `vcpu`."""
    if endpoint_choice(m, events_per_day, vcpu) == "instances":
        return instances_month(m, events_per_day)
    return serverless_month(m, events_per_day, vcpu)


def one_instance_buys(m: Measured, low: float = 1e4, high: float = 1e10) -> float | None:
    """Events per day at which serverless costs what the smallest instance fleet (MIN_INSTANCES,
    always on) costs: the volume below which paying per use is certainly cheaper."""
    floor = MIN_INSTANCES * HOURS_PER_MONTH * PRICES["sagemaker_ml_m5_xlarge_hour"]
    if serverless_month(m, high) < floor:
        return None
    for _ in range(60):
        middle = math.sqrt(low * high)
        low, high = (middle, high) if serverless_month(m, middle) < floor else (low, middle)
    return high


def crossover(m: Measured, low: float = 1e4, high: float = 1e10) -> float | None:
    """Events per day above which instances cost less than serverless (None: not in low..high).
    Bisection on the log scale; the instance bill steps up with its count, so the first crossing."""
    if endpoint_choice(m, low) == "instances":
        return low
    if endpoint_choice(m, high) == "serverless":
        return None
    for _ in range(60):
        middle = math.sqrt(low * high)
        if endpoint_choice(m, middle) == "serverless":
            low = middle
        else:
            high = middle
    return high


def monthly_bill(m: Measured, events_per_day: float, endpoint: str | None = None) -> dict[str, float]:
    """USD per month by line, for `events_per_day` on average; `endpoint`: "instances",
    "serverless" or None (the cheaper of the two at this volume)."""
    endpoint = endpoint or endpoint_choice(m, events_per_day)
    p = PRICES
    month = events_per_day * DAYS_PER_MONTH
    tasks, _ = sizing(m, events_per_day)
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
        "SageMaker endpoint (recommended, below)": instances_month(m, events_per_day)
        if endpoint == "instances"
        else serverless_month(m, events_per_day),
        "ECS Fargate (task size below)": tasks * task_month(*task_size(m, events_per_day)),
        "KMS, CloudWatch (alarms, EMF metrics, logs)": p["kms_key_month"]
        + ALARMS * p["cloudwatch_alarm_month"]
        + EMF_METRICS * p["cloudwatch_custom_metric_month"]
        + tasks * HOURS_PER_MONTH * 60 * LOG_BYTES_PER_TASK_MINUTE / 1e9 * p["cloudwatch_logs_ingest_gb"],
    }


def task_month(vcpu: float, gb: float) -> float:
    """USD a month of one always-on Fargate task of this size."""
    return HOURS_PER_MONTH * (vcpu * PRICES["fargate_vcpu_hour"] + gb * PRICES["fargate_gb_hour"])


def tasks_of(m: Measured, events_per_day: float, vcpu: float) -> int:
    """Worker tasks of `vcpu` each that carry the peak of `events_per_day`."""
    peak_per_second = events_per_day / 86_400 * PEAK
    usable = min(vcpu, WORKER_CORES) * TASK_CPU_TARGET
    return max(MIN_TASKS, math.ceil(peak_per_second * m.cpu_seconds / m.events / usable))


def task_size(m: Measured, events_per_day: float) -> tuple[float, float]:
    """The task size (vCPU, GB) whose tasks and endpoint together cost the least at this volume: more,
    smaller tasks can cost less in Fargate and more at a serverless endpoint (each task's batches
    are thinner: more calls per event); on a tie the larger (fewer tasks, fuller batches: fewer
    requests per event)."""

    def month(size: tuple[float, float]) -> float:
        tasks = tasks_of(m, events_per_day, size[0])
        return tasks * task_month(*size) + endpoint_month(m, events_per_day, size[0])

    return min(TASK_SIZES, key=lambda size: (round(month(size), 6), -size[0]))


def instances_of(m: Measured, events_per_day: float) -> int:
    """Always-on endpoint instances that carry the peak of `events_per_day` (its calls at the
    measured rate: an instance serves calls, not tasks)."""
    per_minute = events_per_day / 86_400 * PEAK * 60 * m.per_event("sagemaker-runtime")
    return max(MIN_INSTANCES, math.ceil(per_minute / INVOCATIONS_PER_INSTANCE_MINUTE))


def sizing(m: Measured, events_per_day: float) -> tuple[int, int]:
    """(worker tasks of the recommended size, endpoint instances) at the peak of `events_per_day`."""
    return tasks_of(m, events_per_day, task_size(m, events_per_day)[0]), instances_of(m, events_per_day)


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
    lines.append(
        f"  {'task size (TaskCpu, service.yaml)':<40}"
        + "".join(f"{f'{task_size(m, v)[0]:g} vCPU {task_size(m, v)[1]:g} GB':>{width}}" for v in volumes)
    )
    lines.append(
        f"\nthe endpoint, both options (calls per event at each volume, {m.invocation_ms:.0f} ms per call of "
        f"{m.rows_per_invocation:.0f} rows measured; {INVOCATION_BASE_MS:g} ms of it fixed):"
    )
    lines.append(
        f"  {'calls per event':<40}" + "".join(f"{invocations_per_event(m, v):>{width}.4f}" for v in volumes)
    )
    lines.append(
        f"  {'ml.m5.xlarge instances, always on':<40}"
        + "".join(f"{instances_month(m, v):>{width},.2f}" for v in volumes)
    )
    lines.append(
        f"  {f'serverless {SERVERLESS_MEMORY_GB:g} GB, per use':<40}"
        + "".join(f"{serverless_month(m, v):>{width},.2f}" for v in volumes)
    )
    lines.append(
        f"  {'serverless MaxConcurrency needed':<40}"
        + "".join(f"{serverless_concurrency(m, v):>{width}}" for v in volumes)
    )
    lines.append(f"  {'recommended':<40}" + "".join(f"{endpoint_choice(m, v):>{width}}" for v in volumes))
    cross, floor = crossover(m), one_instance_buys(m)
    lines.append(
        "  crossover: serverless costs less below "
        + (
            f"{cross / 1e6:,.1f} M events a day, instances above"
            if cross
            else "every volume up to 10,000 M a day"
        )
        + (
            f"; one always-on instance costs what {floor / 1e6:,.1f} M events a day cost serverless"
            if floor
            else ""
        )
        + f"; serverless needs MaxConcurrency >= the line above (at most {MAX_SERVERLESS_CONCURRENCY})"
    )
    return "\n".join(lines)
