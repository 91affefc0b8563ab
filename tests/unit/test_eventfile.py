"""Event paths: a file, a directory, a glob or several; formats; stable customer shards."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from features.eventfile import EventPathError, customer_shard, event_sources, read_events

EVENT = {"event_id": "e1", "customer_id": "c1", "type": "login", "occurred_at": "2026-01-01T10:00:00Z"}


def _jsonl(path: Path, n: int, prefix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({**EVENT, "event_id": f"{prefix}{i}"}) + "\n" for i in range(n))
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_a_directory_holds_every_event_file_below_it_in_name_order(tmp_path: Path) -> None:
    _jsonl(tmp_path / "b" / "2.jsonl.gz", 2, "b")
    _jsonl(tmp_path / "a.jsonl", 1, "a")
    _jsonl(tmp_path / ".hidden" / "x.jsonl", 1, "h")
    _jsonl(tmp_path / "sim.outcomes.jsonl", 1, "o")  # simulate writes outcomes next to events
    pd.DataFrame([{**EVENT, "event_id": "p0"}]).to_parquet(tmp_path / "c.parquet")
    (tmp_path / "notes.txt").write_text("not events")
    names = [Path(s.name).relative_to(tmp_path).as_posix() for s in event_sources(tmp_path)]
    assert names == ["a.jsonl", "b/2.jsonl.gz", "c.parquet"]
    ids = [r.item.event_id for r in read_events(event_sources(tmp_path))]  # type: ignore[union-attr]
    assert ids == ["a0", "b0", "b1", "p0"]


def test_globs_and_several_paths_each_file_once(tmp_path: Path) -> None:
    first = _jsonl(tmp_path / "d1" / "x.jsonl", 1, "x")
    _jsonl(tmp_path / "d2" / "y.jsonl", 1, "y")
    sources = event_sources([str(tmp_path / "d*" / "*.jsonl"), str(first), str(tmp_path / "d2")])
    assert [Path(s.name).name for s in sources] == ["x.jsonl", "y.jsonl"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.jsonl", "no such file or directory"),
        ("empty_dir", "holds no .jsonl"),
        ("*.nothing", "matches no"),
        ("notes.txt", "expected .jsonl"),
    ],
)
def test_paths_that_name_no_events_are_one_line_errors(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EventPathError, match=message) as caught:
        event_sources(str(tmp_path / spec))
    assert "\n" not in str(caught.value)


def test_customer_shards_are_stable_and_in_range() -> None:
    shards = [customer_shard(f"c-{i}", 8) for i in range(2000)]
    assert set(shards) == set(range(8))
    assert customer_shard("c-1", 1) == 0
    # pinned: a shard must not depend on the process or machine (Python's hash() is salted per run),
    # since shards written by one worker are read by another
    assert [customer_shard(c, 16) for c in ("c-000001", "acme:42", "u")] == [7, 1, 8]
