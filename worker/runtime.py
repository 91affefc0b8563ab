"""`churn-worker run`: the long-lived worker.

One owner for client lifetimes: every aiobotocore client is opened here, in one AsyncExitStack
(`AwsClients`), and handed to the adapters through their constructors.

Next to the consumer runs the sweeper (`worker.rescore`): customers due for scoring without an
event, and alert claims whose publish never finished.

Shutdown (SIGTERM from ECS, or Ctrl-C): stop polling at once, let in-flight deliveries finish and
settle within `shutdown_grace_seconds` (ECS allows 30 s), then leave whatever is still running to
redelivery (SQS visibility timeout; Kinesis resumes from the last checkpoint). Nothing is
acknowledged that did not finish.

A fatal error (`FatalAwsError`: access denied, a missing queue, stream, table or topic; or the
Kinesis source's own fatal error) stops the worker the same way, then `run_worker` raises it: the
CLI prints one line and exits 1, so ECS restarts the task and its alarm fires, instead of a worker
that looks alive and does nothing.
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

from features.due_dynamodb import DynamoDBDueIndex
from features.dynamodb import DynamoDBFeatureStore, table_name
from plumbing.clients import SHADOW_RUNTIME, AwsClients
from worker import faultpoints
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.alerts.publisher import SnsAlertPublisher
from worker.archive import S3EventArchive
from worker.emf import EmfReporter
from worker.exceptions import FatalAwsError, UsageError, WorkerError
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.ports import Delivery, EventSource, Settlement, ShadowLog
from worker.rescore import Rescorer
from worker.scoring import CircuitBreaker, SageMakerScorer
from worker.served_log import S3ServedWriter, ServedLog, served_uri
from worker.settings import Settings, check_runnable
from worker.shadow import ShadowScoring
from worker.shadow_log import S3ShadowLog, SnsShadowLog, shadow_uri
from worker.sources.sqs import SqsDeadLetterQueue, SqsSource

log = structlog.get_logger(__name__)

SHADOW_CLOSE_SECONDS = (
    3.0  # on shutdown, after the live work: shadow scorings still running, and the log's flush
)


def worker_id(settings: Settings) -> str:
    return settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"


class HealthServer:
    """`/healthz` (the process is alive), `/readyz` (consuming, and re-scoring keeps up: 503 while
    the oldest due customer waited over twice the interval), `/metrics` (Prometheus text),
    `/metrics.json`. Bound to `CHURN_HEALTH_HOST`, 127.0.0.1 unless configured: not reachable from
    outside the task."""

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
        with contextlib.suppress(
            NotImplementedError, RuntimeError
        ):  # not the main thread: the caller owns `stop`
            loop.add_signal_handler(signum, stop.set)

    faultpoints.arm(settings.fault_kill_at)
    if settings.fault_kill_at:
        log.warning(
            "fault injection armed: this worker exits 137 at a kill point", kill_at=settings.fault_kill_at
        )
    fatal: list[BaseException] = []

    def stop_for(error: BaseException) -> None:
        if not fatal:
            fatal.append(error)
            log.error("fatal error; stopping the worker", error=str(error))
        stop.set()

    async with AwsClients(settings.aws_region, *_services(settings), on_request=metrics.count_request) as aws:
        features = table_name(settings.table_prefix)
        store = DynamoDBFeatureStore(
            aws.dynamodb, features, settings.retention, rescore_interval=settings.rescore_interval
        )
        due = DynamoDBDueIndex(aws.dynamodb, features)
        scorer = SageMakerScorer(
            aws.sagemaker_runtime,
            settings.endpoint_name,
            max_attempts=settings.scoring_max_attempts,
            breaker=CircuitBreaker(open_seconds=settings.scoring_circuit_open_seconds),
        )
        pipeline = Pipeline(
            store=store,
            scorer=scorer,
            ledger=DynamoDBAlertLedger(
                aws.dynamodb,
                alert_table_name(settings.table_prefix),
                lease=timedelta(seconds=settings.alert_claim_lease_seconds),
            ),
            publisher=SnsAlertPublisher(aws.sns, settings.alerts_topic_arn or ""),
            dlq=SqsDeadLetterQueue(aws.sqs, settings.dlq_url or ""),
            alerts=settings.alerts,
            retention=settings.retention,
            due=due,
            metrics=metrics,
            archive=S3EventArchive(aws.s3, settings.archive_s3_uri, worker_id(settings))
            if settings.archive_s3_uri
            else None,
            experiment=settings.experiment,
            control_publisher=SnsAlertPublisher(aws.sns, settings.control_topic_arn)
            if settings.control_topic_arn
            else None,
            shadow=_shadow(settings, aws, metrics),
            budgets=settings.budgets,
            # "What changed" (worker/alerts/changes.py): one try, a breaker of its own, so a slow or
            # failing explanation never opens the live scorer's circuit nor delays an alert for long.
            explainer=SageMakerScorer(
                aws.sagemaker_runtime,
                settings.endpoint_name,
                max_attempts=1,
                breaker=CircuitBreaker(open_seconds=settings.scoring_circuit_open_seconds),
            ),
        )
        rescorer = Rescorer(
            due=due,
            store=store,
            pipeline=pipeline,
            interval=settings.rescore_interval,
            retention=settings.retention,
            lease=timedelta(seconds=settings.rescore_lease_seconds),
            batch_size=settings.rescore_batch_size,
            tick=settings.rescore_tick_seconds,
            metrics=metrics,
            endpoint_available=lambda: not scorer.breaker.is_open,
        )
        pipeline.on_marked_due = rescorer.wake
        pipeline.served_log = _served_log(settings, aws, metrics)
        source = _source(settings, aws, metrics)
        consuming = asyncio.Event()

        def is_ready() -> (
            bool
        ):  # /readyz and the EMF WorkerReady metric: consuming, and re-scoring not lagging
            return consuming.is_set() and not stop.is_set() and rescorer.healthy()

        health = HealthServer(metrics, settings.health_host, settings.health_port, is_ready)
        await health.start()
        emf = (  # CloudWatch metrics for infra/alarms.yaml, through the log driver (worker/emf.py)
            asyncio.create_task(
                EmfReporter(metrics, is_ready, settings.table_prefix).run(settings.emf_interval_seconds, stop)
            )
            if settings.emf_interval_seconds > 0
            else None
        )
        log.info(
            "worker started", source=settings.source, worker_id=worker_id(settings), health_port=health.port
        )
        inflight: set[asyncio.Task[None]] = set()
        # Kinesis hands out one delivery per shard at a time: allow one in flight per shard it may hold.
        concurrency = settings.sqs_pollers if settings.source == "sqs" else max(settings.kinesis_shards, 4)
        consumer = asyncio.create_task(
            _consume(
                source,
                pipeline,
                inflight,
                concurrency,
                consuming,
                metrics,
                settings.batch_max_records,
                settings.batch_linger_ms / 1000,
                stop_for,
            )
        )
        sweeper = asyncio.create_task(rescorer.run(stop))
        if on_ready is not None:
            result = on_ready(health.port)
            if asyncio.iscoroutine(result):
                await result
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({consumer, stopper, sweeper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (consumer, sweeper):
            if task.done() and not task.cancelled() and task.exception() is not None:
                stop_for(task.exception())  # type: ignore[arg-type]  # checked just above
        # One deadline for the whole shutdown (ECS SIGKILLs the task 30 s after SIGTERM): the source's
        # stop (Kinesis waits for its in-flight deliveries and releases its leases within the grace)
        # and the in-flight batches run in parallel against it, never one grace after the other.
        deadline = asyncio.get_running_loop().time() + settings.shutdown_grace_seconds
        log.info("shutting down", in_flight=len(inflight))
        await source.stop()
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        # In-flight batches and the sweeper's current step (it stops between steps) share the grace.
        finishing: set[asyncio.Task[Any]] = set(inflight) | ({sweeper} if not sweeper.done() else set())
        if finishing:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            done, pending = await asyncio.wait(finishing, timeout=remaining)
            for task in pending:  # unsettled: the source redelivers them; claimed due customers' leases end
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            log.info(
                "in-flight work finished",
                settled=len(done - {sweeper}),
                left_for_redelivery=len(pending - {sweeper}),
            )
        if sweeper.done() and not sweeper.cancelled() and sweeper.exception() is not None:
            stop_for(sweeper.exception())  # type: ignore[arg-type]  # checked just above
        stopper.cancel()
        if pipeline.shadow is not None:  # the live work is settled: the shadow gets what grace is left
            await pipeline.shadow.close(grace=SHADOW_CLOSE_SECONDS)
        if pipeline.served_log is not None:
            await pipeline.served_log.close(grace=SHADOW_CLOSE_SECONDS)
        if emf is not None:
            emf.cancel()
        await health.stop()
    if fatal:
        log.info("worker stopped after a fatal error")
        error = fatal[0]
        # A usage error (no AWS credentials at all) stays one: the command exits 2, the user's to fix.
        raise error if isinstance(error, WorkerError | UsageError) else WorkerError(str(error))
    log.info("worker stopped")
    return 0


def _services(settings: Settings) -> list[str]:
    """The AWS clients the worker opens: S3 only with an archive, Kinesis only as the source, a
    second SageMaker runtime client only with a shadow endpoint."""
    services = ["dynamodb", "sqs", "sns", "sagemaker-runtime"]
    if settings.source == "kinesis":
        services.append("kinesis")
    if settings.archive_s3_uri:
        services.append("s3")
    if settings.shadow_endpoint_name:
        services.append(SHADOW_RUNTIME)
    return services


def _shadow(settings: Settings, aws: AwsClients, metrics: Metrics) -> ShadowScoring | None:
    """The shadow model (`worker.shadow`), its own client, breaker and timeout; its log is the
    shadow topic, else the archive bucket's `shadow/` prefix (`check_runnable` made sure of one)."""
    if not settings.shadow_endpoint_name:
        return None
    shadow_log: ShadowLog
    if settings.shadow_topic_arn:
        shadow_log = SnsShadowLog(aws.sns, settings.shadow_topic_arn)
    else:
        assert settings.archive_s3_uri is not None
        shadow_log = S3ShadowLog(aws.s3, shadow_uri(settings.archive_s3_uri), worker_id(settings))
    # One try per batch (a missed shadow scoring is only a missed comparison); the shadow's own
    # breaker (ShadowScoring's) counts timeouts as well as errors.
    scorer = SageMakerScorer(aws.sagemaker_runtime_shadow, settings.shadow_endpoint_name, max_attempts=1)
    breaker = CircuitBreaker(open_seconds=settings.scoring_circuit_open_seconds)
    log.info(
        "shadow model on",
        endpoint=settings.shadow_endpoint_name,
        log=settings.shadow_topic_arn or shadow_uri(settings.archive_s3_uri or ""),
    )
    return ShadowScoring(
        scorer,
        shadow_log,
        settings.alerts,
        settings.experiment,
        timeout=settings.shadow_timeout_seconds,
        metrics=metrics,
        breaker=breaker,
    )


def _served_log(settings: Settings, aws: AwsClients, metrics: Metrics) -> ServedLog | None:
    """The served-feature sample (`worker.served_log`), in the archive bucket; none without one."""
    if not settings.archive_s3_uri or settings.served_sample <= 0:
        log.info(
            "served-feature log off",
            reason="no CHURN_ARCHIVE_S3_URI" if not settings.archive_s3_uri else "CHURN_SERVED_SAMPLE is 0",
        )
        return None
    uri = served_uri(settings.archive_s3_uri)
    log.info("served-feature log on", log=uri, sample=settings.served_sample)
    return ServedLog(S3ServedWriter(aws.s3, uri, worker_id(settings)), settings.served_sample, metrics)


def _source(settings: Settings, aws: AwsClients, metrics: Metrics) -> EventSource:
    if settings.source == "kinesis":
        from worker.sources.kinesis import KinesisSource
        from worker.sources.leases import lease_table_name

        return KinesisSource(
            aws.kinesis,
            aws.dynamodb,
            settings.kinesis_stream or "",
            lease_table_name(settings.table_prefix),
            worker_id(settings),
            start_position=settings.kinesis_start_position,
            at_timestamp=settings.kinesis_start_timestamp,
            stop_grace=settings.shutdown_grace_seconds,
            lease_duration=settings.kinesis_lease_seconds,
            poll_interval=settings.kinesis_poll_seconds,
            metrics=metrics,
            dead_letters=SqsDeadLetterQueue(aws.sqs, settings.dlq_url or ""),
        )
    assert settings.sqs_queue_url is not None
    return SqsSource(
        aws.sqs,
        settings.sqs_queue_url,
        pollers=settings.sqs_pollers,
        wait_seconds=settings.sqs_wait_seconds,
        visibility_timeout=settings.sqs_visibility_timeout,
        max_records=settings.batch_max_records,
    )


async def _consume(
    source: EventSource,
    pipeline: Pipeline,
    inflight: set[asyncio.Task[None]],
    concurrency: int,
    consuming: asyncio.Event,
    metrics: Metrics,
    max_records: int = 100,
    linger: float = 0.05,
    on_fatal: Callable[[BaseException], None] | None = None,
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
            task = asyncio.create_task(_handle(group, pipeline, metrics, on_fatal))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            task.add_done_callback(lambda _: slots.release())
    finally:
        waiting: list[asyncio.Future[Any]] = [pumping] if getter is None else [pumping, getter]
        for future in waiting:
            future.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    if not pumping.cancelled() and pumping.exception() is not None:
        raise pumping.exception()  # type: ignore[misc]  # the source failed for good: stop the worker


async def _handle(
    group: list[Delivery],
    pipeline: Pipeline,
    metrics: Metrics,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> None:
    records = [record for delivery in group for record in delivery.records]
    try:
        settlement = await pipeline.process(records)
    except asyncio.CancelledError:
        raise
    except FatalAwsError as exc:  # no retry can fix it: leave the records, stop the worker
        settlement = Settlement(failed=records)
        if on_fatal is not None:
            on_fatal(exc)
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
