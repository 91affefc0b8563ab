"""`churn-worker outcomes`: the outcomes file (docs/contracts.md, Outcomes files) of an event log or
archive.

Reads every event file the paths name (files, directories, globs, `s3://bucket/prefix/` such as
the worker's archive, `--since` leaving out older date partitions unread) and writes one line per
customer: the latest churn after the latest sign-up, or null (`features.churn_from_events`). The
file is what `churn-model train/evaluate/compare --outcomes`, `backtest`, `tune`, `uplift` and
`shadow report` read.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tqdm import tqdm

from cli.commands.checks import writable_file
from features.churn_from_events import derive_outcomes, write_outcomes
from features.eventfile import event_sources, no_events_error


@dataclass(frozen=True)
class OutcomesRequest:
    events: list[str]
    out: Path
    since: date | None = None
    on_error: str = "stop"
    as_json: bool = False


def run_outcomes(request: OutcomesRequest) -> int:
    writable_file(request.out, "--out")  # before reading an archive for minutes
    sources = event_sources(request.events, request.since.isoformat() if request.since else None)
    bar = tqdm(total=len(sources), desc="reading event files", unit="file", file=sys.stderr, disable=None)
    try:
        derived = derive_outcomes(
            sources,
            request.on_error,
            say=lambda text: bar.write(text, file=sys.stderr),
            on_source=lambda _: bar.update(),
        )
    finally:
        bar.close()
    if not derived.events:
        skipped = f": {derived.bad_lines} bad lines skipped" if derived.bad_lines else ""
        raise no_events_error(request.events, skipped)
    write_outcomes(derived, request.out)
    summary = {"out": str(request.out), **derived.summary()}
    if request.as_json:
        print(json.dumps(summary))
    else:
        print(
            f"{request.out}: {summary['customers']:,} customers, {summary['churned']:,} churned "
            f"({summary['came_back']:,} came back after a churn), from {summary['events']:,} events in "
            f"{len(sources):,} files ({summary['duplicates']:,} duplicate sign-ups or churns counted once, "
            f"{summary['bad_lines']:,} bad lines skipped)"
        )
    return 0
