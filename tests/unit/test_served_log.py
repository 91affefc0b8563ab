"""The served-feature sample (worker/served_log.py): deterministic by customer and day, never
blocking, bounded, dropped and counted under pressure; off without an archive."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import structlog

from features.registry import FEATURE_HASH, FEATURE_NAMES
from worker.alerts.rules import Prediction
from worker.metrics import Metrics
from worker.runtime import _served_log
from worker.served_log import OUTPUTS, MemoryServedWriter, ServedLog, is_sampled, served_uri
from worker.settings import Settings

AS_OF = datetime(2026, 11, 27, 12, 30, 0, 123456, tzinfo=UTC)


def _prediction() -> Prediction:
    return Prediction.from_endpoint(
        {
            "first_session_success_prob": 0.9,
            "predicted_session_velocity": 2.0,
            "churn_risk_14d": 0.1,
            "churn_risk_30d": 0.2,
            "supply_demand_scores": [0.0] * 20,
            "customer_health_score": 80.0,
            "model_version": "m-1",
        }
    )


def _batch(n: int) -> tuple[list[str], np.ndarray, list[Prediction | None]]:
    customers = [f"c-{i:05d}" for i in range(n)]
    return customers, np.arange(n * len(FEATURE_NAMES), dtype=float).reshape(n, -1), [_prediction()] * n


def test_sampling_is_by_customer_and_day_at_about_the_rate() -> None:
    customers = [f"c-{i}" for i in range(20_000)]
    day = [c for c in customers if is_sampled(c, "2026-11-27", 0.05)]
    assert 800 < len(day) < 1200
    assert day == [c for c in customers if is_sampled(c, "2026-11-27", 0.05)]  # same answer every time
    assert day != [c for c in customers if is_sampled(c, "2026-11-28", 0.05)]  # rotates with the day
    assert all(is_sampled(c, "2026-11-27", 1.0) for c in customers[:10])
    assert not any(is_sampled(c, "2026-11-27", 0.0) for c in customers[:10])


async def test_records_carry_what_was_scored_and_are_written_by_day() -> None:
    writer = MemoryServedWriter()
    served = ServedLog(writer, 1.0)
    customers, matrix, predictions = _batch(3)
    predictions[1] = None  # an answer outside the contract: not a served row
    served.record(customers, matrix, predictions, AS_OF, "event")
    served.record(customers[:1], matrix[:1], predictions[:1], AS_OF + timedelta(days=1), "rescore")
    await served.close()
    assert sorted(writer.days) == ["2026-11-27", "2026-11-28"]
    first = writer.days["2026-11-27"][0]
    assert first["customer_id"] == "c-00000" and first["as_of"] == "2026-11-27T12:30:00.123456Z"
    assert first["model_version"] == "m-1" and first["feature_hash"] == FEATURE_HASH
    assert first["features"] == matrix[0].tolist() and set(first["outputs"]) == set(OUTPUTS)
    assert [r["customer_id"] for r in writer.days["2026-11-27"]] == ["c-00000", "c-00002"]
    assert writer.days["2026-11-28"][0]["trigger"] == "rescore"


async def test_a_full_buffer_drops_rows_and_counts_them_and_a_failed_write_is_counted() -> None:
    metrics = Metrics()
    writer = MemoryServedWriter(down=True)
    served = ServedLog(writer, 1.0, metrics, flush_records=10_000, max_buffered=5)
    customers, matrix, predictions = _batch(8)
    served.record(customers, matrix, predictions, AS_OF, "event")  # returns at once, no I/O
    assert metrics.total("served_rows_dropped") == 3 and metrics.total("served_rows_sampled") == 5
    await served.close()
    assert metrics.total("served_write_failures") == 5 and not writer.days


async def test_record_never_waits_for_the_write() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    class SlowWriter:
        async def write(self, day: str, records: object) -> None:
            started.set()
            await release.wait()

    served = ServedLog(SlowWriter(), 1.0, flush_records=1)
    customers, matrix, predictions = _batch(2)
    served.record(customers[:1], matrix[:1], predictions[:1], AS_OF, "event")  # starts a flush
    await started.wait()
    served.record(customers[1:], matrix[1:], predictions[1:], AS_OF, "event")  # buffers: one write at a time
    release.set()
    await served.close()


def test_no_archive_no_served_log_and_start_up_says_so() -> None:
    # Another test may have configured logging at WARNING (worker.logs filters by level before any
    # processor, so capture_logs would see nothing): capture from the defaults, then put it back.
    configured = structlog.get_config()
    structlog.reset_defaults()
    try:
        with structlog.testing.capture_logs() as logs:
            assert _served_log(Settings(), None, Metrics()) is None  # type: ignore[arg-type]
    finally:
        structlog.configure(**configured)
    assert any(
        entry["event"] == "served-feature log off" and "CHURN_ARCHIVE_S3_URI" in entry["reason"]
        for entry in logs
    )
    assert Settings().served_sample == 0.01
    assert served_uri("s3://bucket/events/") == "s3://bucket/served/"
