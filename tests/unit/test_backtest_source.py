"""Event files to event-time batches: windows, the clock each batch runs at, bad lines."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from features.state import to_us
from jobs.backtest.clock import SimulatedClock
from jobs.backtest.source import HOUR_US, BadLine, Batch, read_lines, time_batches


def event(n: int, when: str, customer: str = "c-1") -> str:
    return json.dumps({"event_id": f"e-{n}", "customer_id": customer, "type": "login", "occurred_at": when})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


def test_batches_follow_utc_aligned_windows_and_run_at_their_latest_event(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.jsonl",
        [
            event(1, "2026-03-01T10:05:00Z"),
            event(2, "2026-03-01T10:59:59+00:00"),
            "",
            event(3, "2026-03-01T11:00:00Z"),
            event(4, "2026-03-01T10:30:00Z"),  # late: joins the batch it arrives in
            event(5, "2026-03-01T14:00:00+02:00"),  # 12:00 UTC
        ],
    )
    out = list(time_batches(read_lines(path), HOUR_US))
    assert [[r.handle for r in b.records] for b in out if isinstance(b, Batch)] == [[1, 2], [4, 5], [6]]
    assert [b.latest_us for b in out if isinstance(b, Batch)] == [
        us("2026-03-01T10:59:59+00:00"),
        us("2026-03-01T11:00:00+00:00"),
        us("2026-03-01T12:00:00+00:00"),
    ]


def test_gzip_lines_keep_their_numbers_and_bodies(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(event(1, "2026-03-01T10:05:00Z") + "\n\n" + event(2, "2026-03-01T10:06:00Z") + "\n")
    [batch] = list(time_batches(read_lines(path), HOUR_US))
    assert isinstance(batch, Batch)
    assert [(r.handle, json.loads(r.body)["event_id"]) for r in batch.records] == [(1, "e-1"), (3, "e-2")]


def test_a_line_without_a_usable_time_rides_along_for_the_pipeline_to_reject(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.jsonl",
        [
            event(1, "2026-03-01T10:05:00Z"),
            json.dumps({"event_id": "x", "occurred_at": "yesterday"}),
            event(3, "2026-03-01T10:07:00Z"),
        ],
    )
    [batch] = list(time_batches(read_lines(path), HOUR_US))
    assert isinstance(batch, Batch) and [r.handle for r in batch.records] == [1, 2, 3]


@pytest.mark.parametrize("flush", [True, False])
def test_not_json_is_a_bad_line_and_flushing_decides_the_batches(tmp_path: Path, flush: bool) -> None:
    path = write(
        tmp_path / "e.jsonl", [event(1, "2026-03-01T10:05:00Z"), "{oops", event(3, "2026-03-01T10:06:00Z")]
    )
    out = list(time_batches(read_lines(path), HOUR_US, flush_on_bad=flush))
    kinds = [type(item).__name__ for item in out]
    assert kinds == (["Batch", "BadLine", "Batch"] if flush else ["BadLine", "Batch"])
    bad = next(item for item in out if isinstance(item, BadLine))
    assert (bad.number, bad.error_code) == (2, "not_json")


def test_max_events_splits_a_busy_window(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", [event(i, f"2026-03-01T10:{i:02d}:00Z") for i in range(5)])
    sizes = [
        len(b.records) for b in time_batches(read_lines(path), HOUR_US, max_events=2) if isinstance(b, Batch)
    ]
    assert sizes == [2, 2, 1]


def test_the_clock_never_goes_back() -> None:
    clock = SimulatedClock()
    later, earlier = us("2026-03-02T00:00:00+00:00"), us("2026-03-01T00:00:00+00:00")
    assert clock.advance_to_us(later) == datetime(2026, 3, 2, tzinfo=UTC)
    assert clock.advance_to_us(earlier) == datetime(2026, 3, 2, tzinfo=UTC)
    assert clock() == clock.now == datetime(2026, 3, 2, tzinfo=UTC)
