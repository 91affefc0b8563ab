"""Re-scoring quiet customers: what it costs, printed.

1. Requests and CPU per re-scored customer, with the real adapters against moto (a process of its
   own): simulated customers' history in the feature table, the clock moved one interval on, and
   the sweeper re-scores every active customer through the event pipeline's code. A constant scorer
   stands in for the endpoint (its CPU is the endpoint's, not the worker's; one invocation per
   step is counted as SageMaker's request).
2. A simulated day of sweeping a million customers' due index with the in-process twin
   (`features.due.MemoryDueIndex`, which counts requests as DynamoDB bills them): time and requests.
3. The dollars for 1 M active customers, from the measured request mix and item sizes.

Environment: BENCH_RESCORE_CUSTOMERS (default 400), BENCH_SWEEP_CUSTOMERS (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from cli.commands.local import load_events, use_local_aws
from features.due import MemoryDueIndex
from features.due_dynamodb import DynamoDBDueIndex
from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from features.state import to_us
from localaws import ChildServer
from plumbing.clients import AwsClients
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.publisher import MemoryAlertPublisher
from worker.logs import configure_logging
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.rescore import Rescorer
from worker.settings import Settings

# On-demand list prices (us-east-1): per million write / read request units.
WRU_USD, RRU_USD = 0.625, 0.125
INTERVAL = timedelta(hours=24)


class ConstantScorer:
    """An endpoint's answer for every row, at no cost to the worker's CPU."""

    calls = 0

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        self.calls += 1
        return [
            {
                "first_session_success_prob": 0.8,
                "predicted_session_velocity": 2.0,
                "churn_risk_14d": 0.1,
                "churn_risk_30d": 0.1,
                "supply_demand_scores": [0.0] * 20,
                "customer_health_score": 80.0,
                "feature_importance": [],
                "model_version": "bench",
            }
            for _ in features
        ]


class NoDlq:
    async def quarantine(self, *args: Any) -> None:
        raise AssertionError("the bench sends no bad events")


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (numbers ~ digits / 2, binary and strings
    their length, containers their members plus 3 bytes each)."""

    def value(attr: dict[str, Any]) -> int:
        ((kind, data),) = attr.items()
        if kind == "N":
            return len(str(data)) // 2 + 1
        if kind in ("S", "B"):
            return len(data)
        if kind == "M":
            return 3 + sum(len(k) + value(v) for k, v in data.items())
        if kind == "L":
            return 3 + sum(value(v) for v in data)
        return 1

    return sum(len(name) + value(attr) for name, attr in item.items())


async def requests_per_rescored_customer(customers: int) -> dict[str, float]:
    settings = Settings(table_prefix="bench-rescore-")
    metrics = Metrics()
    async with AwsClients(settings.aws_region, "dynamodb", on_request=metrics.count_request) as aws:
        features, alerts = table_name(settings.table_prefix), alert_table_name(settings.table_prefix)
        await create_feature_table(aws.dynamodb, features)
        await create_alert_table(aws.dynamodb, alerts)
        events = load_events(customers, 30, 5, None)
        now = datetime.now(UTC)
        store = DynamoDBFeatureStore(aws.dynamodb, features, settings.retention, rescore_interval=INTERVAL)
        for start in range(0, len(events), 2000):
            await store.apply(events[start : start + 2000], now)
        due = DynamoDBDueIndex(aws.dynamodb, features)
        scorer = ConstantScorer()
        later = now + INTERVAL + timedelta(minutes=1)
        pipeline = Pipeline(
            store=store,
            scorer=scorer,
            ledger=DynamoDBAlertLedger(aws.dynamodb, alerts),
            publisher=MemoryAlertPublisher(),
            dlq=NoDlq(),
            alerts=AlertsConfig(),
            retention=settings.retention,
            due=due,
            metrics=Metrics(),
            clock=lambda: later,
        )
        rescorer = Rescorer(
            due=due,
            store=store,
            pipeline=pipeline,
            interval=INTERVAL,
            retention=settings.retention,
            batch_size=100,
            clock=lambda: later,
            tick=0.01,
        )
        await rescorer._refresh_stats(later)  # the due gauge: a fixed cost per 30 s, not per customer
        await rescorer._outcome_upkeep(later)  # alert outcomes: a fixed cost per minute (and 10 minutes), too
        before = dict(metrics.counters)
        legacy_before = store.requests["Query"]  # the store's own Queries (format-1 partitions only)
        cpu, wall = time.process_time(), time.perf_counter()
        while await rescorer.step():
            pass
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rescored = int(pipeline.metrics.total("customers_rescored"))
        by_operation: dict[str, float] = defaultdict(float)
        for (name, labels), value in metrics.counters.items():
            if name == "aws_requests":
                by_operation[dict(labels)["operation"]] += value - before.get((name, labels), 0)
        profile_sizes, partition_sizes = [], []
        for cid in sorted({e.customer_id for e in events})[:100]:
            response = await aws.dynamodb.query(
                TableName=features,
                KeyConditionExpression="customer_id = :c",
                ExpressionAttributeValues={":c": {"S": cid}},
            )
            sizes = [item_bytes(item) for item in response["Items"]]
            partition_sizes.append(sum(sizes))
            profile_sizes += [item_bytes(i) for i in response["Items"] if i["bucket"]["S"] == "profile"]
    measured = max(rescored, 1)
    print(
        f"{customers} simulated customers (30 days), {rescored} active ones re-scored one interval later "
        f"in {wall:.2f} s on moto; worker CPU {cpu / measured * 1e3:.2f} ms per re-scored customer (moto's not counted)"
    )
    # The store reads by key (BatchGetItem); its Queries are for format-1 partitions only (none here).
    index_queries = by_operation.get("Query", 0) - (store.requests["Query"] - legacy_before)
    per = {op: count / measured for op, count in sorted(by_operation.items()) if count}
    print(
        "  DynamoDB requests per re-scored customer: " + ", ".join(f"{op} {n:.3f}" for op, n in per.items())
    )
    print(
        f"  SageMaker invocations per re-scored customer: {scorer.calls / max(rescored, 1):.3f} (one per step of 100)"
    )
    print(
        f"  item sizes: profile {np.mean(profile_sizes):,.0f} B, whole partition {np.mean(partition_sizes):,.0f} B "
        f"(p95 {np.percentile(partition_sizes, 95):,.0f} B)"
    )
    return {
        "partition": float(np.mean(partition_sizes)),
        "profile": float(np.mean(profile_sizes)),
        "queries": index_queries / measured,
    }


async def simulated_day(customers: int) -> float:
    """A day of a worker sweeping `customers` active customers' due index (due times spread over
    the day, as events and earlier sweeps leave them), one step of 100 every tick while any are due."""
    index = MemoryDueIndex(page_items=100)
    start = datetime(2026, 11, 27, tzinfo=UTC)
    day_us = to_us(start + INTERVAL) - to_us(start)
    for n in range(customers):
        index.put(f"c-{n}", to_us(start) + n * day_us // customers)
    wall = time.perf_counter()
    now, tick, rescored, lag = start, timedelta(seconds=5), 0, 0.0
    while now < start + INTERVAL:
        claims, more = await index.claim_due(now, 100, timedelta(minutes=2))
        for claim in claims:
            await index.complete(claim, to_us(now + INTERVAL))
            lag = max(lag, (to_us(now) - claim.due_us) / 1e6)
        rescored += len(claims)
        if not more:
            now += tick
    wall = time.perf_counter() - wall
    q, u = index.requests["Query"], index.requests["UpdateItem"]
    print(
        f"simulated day, {customers:,} active customers, one worker, a step of 100 every 5 s tick while due: "
        f"{rescored:,} re-scored in {wall:.1f} s of CPU ({wall / customers * 1e6:.1f} us per customer); "
        f"index Queries {q:,} ({q / customers * 1000:.1f} per 1,000 customers), UpdateItems {u:,} "
        f"({u / customers:.2f} per customer); worst lag {lag:.0f} s"
    )
    return q / max(rescored, 1)


def dollars(sizes: dict[str, float], index_queries: float, customers: int = 1_000_000) -> None:
    """DynamoDB on-demand: a write is 1 WRU per KB, an index entry moved 2 WRU (delete + put); a
    strongly consistent read 1 RRU per 4 KB, an eventually consistent index page 0.5 RRU per 4 KB."""
    profile_kb = max(1.0, float(np.ceil(sizes["profile"] / 1024)))
    partition_rru = max(1.0, float(np.ceil(sizes["partition"] / 4096)))
    wru = 2 * (
        profile_kb + 2
    )  # claim and completion: each an UpdateItem of the profile + its index entry moved
    rru = (
        partition_rru + 0.5 * index_queries
    )  # the customer's items (at most), its share of the index pages (0.5 RRU each)
    usd = (wru * WRU_USD + rru * RRU_USD) / 1e6
    fixed_queries = 86_400 / 60 * 16  # an idle worker queries the 16 shards once a minute (the idle back-off)
    print(f"per re-scored customer: {wru:.0f} WRU + {rru:.2f} RRU = ${usd * 1e6:.2f} per million re-scorings")
    print(
        f"per 1,000 idle customers per day: 2,000 UpdateItems, ~10-20 BatchGetItems (profiles, and segments not "
        f"cached), {1000 * index_queries:.0f} "
        f"index Queries and ~10 SageMaker invocations (calls of up to 100 rows): ${1000 * usd:.4f}/day"
    )
    print(
        f"fixed, per idle worker: {fixed_queries:,.0f} index Queries a day (16 shards a minute, 0.5 RRU each: "
        f"${fixed_queries * 0.5 * RRU_USD / 1e6:.4f}/day), plus 16-32 Queries per 30 s for the due gauge"
    )
    print(
        f"1 M active customers, each re-scored once a day (none busy enough to be scored by events): "
        f"${customers * usd:,.2f}/day = ${customers * usd * 30:,.0f}/month of DynamoDB; index storage "
        f"~{customers * 60 / 1e6:.0f} MB keys-only (${customers * 60 / 1e9 * 0.25:.2f}/month)"
    )
    print(
        f"SageMaker: {customers / 86_400:.1f} rows/s on average, 10,000 invocations of 100 a day: no instance "
        "added to the real-time endpoint the event path already runs (one ml.m5.large serves thousands of rows/s)"
    )


async def main() -> None:
    configure_logging(json_logs=False, level="WARNING")
    sizes = await requests_per_rescored_customer(int(os.environ.get("BENCH_RESCORE_CUSTOMERS", "400")))
    index_queries = await simulated_day(int(os.environ.get("BENCH_SWEEP_CUSTOMERS", "1000000")))
    dollars(sizes, index_queries)


if __name__ == "__main__":
    moto = ChildServer([sys.executable, "-m", "localaws", "--port", "0"], "moto")
    try:
        use_local_aws(moto.url)
        asyncio.run(main())
    finally:
        moto.stop()
