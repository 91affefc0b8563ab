"""Backtest figures: `churn-worker backtest`'s loop over the simulator's 10,000 customers x 90 days
(1.29 M events; the target is set for 1,000,000, so seconds per million are printed too), in process,
with the default model bundle: events/s, seconds, batches, scored rows and peak memory
(ru_maxrss). Target (docs/performance.md): under 2 minutes and 2 GiB on this machine.

The simulated file is generated once and cached ($BENCH_CACHE_DIR, else the system temp dir).
Wall seconds on a machine shared with other work say little, so CPU seconds (user + system, this
process) are printed beside them. Options: --customers, --days, --batch-hours (the event-time
batch window; several, comma-separated, to compare), --breakdown (CPU seconds per pipeline stage,
by wrapping the functions the pipeline calls), --profile (cProfile's top functions by own time;
BENCH_PROFILE_TOP=N rows, default 15).
Nothing here asserts timing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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

    cache = Path(os.environ.get("BENCH_CACHE_DIR") or Path(tempfile.gettempdir()) / "churn-bench")
    events = cache / f"sim-{customers}c-{days}d-s{seed}.jsonl"
    outcomes = cache / f"sim-{customers}c-{days}d-s{seed}.outcomes.jsonl"
    if not events.exists() or not outcomes.exists():
        print(f"simulating {customers:,} customers over {days} days into {events} (once)", flush=True)
        started = time.perf_counter()
        write_simulation(simulate(customers=customers, days=days, seed=seed), events)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return events, outcomes


def cached_alt_events(customers: int, days: int, seed: int = 11) -> tuple[Path, Path]:
    """The second generator's log (model/altsim.py, structurally different from the simulator) as one
    uncompressed JSON Lines file in arrival order, the shape a team's export usually has."""
    import json

    from model.altsim import generate

    cache = Path(os.environ.get("BENCH_CACHE_DIR") or Path(tempfile.gettempdir()) / "churn-bench")
    events = cache / f"alt-{customers}c-{days}d-s{seed}.jsonl"
    outcomes = cache / f"alt-{customers}c-{days}d-s{seed}.outcomes.jsonl"
    if not events.exists() or not outcomes.exists():
        print(
            f"generating the second generator's {customers:,} customers over {days} days into {events} (once)",
            flush=True,
        )
        started = time.perf_counter()
        log = generate(customers=customers, days=days, seed=seed)
        cache.mkdir(parents=True, exist_ok=True)
        with events.with_suffix(".tmp").open("w", encoding="utf-8") as handle:
            for event in log.events:
                handle.write(json.dumps(event, separators=(",", ":")) + "\n")
        with outcomes.open("w", encoding="utf-8") as handle:
            for row in log.outcomes:
                handle.write(json.dumps(row) + "\n")
        events.with_suffix(".tmp").replace(events)
        print(f"  {time.perf_counter() - started:.0f} s", flush=True)
    return events, outcomes


STAGES = {  # (module attribute the pipeline calls, label)
    "worker.pipeline.parse_event": "parse events (pydantic)",
    "worker.pipeline.compute_features_batch": "features (window_batch + registry)",
    "features.registry.window_batch": "  of which window_batch",
    "worker.pipeline.route_alerts": "alert rules",
    "worker.alerts.rules.Prediction.from_json": "validate predictions (pydantic)",
    "features.store.MemoryFeatureStore.apply_sync": "apply to the memory store",
    "jobs.backtest.scorer.InProcessScorer.score": "model in process (predict + format)",
    "jobs.backtest.source.read_lines": "read the file (json.loads per line)",
}


def instrument() -> dict[str, float]:
    """CPU seconds per stage: wrap each function (async ones too) where the pipeline looks it up."""
    import functools
    import importlib
    import inspect

    spent: dict[str, float] = dict.fromkeys(STAGES.values(), 0.0)

    def wrap(label: str, fn: object) -> object:
        if inspect.iscoroutinefunction(fn):

            async def timed_async(*args: object, **kwargs: object) -> object:
                started = time.process_time()
                try:
                    return await fn(*args, **kwargs)  # type: ignore[operator]
                finally:
                    spent[label] += time.process_time() - started

            return functools.wraps(fn)(timed_async)  # type: ignore[arg-type]
        if inspect.isgeneratorfunction(fn):

            def timed_gen(*args: object, **kwargs: object) -> object:
                iterator = fn(*args, **kwargs)  # type: ignore[operator]
                while True:
                    started = time.process_time()
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                    finally:
                        spent[label] += time.process_time() - started
                    yield item

            return functools.wraps(fn)(timed_gen)  # type: ignore[arg-type]

        def timed(*args: object, **kwargs: object) -> object:
            started = time.process_time()
            try:
                return fn(*args, **kwargs)  # type: ignore[operator]
            finally:
                spent[label] += time.process_time() - started

        return functools.wraps(fn)(timed)  # type: ignore[arg-type]

    for path, label in STAGES.items():
        module_name, _, attribute = path.rpartition(".")
        try:
            owner: object = importlib.import_module(module_name)
        except ModuleNotFoundError:  # Class.method
            module_name, _, cls = module_name.rpartition(".")
            owner = getattr(importlib.import_module(module_name), cls)
        original = inspect.getattr_static(owner, attribute)
        if isinstance(original, classmethod):
            setattr(owner, attribute, classmethod(wrap(label, original.__func__)))  # type: ignore[arg-type]
        else:
            setattr(owner, attribute, wrap(label, getattr(owner, attribute)))
    import jobs.backtest.runner as runner

    runner.read_lines = importlib.import_module("jobs.backtest.source").read_lines  # the wrapped one
    return spent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--generator",
        choices=("simulator", "alt"),
        default="simulator",
        help="whose log: our simulator, or the second, structurally different generator "
        "(model/altsim.py; 15,000 customers x 90 days is about a million events)",
    )
    parser.add_argument(
        "--batch-hours", default=None, help="event-time batch windows to try (default: the CLI's)"
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="CPU seconds per pipeline stage")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="worker counts to compare, comma-separated (default 1,2: in process, then 2 Dask workers)",
    )
    args = parser.parse_args()

    from worker.logs import configure_logging

    configure_logging(json_logs=False, level="WARNING")
    spent = instrument() if args.breakdown else None
    from jobs.backtest.runner import BacktestOptions, run_backtest
    from jobs.backtest.scorer import BundleScorer, bundle_dir_or_default
    from jobs.backtest.source import DEFAULT_WINDOW_US, HOUR_US

    if args.generator == "alt":
        events, _ = cached_alt_events(args.customers, args.days)
    else:
        events, _ = cached_events(args.customers, args.days)
    with events.open("rb") as handle:
        lines = sum(1 for _ in handle)
    print(f"events file: {events} ({lines:,} events, {events.stat().st_size / 2**20:.0f} MiB)", flush=True)
    scorer = BundleScorer(str(bundle_dir_or_default(None)))
    windows = (
        [float(h) for h in args.batch_hours.split(",")] if args.batch_hours else [DEFAULT_WINDOW_US / HOUR_US]
    )
    worker_counts = [int(w) for w in args.workers.split(",")]
    if args.breakdown or args.profile:
        worker_counts = [1]  # the instruments see this process only
    walls: dict[int, float] = {}
    digests: dict[int, str] = {}
    critical: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as out:
        for hours, workers in [(h, w) for h in windows for w in worker_counts]:
            options = BacktestOptions(window_us=int(hours * HOUR_US), progress=False, workers=workers)
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            started, cpu_started = time.perf_counter(), cpu_seconds()
            if spent is not None:
                spent.update(dict.fromkeys(spent, 0.0))
            result = asyncio.run(run_backtest(events, scorer, Path(out) / "alerts.jsonl", options))
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(
                    int(os.environ.get("BENCH_PROFILE_TOP", "15"))
                )
            rows = len(result.log.columns()["t_us"])
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
            per_worker = max(result.peak_rss_by_process.values(), default=0) / 2**30
            per_million = 1_000_000 / result.events_read
            walls[workers] = seconds
            folding = sorted(result.cpu_by_process.values(), reverse=True)
            # Roughly the wall time with a core per worker and nothing else running: in process, all of
            # this process's CPU; on Dask, this process's (cluster, merge) plus the busiest worker's
            # folds (the workers' reading of byte ranges and their start-up are left out).
            critical[workers] = cpu if workers == 1 else cpu + (folding[0] if folding else 0.0)
            digests[workers] = hashlib.sha256((Path(out) / "alerts.jsonl").read_bytes()).hexdigest()[:16]
            print(
                f"batch window {hours:g} h, {workers} worker{'s' if workers > 1 else ''} "
                f"({'in process' if workers == 1 else 'local Dask cluster'}): {result.events_read:,} events in "
                f"{seconds:.1f} s wall = {result.events_read / seconds:,.0f} events/s; this process {cpu:.1f} s CPU; "
                f"per 1,000,000 events: {seconds * per_million:.0f} s wall; {result.batches:,} batches, "
                f"{rows:,} customer scores ({result.scored_customer_days:,} of {result.active_customer_days:,} active "
                f"customer-days), {len(result.alerts.types):,} alerts; peak memory: this process {peak:.2f} GiB, "
                f"largest worker {per_worker:.2f} GiB; alerts.jsonl sha256 {digests[workers]}; folding CPU per process "
                f"{', '.join(f'{c:.0f} s' for c in folding)}, critical path {critical[workers]:.0f} s CPU",
                flush=True,
            )
            if spent is not None:
                for label, value in sorted(spent.items(), key=lambda kv: -kv[1]):
                    print(f"    {label:<40} {value:7.1f} s CPU  ({value / cpu:.0%})", flush=True)

    if 1 in walls and len(walls) > 1:
        for workers, wall in sorted(walls.items()):
            if workers > 1:
                print(
                    f"{workers} workers / 1 worker wall time: {wall / walls[1]:.2f} (target: <= 0.65 for 2 on 2 cores)"
                )
                print(
                    f"{workers} workers / 1 worker critical-path CPU (the wall ratio on idle cores): "
                    f"{critical[workers] / critical[1]:.2f}; load average now {os.getloadavg()[0]:.1f}"
                )
        same = len(set(digests.values())) == 1
        print(f"alerts.jsonl identical across worker counts: {'yes' if same else 'NO'}")
        project(walls, lines)


def project(walls: dict[int, float], events: int) -> None:
    """1 B events on N Fargate workers, from this machine's per-worker rate."""
    best = max(walls, key=lambda w: events / walls[w] / w if w > 1 else 0)
    rate_per_worker = events / walls[best] / best if best > 1 else events / walls[1]
    print(
        f"projection for 1,000,000,000 events (assumes: {rate_per_worker:,.0f} events/s per 1-vCPU worker as "
        "measured here, shards balanced, input read from S3 at least as fast, start-up and merge ignored):"
    )
    for n in (16, 64, 256):
        hours = 1e9 / (rate_per_worker * n) / 3600
        print(f"    {n:>4} Fargate workers (1 vCPU, 4 GiB each): {hours:5.1f} h")


if __name__ == "__main__":
    main()
