"""What the served-feature sample (worker/served_log.py) costs the live path: CPU per event.

The worker's pipeline in process (in-memory store, ledger and publisher; a constant scorer, so the
figure is the worker's own CPU, not a model's) over a simulated backlog in batches of 100 records,
with the served log off, at the default rate (CHURN_SERVED_SAMPLE=0.01) and at 1.0 (every scored
row, the upper bound). Each is run `ROUNDS` times, interleaved, and the least CPU is kept (the
machine is shared: the minimum is the least disturbed run). The writes themselves happen off the
path in a background task and are included, to an in-memory writer.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import numpy as np

from cli.commands.local import load_events
from features.events import event_to_json
from features.store import MemoryFeatureStore
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.logs import configure_logging
from worker.pipeline import Pipeline
from worker.ports import Record
from worker.served_log import MemoryServedWriter, ServedLog

ROUNDS = 5
BATCH = 100


class ConstantScorer:
    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        row = {
            "first_session_success_prob": 0.9,
            "predicted_session_velocity": 2.0,
            "churn_risk_14d": 0.05,
            "churn_risk_30d": 0.05,
            "supply_demand_scores": [0.0] * 20,
            "customer_health_score": 90.0,
            "model_version": "bench",
        }
        return [row] * len(features)


class NullDlq:
    async def quarantine(self, record: Record, error_code: str, error_detail: str) -> None:
        return None


async def run(bodies: list[tuple[Any, bytes]], rate: float | None) -> tuple[float, int]:
    """CPU seconds for the whole backlog, and the rows the sample wrote."""
    now = [bodies[0][0]]
    pipeline = Pipeline(
        store=MemoryFeatureStore(),
        scorer=ConstantScorer(),
        ledger=MemoryAlertLedger(),
        publisher=MemoryAlertPublisher(),
        dlq=NullDlq(),
        alerts=AlertsConfig(),
        retention=timedelta(days=35),
        clock=lambda: now[0],
    )
    writer = MemoryServedWriter()
    if rate is not None:
        pipeline.served_log = ServedLog(writer, rate)
    started = time.process_time()
    for start in range(0, len(bodies), BATCH):
        chunk = bodies[start : start + BATCH]
        now[0] = chunk[-1][0]
        await pipeline.process(
            [Record(body=b, handle=str(i), source_id=str(i)) for i, (_, b) in enumerate(chunk)]
        )
    if pipeline.served_log is not None:
        await pipeline.served_log.close()
    return time.process_time() - started, sum(len(rows) for rows in writer.days.values())


async def main() -> None:
    events = load_events(customers=150, days=30, seed=11, events_file=None)
    bodies = [(e.occurred_at, event_to_json(e).encode()) for e in events]
    print(f"{len(bodies):,} events, batches of {BATCH}, least CPU of {ROUNDS} rounds")
    best: dict[str, tuple[float, int]] = {}
    for _ in range(ROUNDS):
        for name, rate in (("off", None), ("0.01 (default)", 0.01), ("1.0 (every row)", 1.0)):
            cpu, rows = await run(bodies, rate)
            if name not in best or cpu < best[name][0]:
                best[name] = (cpu, rows)
    base = best["off"][0]
    for name, (cpu, rows) in best.items():
        print(
            f"  served sample {name:<16} {cpu / len(bodies) * 1e6:8.1f} us CPU per event "
            f"({(cpu - base) / len(bodies) * 1e6:+.1f} us vs off), {rows:,} rows logged"
        )
    print(
        f"  record() alone, per scored row: {await record_cost(0.01):.2f} us at 0.01, {await record_cost(1.0):.2f} us at 1.0"
    )
    print(json.dumps({name: round(cpu / len(bodies) * 1e6, 2) for name, (cpu, _) in best.items()}))


async def record_cost(rate: float, rows: int = 100, calls: int = 2000) -> float:
    """CPU microseconds per scored row of the hook alone (the pipeline-level figure is in the noise)."""
    from datetime import UTC, datetime

    from features.registry import FEATURE_NAMES
    from worker.alerts.rules import Prediction

    served = ServedLog(MemoryServedWriter(), rate, flush_records=10**9, max_buffered=10**9)
    customers = [f"c-{i:06d}" for i in range(rows)]
    matrix = np.random.default_rng(0).random((rows, len(FEATURE_NAMES)))
    predictions = [Prediction.from_endpoint((await ConstantScorer().score(matrix[:1]))[0])] * rows
    as_of = datetime(2026, 11, 27, tzinfo=UTC)
    started = time.process_time()
    for n in range(calls):
        served.record(customers, matrix, predictions, as_of + timedelta(seconds=n), "event")
    return (time.process_time() - started) / (rows * calls) * 1e6


if __name__ == "__main__":
    configure_logging(json_logs=False, level="WARNING")
    asyncio.run(main())
