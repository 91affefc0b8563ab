"""Backtest figures: `churn-worker backtest`'s loop over 1,000,000 simulated events (10,000 customers,
90 days), in process, with the default model bundle: events/s, seconds, batches, scored rows and
peak memory (ru_maxrss). Target (issue 5): under 2 minutes and 2 GiB on this machine.

The simulated file is generated once and cached ($CHURN_BENCH_CACHE, else the system temp dir).
Options: --customers, --days, --batch-hours (the event-time batch window; several, comma-separated,
to compare), --profile (cProfile's top functions by own time). Nothing here asserts timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cached_events(customers: int, days: int, seed: int = 11) -> tuple[Path, Path]:
    from model.simulator import simulate, write_simulation

    cache = Path(os.environ.get("CHURN_BENCH_CACHE") or Path(tempfile.gettempdir()) / "churn-bench")
    events = cache / f"sim-{customers}c-{days}d-s{seed}.jsonl"
    outcomes = cache / f"sim-{customers}c-{days}d-s{seed}.outcomes.jsonl"
    if not events.exists() or not outcomes.exists():
        print(f"simulating {customers:,} customers over {days} days into {events} (once)", flush=True)
        started = time.perf_counter()
        write_simulation(simulate(customers=customers, days=days, seed=seed), events)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return events, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--batch-hours", default=None, help="event-time batch windows to try (default: the CLI's)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from worker.logs import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    from worker.backtest.runner import BacktestOptions, run_backtest
    from worker.backtest.scorer import InProcessScorer
    from worker.backtest.source import DEFAULT_WINDOW_US, HOUR_US

    events, _ = cached_events(args.customers, args.days)
    with events.open("rb") as handle:
        lines = sum(1 for _ in handle)
    print(f"events file: {events} ({lines:,} events, {events.stat().st_size / 2**20:.0f} MiB)", flush=True)
    scorer = InProcessScorer.from_bundle_dir(None)
    windows = [float(h) for h in args.batch_hours.split(",")] if args.batch_hours else [DEFAULT_WINDOW_US / HOUR_US]
    with tempfile.TemporaryDirectory() as out:
        for hours in windows:
            options = BacktestOptions(window_us=int(hours * HOUR_US), progress=False)
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started = time.perf_counter()
            result = asyncio.run(run_backtest(events, scorer, Path(out) / "alerts.jsonl", options))
            seconds = time.perf_counter() - started
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
            rows = len(result.log.columns()["t_us"])
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
            print(
                f"batch window {hours:g} h: {result.events_read:,} events in {seconds:.1f} s = "
                f"{result.events_read / seconds:,.0f} events/s; {result.batches:,} batches, {rows:,} customers scored, "
                f"{len(result.alerts.types):,} alerts; peak memory {peak:.2f} GiB (target: < 120 s, < 2 GiB)",
                flush=True,
            )


if __name__ == "__main__":
    main()
