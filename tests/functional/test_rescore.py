"""Re-scoring quiet customers (issue 11) on moto's DynamoDB: the `due` index, the sweeper and the
same pipeline as event-driven scoring, on a clock the tests drive."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from features.due import DUE_INDEX, DueStats
from features.due_dynamodb import DynamoDBDueIndex
from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.state import CustomerState, to_us
from plumbing.tables import ensure_table
from tests.fakes import NOW, Clock, FeatureScorer, ListDlq, event
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.publisher import MemoryAlertPublisher
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.rescore import Rescorer

DAY = timedelta(days=1)
RETENTION = timedelta(days=35)


class CountingStore(DynamoDBFeatureStore):
    """The DynamoDB store, noting whom the sweeper read (each read is one re-scoring)."""

    read: Counter[str]

    async def get(self, customer_ids: Iterable[str]) -> dict[str, CustomerState]:
        ids = list(customer_ids)
        self.read.update(ids)
        return await super().get(ids)


@dataclass
class Worker:
    pipeline: Pipeline
    rescorer: Rescorer
    store: CountingStore
    due: DynamoDBDueIndex
    publisher: MemoryAlertPublisher
    clock: Clock


@pytest.fixture
async def tables(aws_endpoint: str, unique_prefix: str) -> tuple[str, str]:
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        features, alerts = table_name(unique_prefix), alert_table_name(unique_prefix)
        await create_feature_table(client, features)
        await create_alert_table(client, alerts)
    return features, alerts


@pytest.fixture
async def make_worker(tables: tuple[str, str]) -> AsyncIterator[Any]:
    """Workers with their own clients on shared tables, as separate processes would have."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(clock: Clock, interval: timedelta = DAY, batch_size: int = 100) -> Worker:
            client = await stack.enter_async_context(
                get_session().create_client("dynamodb", region_name="us-east-1")
            )
            store = CountingStore(client, tables[0], RETENTION, rescore_interval=interval)
            store.read = Counter()
            due = DynamoDBDueIndex(client, tables[0])
            publisher = MemoryAlertPublisher(clock=clock)
            pipeline = Pipeline(
                store=store,
                scorer=FeatureScorer(),
                ledger=DynamoDBAlertLedger(client, tables[1]),
                publisher=publisher,
                dlq=ListDlq(),
                alerts=AlertsConfig(),
                retention=RETENTION,
                due=due,
                metrics=Metrics(),
                clock=clock,
            )
            rescorer = Rescorer(
                due=due,
                store=store,
                pipeline=pipeline,
                interval=interval,
                retention=RETENTION,
                batch_size=batch_size,
                clock=clock,
                tick=0.01,
            )
            return Worker(pipeline, rescorer, store, due, publisher, clock)

        yield make


def history(cid: str, n: int = 0) -> list[Any]:
    """Signed up 20 days ago, a session and a login yesterday: active, and healthy today."""
    return [
        event(cid, "customer_signed_up", 20, n, tier="standard"),
        event(
            cid,
            "session_completed",
            1,
            n + 1,
            subject="algebra",
            tutor_id="t-1",
            duration_minutes=60,
            first_session=True,
            success=True,
        ),
        event(cid, "login", 1, n + 2),
    ]


async def sweep(worker: Worker) -> None:
    while await worker.rescorer.step():
        pass


async def test_a_customer_whose_events_stop_is_alerted_by_rescoring_alone(make_worker: Any) -> None:
    clock = Clock()
    worker: Worker = await make_worker(clock)
    settlement = await worker.pipeline.process(history("c-quiet"))
    assert len(settlement.done) == 3 and worker.publisher.bodies == []  # healthy when last seen
    alerted: dict[str, list[datetime]] = {}
    for day in range(1, 40):
        clock.now = NOW + day * DAY
        await sweep(worker)
        for body in worker.publisher.bodies:
            assert body["trigger"] == "rescore" and body["scoring"] == "model"
            alerted.setdefault(body["type"], [])
            if datetime.fromisoformat(body["created_at"]) not in alerted[body["type"]]:
                alerted[body["type"]].append(datetime.fromisoformat(body["created_at"]))
    # No event since day -1: the fake model's risk grows 0.02 a day and crosses 0.6 on day 27.
    first = NOW + 27 * DAY
    assert alerted["HIGH_CHURN_RISK"][0] == first and alerted["HEALTH_SCORE_CRITICAL"][0] == first
    for alert_type, times in alerted.items():  # never again inside a cooldown (72 h)
        assert all(b - a >= AlertsConfig().cooldown(alert_type) for a, b in itertools.pairwise(times))
    assert len(alerted["HIGH_CHURN_RISK"]) == 3  # days 27, 30 and 33; day 36 is past retention
    # Scored once a day while active (last event on day -1, retention 35 days: up to day 34); read
    # once more on day 35, found past retention, and out of the index: never read again.
    assert worker.pipeline.metrics.total("customers_rescored") == 34
    assert worker.store.read["c-quiet"] == 35


async def test_churned_customers_are_not_rescored_and_leave_the_index(make_worker: Any) -> None:
    clock = Clock()
    worker: Worker = await make_worker(clock)
    await worker.pipeline.process([*history("c-stays"), *history("c-goes", 10)])
    clock.now = NOW + timedelta(hours=1)
    await worker.pipeline.process([event("c-goes", "customer_churned", 0, 20)])
    for day in range(1, 4):
        clock.now = NOW + day * DAY + timedelta(hours=2)
        await sweep(worker)
    assert worker.store.read == Counter({"c-stays": 3})
    stats = await worker.due.stats(NOW + 400 * DAY)  # everyone still in the index, due or not
    assert stats.due == 1


async def test_two_workers_rescore_each_due_customer_once(make_worker: Any) -> None:
    clock = Clock()
    a: Worker = await make_worker(clock, batch_size=7)
    b: Worker = await make_worker(clock, batch_size=7)
    customers = [f"c-{n:02d}" for n in range(40)]
    await a.pipeline.process([e for n, cid in enumerate(customers) for e in history(cid, 10 * n)])
    clock.now = NOW + DAY + timedelta(minutes=1)
    await asyncio.gather(sweep(a), sweep(b))
    reads = a.store.read + b.store.read
    assert reads == Counter({cid: 1 for cid in customers})
    assert a.store.read and b.store.read  # both took a share
    assert (
        a.pipeline.metrics.total("customers_rescored") + b.pipeline.metrics.total("customers_rescored") == 40
    )
    assert (await a.due.stats(clock.now)).due == 0  # everyone due again in an interval


async def test_a_crash_mid_sweep_loses_nobody(make_worker: Any) -> None:
    clock = Clock()
    dead: Worker = await make_worker(clock)
    live: Worker = await make_worker(clock)
    await dead.pipeline.process([e for n in range(5) for e in history(f"c-{n}", 10 * n)])
    clock.now = NOW + DAY + timedelta(minutes=1)
    claims, more = await dead.due.claim_due(clock.now, 100, timedelta(minutes=2))  # ... and dies here
    assert len(claims) == 5 and not more
    await sweep(live)
    assert live.store.read == Counter()  # the leases hold
    clock.now += timedelta(minutes=3)
    await sweep(live)
    assert live.store.read == Counter({f"c-{n}": 1 for n in range(5)})  # due again, scored once


async def test_an_event_moves_the_due_time_without_an_extra_write(make_worker: Any) -> None:
    clock = Clock()
    worker: Worker = await make_worker(clock)
    await worker.pipeline.process(history("c-busy"))
    writes = sum(
        worker.store.requests[op] for op in ("TransactWriteItems", "PutItem", "BatchExecuteStatement")
    )
    updates = worker.due.requests["UpdateItem"]
    clock.now = NOW + timedelta(hours=20)
    await worker.pipeline.process([event("c-busy", "login", 0, 50)])  # scored by its event today
    assert (
        sum(worker.store.requests[op] for op in ("TransactWriteItems", "PutItem", "BatchExecuteStatement"))
        == writes + 1
        and worker.due.requests["UpdateItem"] == updates
    )
    clock.now = NOW + DAY + timedelta(minutes=1)  # the first due time has passed ...
    await sweep(worker)
    assert worker.store.read["c-busy"] == 0  # ... but the event pushed it on: no re-score yet
    clock.now = NOW + timedelta(hours=20) + DAY + timedelta(minutes=1)
    await sweep(worker)
    assert worker.store.read["c-busy"] == 1


async def test_metrics_and_readiness_follow_the_oldest_due_customer(make_worker: Any) -> None:
    clock = Clock()
    worker: Worker = await make_worker(clock)
    scorer_up = False
    worker.rescorer._endpoint_available = lambda: scorer_up  # an outage: nobody is scored
    await worker.pipeline.process([e for n in range(3) for e in history(f"c-{n}", 10 * n)])
    clock.now = NOW + 3 * DAY + timedelta(minutes=1)  # due since NOW + 1 day: 2 days late
    await worker.rescorer.step()
    metrics = worker.pipeline.metrics
    assert metrics.gauges["rescore_due_customers"] == 3
    assert metrics.gauges["rescore_lag_seconds"] == pytest.approx(2 * 86_400 + 60)
    assert not worker.rescorer.healthy()  # over twice the interval: /readyz says 503
    text = metrics.prometheus()
    assert "churn_rescore_due_customers 3" in text and "churn_rescore_lag_seconds" in text
    scorer_up = True
    worker.rescorer._stats_at = float("-inf")
    await sweep(worker)
    worker.rescorer._stats_at = float("-inf")
    await worker.rescorer.step()
    assert worker.rescorer.healthy() and metrics.gauges["rescore_due_customers"] == 0
    assert "churn_customers_rescored_total{} 3" in metrics.prometheus()


async def test_bootstrap_adds_the_due_index_to_a_table_made_before_it(
    aws_endpoint: str, unique_prefix: str
) -> None:
    table = table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await ensure_table(client, table, "customer_id", "bucket", "expires_at")  # the old layout
        assert await create_feature_table(client, table) is False
        described = (await client.describe_table(TableName=table))["Table"]
        [index] = described["GlobalSecondaryIndexes"]
        assert index["IndexName"] == DUE_INDEX and index["Projection"]["ProjectionType"] == "KEYS_ONLY"
        assert [k["AttributeName"] for k in index["KeySchema"]] == ["due_shard", "due_us"]
        due = DynamoDBDueIndex(client, table)
        assert await due.stats(NOW) == DueStats(0, None)
        assert to_us(NOW) > 0
