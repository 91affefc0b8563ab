"""`churn-worker run`: the long-lived worker.

One owner for client lifetimes: every aiobotocore client is opened here, in one AsyncExitStack
(`AwsClients`), and handed to the adapters through their constructors.

Shutdown (SIGTERM from ECS, or Ctrl-C): stop polling at once, let in-flight deliveries finish and
settle within `shutdown_grace_seconds` (ECS allows 30 s), then leave whatever is still running to
redelivery (SQS visibility timeout; Kinesis resumes from the last checkpoint). Nothing is
acknowledged that did not finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from features.dynamodb import DynamoDBFeatureStore, table_name
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.alerts.publisher import SnsAlertPublisher
from worker.aws import AwsClients
from worker.emf import EmfReporter
from worker.exceptions import ConfigError
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.ports import Delivery, EventSource, Settlement
from worker.scoring import SageMakerScorer
from worker.settings import Settings
from worker.sources.sqs import SqsDeadLetterQueue, SqsSource

log = structlog.get_logger(__name__)


def check_runnable(settings: Settings) -> None:
    """Fail fast, naming the setting, before opening anything."""
    missing = []
    if settings.source == "sqs" and not settings.sqs_queue_url:
        missing.append("CHURN_SQS_QUEUE_URL")
    if settings.source == "kinesis" and not settings.kinesis_stream:
        missing.append("CHURN_KINESIS_STREAM")
    if settings.source == "kinesis" and settings.kinesis_start_position == "AT_TIMESTAMP" and not (
        settings.kinesis_start_timestamp
    ):
        missing.append("CHURN_KINESIS_START_TIMESTAMP")
    if not settings.dlq_url:
        missing.append("CHURN_DLQ_URL")
    if not settings.alerts_topic_arn:
        missing.append("CHURN_ALERTS_TOPIC_ARN")
    if missing:
        raise ConfigError(
            f"set {', '.join(missing)} (or run `churn-worker bootstrap` and use the names it prints)"
        )


def worker_id(settings: Settings) -> str:
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"


class HealthServer:
    """`/healthz` (the process is alive), `/readyz` (consuming), `/metrics` (Prometheus text),
    `/metrics.json`."""

    def __init__(self, metrics: Metrics, host: str, port: int, is_ready: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._is_ready = is_ready
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._prometheus)
        app.router.add_get("/metrics.json", self._json)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # the bound port, when asked for port 0
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = self._is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _prometheus(self, _: web.Request) -> web.Response:
        return web.Response(text=self._metrics.prometheus(), content_type="text/plain")

    async def _json(self, _: web.Request) -> web.Response:
        return web.json_response(self._metrics.as_json())


async def run_worker(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[int], Awaitable[None] | None] | None = None,
    metrics: Metrics | None = None,
) -> int:
    check_runnable(settings)
    stop = stop or asyncio.Event()
    metrics = metrics or Metrics()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: the caller owns `stop`
            loop.add_signal_handler(signum, stop.set)

    services = ["dynamodb", "sqs", "sns", "sagemaker-runtime"] + (["kinesis"] if settings.source == "kinesis" else [])
    async with AwsClients(settings, *services, metrics=metrics) as aws:
        pipeline = Pipeline(
            store=DynamoDBFeatureStore(aws["dynamodb"], table_name(settings.table_prefix), settings.retention),
            scorer=SageMakerScorer(aws["sagemaker-runtime"], settings.endpoint_name,
                                   max_attempts=settings.scoring_max_attempts),
            ledger=DynamoDBAlertLedger(aws["dynamodb"], alert_table_name(settings.table_prefix),
                                       lease=timedelta(seconds=settings.alert_claim_lease_seconds)),
            publisher=SnsAlertPublisher(aws["sns"], settings.alerts_topic_arn or ""),
            dlq=SqsDeadLetterQueue(aws["sqs"], settings.dlq_url or ""),
            alerts=settings.alerts,
            retention=settings.retention,
            metrics=metrics,
        )
        source = _source(settings, aws, metrics)
        consuming = asyncio.Event()

        def is_ready() -> bool:
            return consuming.is_set() and not stop.is_set()

        health = HealthServer(metrics, settings.health_host, settings.health_port, is_ready)
        await health.start()
        emf = (  # CloudWatch metrics for infra/alarms.yaml, through the log driver (worker/emf.py)
            asyncio.create_task(EmfReporter(metrics, is_ready, settings.table_prefix).run(settings.emf_interval_seconds, stop))
            if settings.emf_interval_seconds > 0 else None
        )  # fmt: skip
        log.info("worker started", source=settings.source, worker_id=worker_id(settings), health_port=health.port)
        inflight: set[asyncio.Task[None]] = set()
        # Kinesis hands out one delivery per shard at a time: allow one in flight per shard it may hold.
        concurrency = settings.sqs_pollers if settings.source == "sqs" else max(settings.kinesis_shards, 4)
        consumer = asyncio.create_task(_consume(source, pipeline, inflight, concurrency, consuming, metrics,
                                                settings.batch_max_records, settings.batch_linger_ms / 1000))
        if on_ready is not None:
            result = on_ready(health.port)
            if asyncio.iscoroutine(result):
                await result
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down", in_flight=len(inflight))
        await source.stop()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        if inflight:
            done, pending = await asyncio.wait(inflight, timeout=settings.shutdown_grace_seconds)
            for task in pending:  # unsettled: the source redelivers them
                task.cancel()
            log.info("in-flight work finished", settled=len(done), left_for_redelivery=len(pending))
        stopper.cancel()
        if emf is not None:
            emf.cancel()
        await health.stop()
    log.info("worker stopped")
    return 0


def _source(settings: Settings, aws: AwsClients, metrics: Metrics) -> EventSource:
    if settings.source == "kinesis":
        from worker.sources.kinesis import KinesisSource
        from worker.sources.leases import lease_table_name

        return KinesisSource(
            aws["kinesis"], aws["dynamodb"], settings.kinesis_stream or "", lease_table_name(settings.table_prefix),
            worker_id(settings), start_position=settings.kinesis_start_position,
            at_timestamp=settings.kinesis_start_timestamp, stop_grace=settings.shutdown_grace_seconds,
            lease_duration=settings.kinesis_lease_seconds, poll_interval=settings.kinesis_poll_seconds,
            metrics=metrics,
        )  # fmt: skip
    assert settings.sqs_queue_url is not None
    return SqsSource(
        aws["sqs"], settings.sqs_queue_url, pollers=settings.sqs_pollers, wait_seconds=settings.sqs_wait_seconds,
        visibility_timeout=settings.sqs_visibility_timeout,
    )  # fmt: skip


async def _consume(
    source: EventSource,
    pipeline: Pipeline,
    inflight: set[asyncio.Task[None]],
    concurrency: int,
    consuming: asyncio.Event,
    metrics: Metrics,
    max_records: int = 100,
    linger: float = 0.05,
) -> None:
    """Group the deliveries that arrive within `linger` seconds (up to `max_records` records) into
    one pipeline batch: one store round per customer and one endpoint call for several SQS
    receives. Each delivery is still settled on its own."""
    slots = asyncio.Semaphore(concurrency)
    ready: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=max(concurrency * 2, max_records // 10))

    async def pump() -> None:  # a task of its own: waiting on a queue can be cancelled, a generator not
        async for delivery in source.deliveries():
            await ready.put(delivery)

    pumping = asyncio.create_task(pump())
    getter: asyncio.Future[Delivery] | None = None
    consuming.set()
    try:
        while not (pumping.done() and ready.empty()):
            # A free slot first: while every slot is busy, deliveries queue up and the next batch
            # takes them all, so batches grow with load (fewer endpoint calls per event).
            await slots.acquire()
            getter = asyncio.ensure_future(ready.get())
            await asyncio.wait({getter, pumping}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                slots.release()
                continue
            group = [getter.result()]
            deadline = asyncio.get_running_loop().time() + linger
            while sum(len(d.records) for d in group) < max_records:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    group.append(await asyncio.wait_for(ready.get(), remaining))
                except TimeoutError:
                    break
            task = asyncio.create_task(_handle(group, pipeline, metrics))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            task.add_done_callback(lambda _: slots.release())
    finally:
        waiting: list[asyncio.Future[Any]] = [pumping] if getter is None else [pumping, getter]
        for future in waiting:
            future.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def _handle(group: list[Delivery], pipeline: Pipeline, metrics: Metrics) -> None:
    records = [record for delivery in group for record in delivery.records]
    try:
        settlement = await pipeline.process(records)
    except asyncio.CancelledError:
        raise
    except Exception:  # a bug or an unexpected outage: keep running, let the records come back
        log.exception("batch failed; records left for redelivery", records=len(records))
        metrics.inc("batches_failed", reason="error")
        settlement = Settlement(failed=records)
    metrics.observe("batch_records", len(records))
    for delivery in group:
        mine = {id(record) for record in delivery.records}
        part = Settlement(
            done=[r for r in settlement.done if id(r) in mine],
            quarantined=[r for r in settlement.quarantined if id(r) in mine],
            failed=[r for r in settlement.failed if id(r) in mine],
        )
        try:
            await delivery.settle(part)
        except Exception:
            log.exception("settling a batch failed; the source will redeliver it")
