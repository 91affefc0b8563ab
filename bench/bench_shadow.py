"""The shadow model's cost to the live path: pipeline batches through the real `Pipeline`
with in-memory twins and an endpoint stand-in answering in 15 ms, four batches in flight as the
worker runs them, with no shadow, a shadow answering like the live model, a shadow that is down
(fails at once), and one that hangs (never answers; 5 s timeout). Prints each batch's latency
(p50/p95, from records in to settlement) and the throughput; the live path should not notice.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from features.store import MemoryFeatureStore
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.exceptions import ScoringUnavailableError
from worker.logs import configure_logging
from worker.pipeline import Pipeline
from worker.ports import Record
from worker.shadow import ShadowScoring
from worker.shadow_log import MemoryShadowLog

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
BATCHES, BATCH, IN_FLIGHT = 400, 100, 4
LATENCY = 0.015


class Endpoint:
    def __init__(self, mode: str = "up") -> None:
        self.mode = mode

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        if self.mode == "down":
            raise ScoringUnavailableError("shadow: 503")
        await asyncio.sleep(3600 if self.mode == "hang" else LATENCY)
        return [
            {
                "first_session_success_prob": 0.8,
                "predicted_session_velocity": 2.0,
                "churn_risk_14d": 0.5,
                "churn_risk_30d": 0.7,
                "supply_demand_scores": [0.0] * 20,
                "customer_health_score": 35.0,
                "feature_importance": [],
                "model_version": self.mode,
            }
            for _ in features
        ]


def batches() -> list[list[Record]]:
    out = []
    for b in range(BATCHES):
        records = []
        for i in range(BATCH):
            cid = f"c-{(b * BATCH + i) % 5000:05d}"
            when = (NOW - timedelta(hours=(b * BATCH + i) % 48)).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {"event_id": f"e-{b}-{i}", "customer_id": cid, "type": "login", "occurred_at": when}
            records.append(Record(json.dumps(body).encode(), handle=i, source_id=str(i)))
        out.append(records)
    return out


async def run(shadow_mode: str | None) -> tuple[list[float], float, dict[str, float]]:
    pipeline = Pipeline(
        store=MemoryFeatureStore(),
        scorer=Endpoint(),
        ledger=MemoryAlertLedger(),
        publisher=MemoryAlertPublisher(),
        dlq=None,
        alerts=AlertsConfig(),  # type: ignore[arg-type]
        retention=timedelta(days=35),
        clock=lambda: NOW,
    )
    if shadow_mode is not None:
        pipeline.shadow = ShadowScoring(
            Endpoint(shadow_mode), MemoryShadowLog(), AlertsConfig(), timeout=5.0, metrics=pipeline.metrics
        )
    work = batches()
    latencies: list[float] = []
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(records: list[Record]) -> None:
        async with slots:
            started = time.perf_counter()
            await pipeline.process(records)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one(records) for records in work))
    seconds = time.perf_counter() - started
    if pipeline.shadow is not None:
        await pipeline.shadow.close(grace=0.1)
    shadow = {
        key[1][0][1]: value for key, value in pipeline.metrics.counters.items() if key[0] == "shadow_batches"
    }
    return latencies, BATCHES * BATCH / seconds, shadow


async def main() -> None:
    configure_logging(json_logs=False, level="ERROR")
    print(
        f"{BATCHES} batches of {BATCH} events, {IN_FLIGHT} in flight, live endpoint answering in {LATENCY * 1000:.0f} ms"
    )
    for mode in (None, "down", "hang", "up", None):  # the baseline again last: the machine drifts
        latencies, rate, shadow = await run(mode)
        p50, p95 = np.percentile(latencies, [50, 95])
        label = {
            None: "no shadow",
            "up": "shadow answering",
            "down": "shadow down",
            "hang": "shadow hanging",
        }[mode]
        print(
            f"  {label:<17} batch latency p50 {p50:6.1f} ms, p95 {p95:6.1f} ms; {rate:8,.0f} events/s; "
            f"shadow batches {shadow or '-'}"
        )


if __name__ == "__main__":
    asyncio.run(main())
