"""Splitting a log by customer in byte ranges: every line once, in its customer's shard, with the
line number it has in the file, whatever the piece size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.eventfile import LocalEventFile
from features.shards import (
    global_bad_lines,
    plan_pieces,
    read_shard,
    shard_count_for,
    shard_of,
    split_piece,
)


def _write_log(path: Path) -> dict[int, dict[str, object]]:
    """Events for 30 customers, with blank lines and bad lines in between; returns good lines by number."""
    good: dict[int, dict[str, object]] = {}
    lines: list[str] = []
    for i in range(300):
        number = len(lines) + 1
        if i % 37 == 5:
            lines.append("{not json")
        elif i % 41 == 7:
            lines.append("")
        elif i % 53 == 9:
            lines.append(
                json.dumps(
                    {
                        "event_id": f"x-{i}",
                        "customer_id": "c-1",
                        "type": "teleported",
                        "occurred_at": "2026-01-05T00:00:00Z",
                    }
                )
            )
        else:
            event = {
                "event_id": f"e-{i}",
                "customer_id": f"c-{i % 30}",
                "type": "login",
                "occurred_at": f"2026-01-{1 + i % 28:02d}T10:00:00Z",
            }
            good[number] = event
            lines.append(json.dumps(event))
    path.write_text("\n".join(lines) + "\n")
    return good


@pytest.mark.parametrize("piece_bytes", [64, 1000, 1 << 20])
@pytest.mark.parametrize("shards", [1, 4])
def test_every_good_line_lands_once_in_its_customers_shard_with_its_line_number(
    tmp_path: Path, piece_bytes: int, shards: int
) -> None:
    log = tmp_path / "log.jsonl"
    good = _write_log(log)
    sources = [LocalEventFile(log)]
    pieces = plan_pieces(sources, piece_bytes)
    workdir = tmp_path / "split"
    workdir.mkdir()
    results = [split_piece(piece, shards, workdir) for piece in pieces]
    seen: dict[int, dict[str, object]] = {}
    for shard in range(shards):
        for source, number, _, text in read_shard(workdir, shard, results, [str(log)]):
            event = json.loads(text)
            assert source == str(log) and number not in seen
            assert shard_of(str(event["customer_id"]), shards) == shard
            seen[number] = event
    assert seen == good
    count, examples = global_bad_lines(results)
    lines = log.read_text().splitlines()
    assert count == sum(1 for line in lines if line.startswith("{not") or "teleported" in line)
    for bad in examples:
        assert lines[bad.line - 1].startswith("{not") or "teleported" in lines[bad.line - 1], bad.describe()
    assert [b.line for b in examples] == sorted(b.line for b in examples)


def test_shard_counts_grow_with_the_input_and_divide_the_groups() -> None:
    assert shard_count_for(0, 1) == 1
    assert shard_count_for(10, 2) == 2
    assert shard_count_for(200 * 2**20, 2) == 4
    assert shard_count_for(10 * 2**40, 2) == 64
