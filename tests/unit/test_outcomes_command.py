"""`churn-worker outcomes` on hand-made logs: who churned is the latest churn after the latest
sign-up (a customer who came back is not churned), whatever the file order; duplicates count once;
bad lines stop with exit 2 or are reported with file:line and skipped; `--since` leaves out older
archive partitions; and on the second generator's log it agrees with the generator's own outcomes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from cli.worker import main
from features.churn_outcomes import load_outcomes


def ev(eid: str, cid: str, kind: str, when: str, **extra: Any) -> str:
    body = {"event_id": eid, "customer_id": cid, "type": kind, "occurred_at": when, **extra}
    if kind == "customer_signed_up":
        body.setdefault("tier", "standard")
    return json.dumps(body)


def outcomes_of(path: Path) -> dict[str, str | None]:
    return {row["customer_id"]: row["churned_at"] for row in map(json.loads, path.read_text().splitlines())}


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    else:
        path.write_text("".join(line + "\n" for line in lines))
    return path


def test_latest_churn_after_latest_sign_up_in_any_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path / "log.jsonl",
        [
            # stays: never churns
            ev("s1", "c-stay", "customer_signed_up", "2026-10-01T09:00:00Z"),
            ev("s2", "c-stay", "login", "2026-10-02T09:00:00Z"),
            # churns, comes back, churns again: the second churn counts
            ev("a1", "c-twice", "customer_signed_up", "2026-10-01T09:00:00Z"),
            ev("a2", "c-twice", "customer_churned", "2026-10-05T09:00:00Z"),
            ev("a4", "c-twice", "customer_churned", "2026-10-20T12:30:00Z"),  # listed before the re-sign-up
            ev("a3", "c-twice", "customer_signed_up", "2026-10-10T09:00:00Z"),
            # churns, then signs up again: back, not churned
            ev("b1", "c-back", "customer_signed_up", "2026-10-01T09:00:00Z"),
            ev("b2", "c-back", "customer_churned", "2026-10-05T09:00:00Z"),
            ev("b3", "c-back", "customer_signed_up", "2026-10-09T09:00:00Z"),
            # the churn is in the file before the sign-up that precedes it in time: still churned
            ev("d2", "c-late-line", "customer_churned", "2026-10-15T00:00:00Z"),
            ev("d1", "c-late-line", "customer_signed_up", "2026-10-01T00:00:00Z"),
            # signed up before the log began: only the churn is there
            ev("e1", "c-old", "login", "2026-10-01T10:00:00Z"),
            ev("e2", "c-old", "customer_churned", "2026-10-03T10:00:00Z"),
            # churn and sign-up at the same instant: the sign-up wins, as features.activity decides
            ev("f1", "c-tie", "customer_signed_up", "2026-10-01T00:00:00Z"),
            ev("f2", "c-tie", "customer_churned", "2026-10-07T00:00:00Z"),
            ev("f3", "c-tie", "customer_signed_up", "2026-10-07T00:00:00Z"),
        ],
    )
    out = tmp_path / "outcomes.jsonl"
    assert main(["outcomes", "--events", str(log), "--out", str(out), "--json"]) == 0
    assert outcomes_of(out) == {
        "c-stay": None,
        "c-twice": "2026-10-20T12:30:00Z",
        "c-back": None,
        "c-late-line": "2026-10-15T00:00:00Z",
        "c-old": "2026-10-03T10:00:00Z",
        "c-tie": None,
    }
    assert list(outcomes_of(out)) == sorted(outcomes_of(out))  # one line per customer, by id
    summary = json.loads(capsys.readouterr().out)
    assert summary | {"out": None} == {
        "out": None,
        "customers": 6,
        "churned": 3,
        "came_back": 2,
        "events": 16,
        "duplicates": 0,
        "bad_lines": 0,
        "files": 1,
    }
    loaded = load_outcomes(out)  # the readers everyone uses accept it
    assert set(loaded.churned_at_us) == {"c-twice", "c-late-line", "c-old"}


def test_duplicates_across_files_count_once_and_change_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = [
        ev("x1", "c-1", "customer_signed_up", "2026-10-01T09:00:00Z"),
        ev("x2", "c-1", "customer_churned", "2026-10-04T09:00:00Z"),
        ev("y1", "c-2", "customer_signed_up", "2026-10-01T09:00:00Z"),
    ]
    # A redelivered batch archived twice, one of them in another date partition's object.
    write(tmp_path / "archive" / "date=2026-10-01" / "w1-a.jsonl.gz", first)
    write(tmp_path / "archive" / "date=2026-10-01" / "w2-b.jsonl.gz", first[:2])
    write(tmp_path / "archive" / "date=2026-10-04" / "w1-c.jsonl", [first[1]])
    out = tmp_path / "outcomes.jsonl"
    assert main(["outcomes", "--events", str(tmp_path / "archive"), "--out", str(out), "--json"]) == 0
    assert outcomes_of(out) == {"c-1": "2026-10-04T09:00:00Z", "c-2": None}
    summary = json.loads(capsys.readouterr().out)
    assert (summary["events"], summary["duplicates"], summary["files"]) == (6, 3, 3)


def test_since_leaves_out_older_partitions(tmp_path: Path) -> None:
    write(
        tmp_path / "a" / "date=2026-10-01" / "w.jsonl",
        [ev("x1", "c-1", "customer_churned", "2026-10-01T09:00:00Z")],
    )
    write(
        tmp_path / "a" / "date=2026-10-03" / "w.jsonl",
        [ev("x2", "c-2", "customer_churned", "2026-10-03T09:00:00Z")],
    )
    out = tmp_path / "o.jsonl"
    assert (
        main(["outcomes", "--events", str(tmp_path / "a"), "--out", str(out), "--since", "2026-10-02"]) == 0
    )
    assert outcomes_of(out) == {"c-2": "2026-10-03T09:00:00Z"}


def test_a_bad_line_stops_with_exit_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path / "log.jsonl",
        [
            ev("x1", "c-1", "customer_signed_up", "2026-10-01T09:00:00Z"),
            "{not json",
            ev("x2", "c-1", "customer_churned", "2026-10-04T09:00:00Z"),
        ],
    )
    out = tmp_path / "outcomes.jsonl"
    assert main(["outcomes", "--events", str(log), "--out", str(out)]) == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(f"churn-worker: error: {log}:2: ") and "--on-error skip" in error
    assert not out.exists()  # nothing half-written


def test_a_bad_line_skipped_is_reported_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(
        tmp_path / "log.jsonl",
        [
            ev("x1", "c-1", "customer_signed_up", "2026-10-01T09:00:00Z"),
            ev("x9", "c-1", "customer_churned", "yesterday"),
            ev("x2", "c-1", "customer_churned", "2026-10-04T09:00:00Z"),
        ],
    )
    out = tmp_path / "outcomes.jsonl"
    assert main(["outcomes", "--events", str(log), "--out", str(out), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    [report] = [line for line in captured.err.splitlines() if line.strip()]
    assert report.startswith(f"{log}:2: ") and report.endswith(": skipped")
    assert "1 churned" in captured.out and "1 bad lines skipped" in captured.out
    assert outcomes_of(out) == {"c-1": "2026-10-04T09:00:00Z"}


@pytest.mark.parametrize("args", [["--events", "/nonexistent/log.jsonl"], ["--events", "{tmp}/empty.jsonl"]])
def test_nothing_to_read_is_exit_2(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["outcomes", *args, "--out", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("churn-worker: error: ")


def test_agrees_with_the_second_generators_own_outcomes(tmp_path: Path) -> None:
    from model.altsim import generate, write_log

    log = generate(150, 70, seed=5)
    paths = write_log(log, tmp_path)
    out = tmp_path / "derived.jsonl"
    assert main(["outcomes", "--events", str(paths["events"]), "--out", str(out)]) == 0
    derived, truth = load_outcomes(out), load_outcomes(paths["outcomes"])
    assert derived.listed <= truth.listed
    assert derived.churned_at_us == {
        cid: t for cid, t in truth.churned_at_us.items() if cid in derived.listed
    }
    assert derived.churned_at_us
    came_back = {e["customer_id"] for e in log.events if e["type"] == "customer_churned"} - set(
        derived.churned_at_us
    )
    assert came_back  # the generator has customers who returned; their outcome is null
