"""Feature-store figures: window updates and feature computation (memory store, one core), and
DynamoDB requests per 1,000 events on a simulated workload against moto's server.

Targets (docs/performance.md): >= 20,000 events/s in memory; <= 1 write request per customer-day touched per batch.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

from aiobotocore.session import get_session

from features.dynamodb import DynamoDBFeatureStore, create_feature_table
from features.events import SUBJECTS, Event, validate_event
from features.registry import compute_features, compute_features_batch
from features.store import MemoryFeatureStore

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def workload(customers: int, days: int, per_day: float, seed: int = 1) -> list[Event]:
    """Events of a plausible mix, time-ordered, as a stream would carry them."""
    rnd = random.Random(seed)
    kinds = (
        ["login"] * 5
        + ["message_sent"] * 2
        + ["session_completed"] * 2
        + ["session_rated", "ib_call", "session_booked", "payment_succeeded", "session_cancelled"]
    )
    events = []
    for n in range(int(customers * days * per_day)):
        cid = f"c-{rnd.randrange(customers):05d}"
        when = NOW - timedelta(seconds=rnd.uniform(0, days * 86_400))
        kind = rnd.choice(kinds)
        data: dict[str, object] = {
            "event_id": f"e-{n}",
            "customer_id": cid,
            "type": kind,
            "occurred_at": when.isoformat(),
        }
        tutor, subject = f"t-{rnd.randrange(50)}", rnd.choice(SUBJECTS)
        data.update(
            {
                "session_completed": {"subject": subject, "tutor_id": tutor, "duration_minutes": 60},
                "session_rated": {"rating": rnd.randint(1, 5), "tutor_id": tutor},
                "ib_call": {"sentiment": rnd.choice(["negative", "neutral", "positive"])},
                "session_booked": {"subject": subject, "tutor_id": tutor},
                "payment_succeeded": {"amount": 49.0},
                "session_cancelled": {"subject": subject, "cancelled_by": "customer"},
            }.get(kind, {})
        )
        events.append(validate_event(data))
    events.sort(key=lambda e: e.occurred_at)
    return events


def bench_memory() -> None:
    events = workload(customers=5_000, days=30, per_day=1.0)
    store = MemoryFeatureStore()
    batch = 500
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        store.apply_sync(events[i : i + batch], now=NOW)
    applied = time.perf_counter() - start
    start = time.perf_counter()
    for state in store._states.values():
        compute_features(state, NOW)
    computed = time.perf_counter() - start
    n, c = len(events), len(store._states)
    print(f"memory store: {n:,} events, {c:,} customers")
    print(f"  window updates:       {n / applied:>10,.0f} events/s")
    print(f"  feature computation:  {c / computed:>10,.0f} customers/s ({computed / c * 1e6:.0f} us each)")
    start = time.perf_counter()
    compute_features_batch(list(store._states.values()), NOW)
    batched = time.perf_counter() - start
    print(f"  ... one batch of all: {c / batched:>10,.0f} customers/s ({batched / c * 1e6:.0f} us each)")
    for batch in (10, 100, 500):
        store2 = MemoryFeatureStore()
        start = time.perf_counter()
        for i in range(0, len(events), batch):
            result = store2.apply_sync(events[i : i + batch], now=NOW)
            compute_features_batch(list(result.states.values()), NOW)
        both = time.perf_counter() - start
        print(
            f"  updates + features of every touched customer, batches of {batch:>3}: "
            f"{n / both:>8,.0f} events/s  (target >= 20,000)"
        )


async def bench_dynamodb() -> None:
    from localaws import start_moto

    server, endpoint = start_moto()
    events = workload(customers=500, days=3, per_day=2.0, seed=2)  # 3,000 events
    async with get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as client:
        for batch in (10, 100):  # an SQS receive; a Kinesis GetRecords slice
            table = f"bench-{batch}-features"
            await create_feature_table(client, table)
            store = DynamoDBFeatureStore(client, table)
            customer_days = 0
            start = time.perf_counter()
            for i in range(0, len(events), batch):
                chunk = events[i : i + batch]
                customer_days += len({(e.customer_id, e.occurred_at.date()) for e in chunk})
                await store.apply(chunk, now=NOW)
            seconds = time.perf_counter() - start
            writes = store.requests["TransactWriteItems"] + store.requests["PutItem"]
            reads = store.requests["BatchGetItem"] + store.requests["Query"]
            n = len(events)
            print(f"dynamodb store (moto), batches of {batch}: {n:,} events in {seconds:.1f} s")
            print(
                f"  per 1,000 events: {store.requests['TransactWriteItems'] / n * 1000:,.0f} TransactWriteItems, "
                f"{store.requests['PutItem'] / n * 1000:,.0f} PutItem (single-item writes), "
                f"{reads / n * 1000:,.0f} reads (BatchGetItem, Query)"
            )
            print(
                f"  write requests per customer-day touched per batch: {writes / customer_days:.2f}  (target <= 1)"
            )
        redelivery = DynamoDBFeatureStore(client, table)  # every event a duplicate now
        for i in range(0, len(events), 100):
            await redelivery.apply(events[i : i + 100], now=NOW)
        print(
            f"  full redelivery: {redelivery.requests['TransactWriteItems'] + redelivery.requests['PutItem']} writes, "
            f"{redelivery.requests['BatchGetItem']} reads (duplicates cost reads only)"
        )
    server.stop()


if __name__ == "__main__":
    bench_memory()
    asyncio.run(bench_dynamodb())
