"""`churn-worker local`: the whole pipeline on an embedded stack, in one command (`make run`).

moto's server on 127.0.0.1 stands in for AWS; the local model endpoint serves the default bundle
(trained on first use, then cached); the real worker runs against both. Simulated customers'
history is loaded into the feature store, their most recent days are sent through SQS as live
traffic, and alerts are printed as a retention team subscribed to the topic receives them.

The standard AWS variables (endpoint, throwaway credentials) are set for this process, exactly as
a user pointing the worker at moto by hand would set them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cli.commands.bootstrap import bootstrap
from features.dynamodb import DynamoDBFeatureStore, table_name
from features.eventfile import describe_paths, read_event_paths
from features.events import Event, event_to_json, validate_event
from features.exceptions import EventParseError
from localaws import ChildServer
from plumbing.clients import AwsClients
from worker.exceptions import UsageError
from worker.metrics import Metrics
from worker.runtime import run_worker
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


def use_local_aws(endpoint: str) -> None:
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_REGION", "us-east-1")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def check_local_options(days: int, live_days: int, rate: float, events: Sequence[str] | None) -> None:
    """The options, before the default bundle is trained or any server started."""
    if not (math.isfinite(rate) and rate >= 0):
        raise UsageError(f"--rate {rate:g}: must be 0 (as fast as possible) or a number of events per second")
    if events is None and live_days > days:
        raise UsageError(
            f"--live-days {live_days} is more than --days {days}: the live days are the last of the "
            "simulated history"
        )


def run_local(
    settings: Settings,
    customers: int,
    days: int,
    live_days: int,
    seed: int,
    events: Sequence[str] | None,
    rate: float,
) -> int:
    """moto and the model endpoint each get a process of their own, as AWS and SageMaker would be:
    the worker in this process then competes with neither for the interpreter. Every option, and
    the events (read, or simulated), are checked before the default bundle is trained."""
    check_local_options(days, live_days, rate, events)
    loaded = load_events(customers, days, seed, events)
    try:
        from jobs.training import ensure_default_bundle
    except ImportError as exc:
        raise UsageError(
            f"the local endpoint needs the model extra ({exc.name} missing): pip install -e '.[model,local]'"
        ) from None
    bundle_dir = ensure_default_bundle(progress=True)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM cleans up like Ctrl-C: no orphaned servers
    moto = ChildServer([sys.executable, "-m", "localaws", "--port", "0"], "moto")
    try:
        use_local_aws(moto.url)
        say(f"local AWS (moto) at {moto.url}")
        churn_model = str(Path(sys.executable).with_name("churn-model"))
        endpoint = ChildServer(
            [churn_model, "serve", "--bundle", str(bundle_dir), "--port", "0"], "model endpoint"
        )
        try:
            os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = endpoint.url
            say(f"local model endpoint at {endpoint.url} (bundle {bundle_dir})")
            return asyncio.run(_run(settings, loaded, live_days, rate))
        finally:
            endpoint.stop()
    finally:
        moto.stop()


@dataclass
class DriveResult:
    metrics: Metrics
    received: Counter[str]
    sent: int
    seconds: float


async def _run(settings: Settings, events: list[Event], live_days: int, rate: float) -> int:
    history, live = split_events(events, live_days)
    say(
        f"{len(history):,} historical events -> feature store; {len(live):,} live events -> SQS at "
        f"{f'{rate:g}/s' if rate else 'full speed'}"
    )
    result = await drive(settings, history, live, rate, show_alerts=True)
    _summary(result)
    return 0


async def drive(
    settings: Settings, history: list[Event], live: list[Event], rate: float, show_alerts: bool
) -> DriveResult:
    """Bootstrap, preload `history`, run the worker, send `live` through SQS at `rate`, wait until
    it is all processed, stop the worker. Needs AWS_ENDPOINT_URL[_SAGEMAKER_RUNTIME] set."""
    settings = settings.model_copy(update={"sqs_wait_seconds": 1, "health_port": 0, "sqs_pollers": 4})
    resources = {r.setting: r.value for r in await bootstrap(settings) if r.setting}
    settings = settings.model_copy(
        update={
            "sqs_queue_url": resources["CHURN_SQS_QUEUE_URL"],
            "dlq_url": resources["CHURN_DLQ_URL"],
            "alerts_topic_arn": resources["CHURN_ALERTS_TOPIC_ARN"],
        }
    )
    now = datetime.now(UTC)
    metrics = Metrics()
    stop = asyncio.Event()
    received: Counter[str] = Counter()
    async with AwsClients(settings.aws_region, "dynamodb", "sqs", "sns") as aws:
        await _preload(aws, settings, history, now)
        tail_url = await _subscribe_printer(aws, settings)
        started = time.time()
        if rate <= 0:  # full speed: a backlog waiting for the worker, as after a deploy or an outage
            await _send(aws.sqs, settings.sqs_queue_url or "", live, rate)
        worker = asyncio.create_task(run_worker(settings, stop=stop, metrics=metrics))
        printer = asyncio.create_task(_print_alerts(aws.sqs, tail_url, received, show_alerts))
        try:
            if rate > 0:
                await _send(aws.sqs, settings.sqs_queue_url or "", live, rate)
            await _wait_until_drained(aws.sqs, settings.sqs_queue_url or "", metrics, len(live))
            seconds = time.time() - started
            await asyncio.sleep(2)  # the last alerts travel topic -> queue -> printer
        finally:
            stop.set()
            await asyncio.gather(worker, return_exceptions=True)
            printer.cancel()
            await asyncio.gather(printer, return_exceptions=True)
            with contextlib.suppress(Exception):
                await aws.sqs.delete_queue(QueueUrl=tail_url)
    return DriveResult(metrics, received, len(live), seconds)


def load_events(
    customers: int, days: int, seed: int, events_file: str | Path | Sequence[str | Path] | None
) -> list[Event]:
    """Simulated customers up to now (or the events of event paths: files, directories, globs,
    s3:// prefixes), in time order, each event_id once, nothing in the future. Bad lines are
    skipped and counted on stderr; paths without a valid event are `no events in PATH`."""
    now = datetime.now(UTC)
    if events_file is not None:
        events: list[Event] = []
        seen: set[str] = set()
        bad = 0
        for record in read_event_paths(events_file, on_error="skip"):
            if isinstance(record.item, EventParseError):
                bad += 1
            elif record.item.event_id not in seen:
                seen.add(record.item.event_id)
                events.append(record.item)
        if bad:
            say(f"{describe_paths(events_file)}: {bad} bad lines skipped")
    else:
        from model.simulator import simulate

        say(f"simulating {customers} customers over {days} days (seed {seed})")
        sim = simulate(customers=customers, days=days, seed=seed, start=now - timedelta(days=days))
        events = [validate_event(raw) for raw in sim.events]
    return sorted((e for e in events if e.occurred_at <= now), key=lambda e: e.occurred_at)


def split_events(events: list[Event], live_days: int) -> tuple[list[Event], list[Event]]:
    """History older than `live_days` (preloaded) and the rest (sent as live traffic)."""
    cut = datetime.now(UTC) - timedelta(days=live_days)
    return [e for e in events if e.occurred_at < cut], [e for e in events if e.occurred_at >= cut]


async def _preload(aws: AwsClients, settings: Settings, history: list[Event], now: datetime) -> None:
    store = DynamoDBFeatureStore(
        aws.dynamodb,
        table_name(settings.table_prefix),
        settings.retention,
        rescore_interval=settings.rescore_interval,
    )  # re-scored without events too
    recent = [e for e in history if e.occurred_at >= now - settings.retention + timedelta(hours=1)]
    for start in range(0, len(recent), 1000):
        await store.apply(recent[start : start + 1000], now=now)


async def _send(sqs: SQSClient, queue_url: str, events: list[Event], rate: float) -> None:
    """Live traffic at `rate` events/s (0: as fast as SQS takes it), in batches of up to 10."""
    started = time.monotonic()
    for start in range(0, len(events), 10):
        if rate > 0:
            await asyncio.sleep(max(0.0, started + start / rate - time.monotonic()))
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "MessageBody": event_to_json(e)} for i, e in enumerate(events[start : start + 10])
        ]
        await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


async def _subscribe_printer(aws: AwsClients, settings: Settings) -> str:
    sqs, sns = aws.sqs, aws.sns
    url = (await sqs.create_queue(QueueName=f"local-alerts-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
    arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))["Attributes"][
        "QueueArn"
    ]
    await sns.subscribe(
        TopicArn=settings.alerts_topic_arn or "",
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return str(url)


async def _print_alerts(sqs: SQSClient, url: str, received: Counter[str], show: bool) -> None:
    while True:
        response = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in response.get("Messages", []):
            alert = json.loads(message["Body"])
            received[alert["type"]] += 1
            await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if not show:
                continue
            risk = alert.get("churn_probability") or alert.get("churn_risk")
            risk_text = f" (30-day churn risk {risk:.0%})" if isinstance(risk, int | float) else ""
            print(
                f"[{alert['severity']:<8}] {alert['type']:<22} {alert['customer_id']}: {alert.get('message') or ''}"
                f"{risk_text} -> {alert.get('recommendation')}",
                flush=True,
            )


async def _wait_until_drained(sqs: SQSClient, url: str, metrics: Metrics, sent: int) -> None:
    last_report = 0.0
    while True:
        attrs = (
            await sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )
        )["Attributes"]
        waiting = int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )
        if time.monotonic() - last_report > 5:
            say(f"  processed {int(metrics.total('events_in')):,}/{sent:,} events, {waiting:,} in the queue")
            last_report = time.monotonic()
        if waiting == 0 and metrics.total("events_in") >= sent:
            return
        await asyncio.sleep(0.5)


def _summary(result: DriveResult) -> None:
    metrics, received, sent, seconds = result.metrics, result.received, result.sent, result.seconds
    latency = metrics.quantiles("event_to_alert_latency_ms")
    say("")
    say(
        f"summary: {sent:,} live events in {seconds:.1f} s ({sent / max(seconds, 1e-9):,.0f}/s); "
        f"{int(metrics.total('events_quarantined'))} quarantined; "
        f"{int(metrics.total('events_duplicate'))} duplicates"
    )
    by_type = ", ".join(f"{kind} {count}" for kind, count in sorted(received.items())) or "none"
    say(f"alerts received: {sum(received.values())} ({by_type})")
    if latency:
        say(f"event-to-alert latency: p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms")
