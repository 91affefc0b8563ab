"""`churn-model simulate`: write a simulated marketplace (events, outcomes, truth) to files.

`register(subparsers)` adds the subcommand to the `churn-model` parser (cli/model.py); the handler is
`run_simulate(args)`. Bad arguments are argparse errors (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cli.argtypes import day_start_or_instant, positive_int
from features.eventfile import EVENT_SUFFIXES, is_event_file


def _out(text: str) -> Path:
    if not is_event_file(text):
        raise argparse.ArgumentTypeError(f"{text!r}: the events file must end in {', '.join(EVENT_SUFFIXES)}")
    return Path(text)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `simulate` to a `churn-model` subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="simulate a tutoring marketplace: events, outcomes and ground truth",
        description="Simulate N customers over D whole UTC days: events in the worker's input shape "
        "(JSON Lines, gzipped JSON Lines or Parquet, by the --out extension), <stem>.outcomes.jsonl (who churned "
        "when) and <stem>.truth.npz (latent health, true churn probabilities, segments, per-subject supply/demand). "
        "The same seed gives the same files.",
    )
    parser.add_argument(
        "--customers", type=positive_int, required=True, metavar="N", help="customers to simulate"
    )
    parser.add_argument(
        "--days", type=positive_int, required=True, metavar="D", help="whole UTC days to simulate"
    )
    parser.add_argument("--seed", type=int, default=42, metavar="S", help="random seed (default 42)")
    parser.add_argument(
        "--out",
        type=_out,
        required=True,
        metavar="FILE",
        help="events file: .jsonl, .jsonl.gz or .parquet (also .json, .ndjson, .ndjson.gz); the other files go "
        "next to it",
    )
    parser.add_argument(
        "--start",
        type=day_start_or_instant,
        metavar="ISO",
        help="first simulated UTC day, e.g. 2026-03-01 (default 2026-01-01)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    parser.set_defaults(func=run_simulate)
    return parser


def run_simulate(args: argparse.Namespace) -> int:
    from model.simulator import simulate, write_simulation

    began = time.perf_counter()
    progress = None if not args.no_progress else False
    sim = simulate(args.customers, args.days, args.seed, start=args.start, progress=progress)
    paths = write_simulation(sim, args.out)
    churned = sum(1 for outcome in sim.outcomes if outcome["churned_at"] is not None)
    summary = {
        "events": len(sim.frame),
        "customers": len(sim.outcomes),
        "churned": churned,
        "start": sim.start.isoformat().replace("+00:00", "Z"),
        "days": sim.days,
        "seed": args.seed,
        "files": {name: str(path) for name, path in paths.items()},
        "seconds": round(time.perf_counter() - began, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"simulated {summary['events']} events for {summary['customers']} customers ({churned} churned) "
            f"over {sim.days} days from {summary['start']}: wrote {', '.join(summary['files'].values())}"
        )
    sys.stdout.flush()
    return 0
