"""A backtest: an event log through `worker.pipeline.Pipeline`, on event time, in process or on Dask.

The log is split by customer (`features.shards`: byte ranges read in parallel, every line
validated once, bad lines reported as `file:line`), each shard is folded by the live pipeline with
in-memory twins on a simulated clock (`jobs.backtest.fold`: each window's batch at the window's
end, every active customer re-scored at each UTC day's end), and the shards' results are merged in
a fixed order: alerts by (`as_of`, customer), scoring-log rows by (time, customer). Customers are
independent and every model call holds one customer group's rows (`jobs.backtest.recording`),
so the same events and config give byte-identical `alerts.jsonl` and reports whatever the number
of workers or shards (`--workers 1` runs in process, without Dask).

Events are processed in event-time order within each customer, whatever the file order (a dump
sorted by customer is fine) and however many files or S3 objects hold them (each is read by its
own task, on this process or a Dask worker; S3 objects travel without their client); a shard is
held in memory while it is folded, and the number of shards grows with the input (about 64 MB of
events per shard) to bound that. Duplicates by `event_id` count once (the pipeline's feature store
drops them, as live).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from tqdm import tqdm

from features import eventfile
from features.activity import day_end_us
from features.exceptions import EventParseError
from features.shards import (
    Piece,
    PieceResult,
    check_shard_count,
    global_bad_lines,
    plan_pieces,
    shard_count_for,
    split_task,
    total_bytes,
)
from jobs.backtest.fold import ScorerFactory, ShardResult, ShardTask, days_of, fold_shard, fold_shard_async
from jobs.backtest.recording import ScoringLog
from jobs.backtest.scorer import GivenScorer
from jobs.backtest.source import DEFAULT_WINDOW_US
from plumbing.parallel import Engine, map_shards, started
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig
from worker.exceptions import UsageError
from worker.scoring import Scorer

KEPT_BAD_LINES = 20


@dataclass
class AlertLog:
    """What the metrics need of each published alert (the full bodies are in alerts.jsonl)."""

    types: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    as_of_us: list[int] = field(default_factory=list)


@dataclass
class BacktestResult:
    events_read: int = 0
    batches: int = 0
    applied: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    bad_line_examples: list[str] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)  # too_old / in_future at processing time
    first_us: int | None = None
    last_us: int | None = None
    active_customer_days: int = 0  # (customer, day) pairs active at the day's end
    scored_customer_days: int = 0  # of those, the ones scored that day (by an event or re-scoring)
    peak_rss_by_process: dict[int, int] = field(default_factory=dict)  # pid -> peak bytes (for `make bench`)
    cpu_by_process: dict[int, float] = field(
        default_factory=dict
    )  # pid -> CPU seconds folding (for `make bench`)
    alerts: AlertLog = field(default_factory=AlertLog, repr=False)
    log: ScoringLog = field(default_factory=ScoringLog, repr=False)

    @property
    def customers(self) -> list[str]:
        return self.log.customers


@dataclass(frozen=True)
class BacktestOptions:
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    retention: timedelta = timedelta(days=35)
    on_error: str = "stop"  # stop | skip
    window_us: int = DEFAULT_WINDOW_US
    progress: bool | None = None  # None: a bar on a terminal only
    workers: int = 1  # 1: in process; more: a local Dask cluster of that many processes
    scheduler: str | None = None  # an existing Dask cluster instead
    shards: int | None = None  # None: by input size (a divisor of features.shards.GROUPS)
    # The A/B holdout: every alert gets its arm as live (a pure function of salt, customer and
    # type, so shards agree); alerts.jsonl holds both arms, each body saying which.
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)


def event_sources(events: str | Path | Sequence[Any]) -> list[Any]:
    """The files (or S3 objects) an events argument names: event paths, as every command reads them
    (a file, a directory, a glob, an `s3://bucket/prefix/`, or several: `features.eventfile`), or
    sources already listed (`EventSource`s)."""
    if isinstance(events, str | Path):
        return list(eventfile.event_sources(events))
    items = list(events)
    if items and all(isinstance(item, str | Path) for item in items):
        return list(eventfile.event_sources(items))
    if not items:
        raise UsageError("no event path given: pass a file, a directory, a glob or an s3:// prefix")
    return items


async def run_backtest(
    events: str | Path | Sequence[Any],
    scorer: Scorer | ScorerFactory,
    alerts_out: Path,
    options: BacktestOptions = BacktestOptions(),
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> BacktestResult:
    """Backtest `events` (event paths, or sources from `event_sources`) and write `alerts_out`.
    Input without a valid event is `no events in ...` (a UsageError)."""
    factory: ScorerFactory = scorer if hasattr(scorer, "open") else GivenScorer(scorer)  # type: ignore[assignment]
    engine = Engine(options.workers, options.scheduler)
    sources = event_sources(events)
    show = options.progress
    # One cluster for reading and folding, started and stopped off the event loop (Dask's sync API).
    cluster = contextlib.ExitStack()
    await asyncio.to_thread(cluster.enter_context, started(engine))
    try:
        with tempfile.TemporaryDirectory(prefix="churn-backtest-") as scratch:
            workdir = Path(scratch)
            shards = options.shards or shard_count_for(total_bytes(sources), max(engine.workers, 1))
            check_shard_count(shards)
            pieces = plan_pieces(sources)
            try:
                split = await _split(pieces, shards, workdir, engine, show)
            except EventParseError as exc:
                raise UsageError(exc.error_detail) from None
            result = _report_bad_lines(split, options, say)
            timed = [p for p in split if p.min_us is not None and p.max_us is not None]
            if not timed:
                raise eventfile.no_events_error([source.name for source in sources])
            first_us = min(p.min_us for p in timed if p.min_us is not None)
            last_us = max(p.max_us for p in timed if p.max_us is not None)
            first_day, last_day = days_of(first_us, last_us, options.window_us)
            names = [source.name for source in sources]
            tasks = [
                ShardTask(
                    shard,
                    workdir,
                    [p for p in split if shard in p.shards],
                    names,
                    factory,
                    options,
                    first_day,
                    last_day,
                )
                for shard in range(shards)
            ]
            folded = await _fold(tasks, engine, show)
    finally:
        await asyncio.to_thread(cluster.close)
    _merge(result, folded, first_us, day_end_us(last_day))
    _write_alerts(alerts_out, folded)
    return result


def _write_alerts(path: Path, folded: list[ShardResult]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for _, _, _, _, body in _ordered_alerts(folded):
            out.write(body + "\n")


async def _split(
    pieces: list[Piece], shards: int, workdir: Path, engine: Engine, progress: bool | None
) -> list[PieceResult]:
    items = [(piece, shards, workdir) for piece in pieces]
    if engine.in_process:
        return [split_task(item) for item in items]
    return await asyncio.to_thread(map_shards, split_task, items, engine, desc="reading", progress=progress)


async def _fold(tasks: list[ShardTask], engine: Engine, progress: bool | None) -> list[ShardResult]:
    """Fold every shard: here, in this event loop, or on Dask from a thread (the loop stays free)."""
    if not engine.in_process:
        return await asyncio.to_thread(
            map_shards, fold_shard, tasks, engine, desc="backtest", progress=progress
        )
    show = sys.stderr.isatty() if progress is None else progress
    return [
        await fold_shard_async(task)
        for task in tqdm(
            tasks, desc="backtest", unit="shard", file=sys.stderr, disable=not show or len(tasks) < 2
        )
    ]


def _report_bad_lines(
    split: list[PieceResult], options: BacktestOptions, say: Callable[[str], None]
) -> BacktestResult:
    result = BacktestResult()
    count, examples = global_bad_lines(split)
    if count and options.on_error == "stop":
        raise UsageError(f"{examples[0].describe()} (use --on-error skip to skip bad lines)")
    for bad in examples:
        say(f"{bad.source}:{bad.line}: skipped: {bad.error_code}: {bad.error_detail}")
    if count > len(examples):
        say(f"... and {count - len(examples)} more bad lines skipped")
    result.bad_lines = count
    result.bad_line_examples = [
        f"{bad.source}:{bad.line}: {bad.error_code}: {bad.error_detail}" for bad in examples
    ]
    return result


def _ordered_alerts(folded: list[ShardResult]) -> list[tuple[int, str, int, str, str]]:
    """Every shard's alerts by (as_of, customer), each customer's in the order its shard sent them."""
    keyed = [
        [(as_of, customer, i, kind, body) for i, (as_of, customer, kind, body) in enumerate(shard.alerts)]
        for shard in folded
    ]
    return list(heapq.merge(*(sorted(rows) for rows in keyed)))


def _merge(result: BacktestResult, folded: list[ShardResult], first_us: int, end_us: int) -> None:
    result.first_us, result.last_us = first_us, end_us
    result.events_read = sum(shard.events_read for shard in folded)
    result.applied = sum(shard.applied for shard in folded)
    result.duplicates = sum(shard.duplicates for shard in folded)
    result.batches = len(set().union(*(shard.windows for shard in folded)))
    result.active_customer_days = sum(shard.active_customer_days for shard in folded)
    result.scored_customer_days = sum(shard.scored_customer_days for shard in folded)
    for shard in folded:
        result.left_out.update(shard.left_out)
        result.peak_rss_by_process[shard.pid] = max(
            result.peak_rss_by_process.get(shard.pid, 0), shard.peak_rss_bytes
        )
        result.cpu_by_process[shard.pid] = result.cpu_by_process.get(shard.pid, 0.0) + shard.cpu_seconds
    unexpected = sorted(u for shard in folded for u in shard.unexpected)
    result.bad_lines += len(unexpected)
    result.bad_line_examples += [
        f"{s}:{n}: {code}: {detail}" for s, n, code, detail in unexpected[:KEPT_BAD_LINES]
    ]
    for as_of, customer, _, kind, _ in _ordered_alerts(
        folded
    ):  # the type carried: parsing 100 k bodies took 4 s
        if "#" in kind:
            continue  # an alert's escalation or resolution (in alerts.jsonl): not an alert of its own
        result.alerts.types.append(kind)
        result.alerts.customers.append(customer)
        result.alerts.as_of_us.append(as_of)
    result.log = ScoringLog.merged([shard.log for shard in folded])
