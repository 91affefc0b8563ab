"""Training on a million events: examples per second, training time and peak memory.

`churn-model train --events LOG --outcomes FILE` on the default simulated log (6,000 customers over
120 days, about a million events, written once under the model cache), in a process of its own so
its peak resident memory can be read. Prints the time of each phase (metrics.json's `seconds`):
examples (both passes over the log), the network's fit and calibration, the baselines (the
gradient boosting is also the `gbm` candidate), the choice of candidate per churn head (and which
one serves), and the held-out evaluation, which is reported but not counted in the target.

Target: examples + training <= 10 minutes on this 2-core machine, memory <= 4 GiB. Prints numbers,
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobs.training import model_cache
from model.datasources import DEFAULT_CUSTOMERS, DEFAULT_DAYS, simulated_log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--evaluate", action="store_true", help="also time the held-out evaluation")
    parser.add_argument(
        "--generator",
        choices=("simulator", "alt"),
        default="simulator",
        help="alt: the second generator's log (model/altsim.py; try --customers 7500 --days 90 for "
        "about a million events), cached like bench_backtest.py's",
    )
    args = parser.parse_args()
    if args.generator == "alt":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_backtest import cached_alt_events

        events, outcomes = cached_alt_events(args.customers, args.days)
    else:
        events, outcomes = simulated_log(args.customers, args.days, seed=42, cache=model_cache())
    with __import__("gzip").open(events, "rt") if events.suffix == ".gz" else events.open() as handle:
        lines = sum(1 for _ in handle)
    print(f"log: {events} ({lines:,} lines, {args.customers:,} customers over {args.days} days)")
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "cli.model",
            "train",
            "--events",
            str(events),
            "--outcomes",
            str(outcomes),
            "--out",
            f"{tmp}/bundle",
            "--quiet",
            "--json",
        ]
        if not args.evaluate:
            command.append("--no-evaluate")
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            print(f"training failed: {result.stderr.strip()[-500:]}")
            return 1
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        metrics = json.loads((Path(tmp) / "bundle" / "metrics.json").read_text())
        metadata = json.loads((Path(tmp) / "bundle" / "metadata.json").read_text())
    seconds = metrics.get("seconds", {})
    log = metadata["data"]["log"]
    examples_s = seconds.get("examples", 0.0)
    counted = examples_s + sum(seconds.get(phase, 0.0) for phase in ("fit", "baselines", "candidates"))
    instants = log.get("active_instants", 0)
    print(
        f"examples: {examples_s:.0f} s for {lines:,} events = {lines / max(examples_s, 1e-9):,.0f} events/s; "
        f"{instants:,} scoring instants of active customers = {instants / max(examples_s, 1e-9):,.0f} examples/s "
        f"(training keeps every {log['sampling_every_days']['train']} days: {metadata['data']['train_rows']:,} rows)"
    )
    print(
        f"fit + calibration: {seconds.get('fit', 0):.0f} s ({metadata['training']['epochs_run']} epochs); "
        f"baselines: {seconds.get('baselines', 0):.0f} s; candidates: {seconds.get('candidates', 0):.0f} s"
    )
    from model.candidates import served_summary

    print(f"serves: {served_summary(metadata)}")
    if "evaluation" in seconds:
        print(f"held-out evaluation (not counted): {seconds['evaluation']:.0f} s")
    print(
        f"examples + training: {counted / 60:.1f} min (target <= 10 min); whole command {wall / 60:.1f} min; "
        f"peak memory {peak_gib:.2f} GiB (target <= 4 GiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
