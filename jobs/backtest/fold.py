"""One shard of a backtest: its customers' events through `worker.pipeline.Pipeline`, in process.

Every port is an in-memory twin (feature store, alert ledger, publisher, dead-letter queue) and the
clock is simulated: the shard's events, sorted by event time, are cut into batches of `window_us`
(UTC-aligned) and each batch is processed at the end of its window, so the 7/14/30-day windows,
cooldowns, `as_of` and `created_at` are those of the events. At the end of every UTC day from the
job's first to its last (the whole log's, not the shard's: every shard re-scores the same days),
the shard's active customers no event scored that day are re-scored (`DayEndRescoring`). Nothing
here depends on which other customers share the shard, so the job's results do not depend on how
it was split.

The history a backtest builds (every customer's pages, the ledger, the scoring log) is millions of
long-lived objects; CPython's cyclic garbage collector would rescan all of them on every full
collection, which cost a third of the run. After each batch the loop collects what that batch left
(only objects created since the last batch are scanned) and freezes the survivors out of the
collector's reach (`gc.freeze`). Nothing is lost: frozen objects are still freed by reference
counting, only cycles among them wait until the shard ends (`gc.unfreeze`).

A batch whose records the pipeline could not settle (only a real endpoint can fail here) stops the
backtest: a live worker would redeliver them later, a backtest would silently differ.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from features.activity import day_end_us
from features.shards import PieceResult, read_shard
from features.state import DAY_US, CustomerState, parse_iso_us
from features.store import MemoryFeatureStore
from jobs.backtest.clock import SimulatedClock
from jobs.backtest.recording import MemoryDeadLetterQueue, RecordingScorer, RecordingStore, ScoringLog
from jobs.backtest.rescoring import DayEndRescoring
from jobs.backtest.source import BadLine, Line, time_batches
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.exceptions import WorkerError
from worker.pipeline import Pipeline
from worker.scoring import Scorer

if TYPE_CHECKING:
    from jobs.backtest.runner import BacktestOptions

# Dead-letter codes that are about the clock, not the line: a late line older than retention at
# the time it is processed, as a live worker would reject it too.
TIME_CODES = frozenset({"too_old", "in_future"})


class ScorerFactory(Protocol):
    """How a shard gets its scorer, wherever it runs (picklable: it travels to Dask workers)."""

    def open(self) -> AbstractAsyncContextManager[Scorer]: ...


@dataclass(frozen=True)
class ShardTask:
    shard: int
    workdir: Path
    pieces: list[PieceResult]
    sources: list[str]
    scorer: ScorerFactory
    options: BacktestOptions
    first_day: int  # the job's first and last UTC day of events
    last_day: int


@dataclass
class ShardResult:
    shard: int
    events_read: int = 0
    applied: int = 0
    duplicates: int = 0
    left_out: Counter[str] = field(default_factory=Counter)
    unexpected: list[tuple[str, int, str, str]] = field(default_factory=list)  # (source, line, code, detail)
    windows: set[int] = field(default_factory=set)  # window ends processed
    active_customer_days: int = 0
    scored_customer_days: int = 0
    alerts: list[tuple[int, str, str, str]] = field(
        default_factory=list
    )  # (as_of µs, customer, type, body JSON)
    log: ScoringLog = field(default_factory=ScoringLog, repr=False)
    model_version: str | None = None
    peak_rss_bytes: int = 0  # the folding process's peak memory when the shard ended
    cpu_seconds: float = 0.0  # CPU the shard took in its process, model loading included (for `make bench`)
    pid: int = 0


@contextmanager
def _history_frozen_between_batches() -> Iterator[Callable[[], None]]:
    """Yields `settle()`, to call after each batch: collect the batch's garbage, freeze the rest."""

    def settle() -> None:
        gc.collect()
        gc.freeze()

    thresholds = gc.get_threshold()
    gc.set_threshold(20_000, 10, 10)  # fewer young collections: a batch allocates millions of objects
    settle()
    try:
        yield settle
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def fold_shard(task: ShardTask) -> ShardResult:
    """The shard's backtest, as a Dask task (its own event loop)."""
    return asyncio.run(fold_shard_async(task))


async def fold_shard_async(task: ShardTask) -> ShardResult:
    """The shard's backtest, in the caller's event loop."""
    started = time.process_time()
    async with task.scorer.open() as scorer:
        result = await fold_lines(_sorted_lines(task), scorer, task)
    result.cpu_seconds = time.process_time() - started
    return result


def _sorted_lines(task: ShardTask) -> tuple[list[tuple[str, int]], list[Line]]:
    """The shard's lines by event time (stable: ties keep file order), and where each came from."""
    rows = list(read_shard(task.workdir, task.shard, task.pieces, task.sources))
    rows.sort(key=lambda row: row[2])
    origins = [(source, line) for source, line, _, _ in rows]
    lines = [Line(i, text.encode(), occurred) for i, (_, _, occurred, text) in enumerate(rows)]
    return origins, lines


async def fold_lines(
    shard_lines: tuple[Sequence[tuple[str, int]], Sequence[Line]], scorer: Scorer, task: ShardTask
) -> ShardResult:
    origins, lines = shard_lines
    options = task.options
    result = ShardResult(task.shard)
    clock = SimulatedClock()
    log = result.log
    store = RecordingStore(MemoryFeatureStore(options.retention), log)
    publisher = MemoryAlertPublisher(clock=clock)
    dlq = MemoryDeadLetterQueue()
    pipeline = Pipeline(
        store=store,
        scorer=RecordingScorer(scorer, log, clock),
        ledger=MemoryAlertLedger(),
        publisher=publisher,
        dlq=dlq,
        alerts=options.alerts,
        retention=options.retention,
        clock=clock,
        experiment=options.experiment,
        control_publisher=publisher,  # both arms in alerts.jsonl, by `arm`
        # What changed: the model itself, past the scoring log (those rows are not scoring
        # instants); each row's answer depends on that row alone, so shards still agree.
        explainer=scorer,
    )

    async def known_states() -> dict[str, CustomerState]:
        return store.states

    rescoring = DayEndRescoring(pipeline, store, clock, options.retention, known_states)
    rescoring.start(day_end_us(task.first_day))

    def take_published() -> None:
        for message in publisher.messages:
            body = message.body
            as_of = parse_iso_us(body["as_of"])
            status = body.get("status") or "open"  # an escalation or a resolution: `TYPE#status`
            kind = body["type"] if status == "open" else f"{body['type']}#{status}"
            result.alerts.append((as_of, body["customer_id"], kind, json.dumps(body)))
        publisher.messages.clear()

    batches = time_batches(iter(lines), options.window_us, sys.maxsize)  # whole windows: no split by size
    with _history_frozen_between_batches() as settle:
        for batch in batches:
            if isinstance(batch, BadLine) or batch.window_end_us is None:
                continue  # cannot happen: every line was validated (and timed) when the log was split
            await rescoring.days_ending_by(batch.window_end_us - 1)  # the days this batch comes after
            take_published()
            clock.advance_to_us(batch.window_end_us)
            store.last_applied = []
            settlement = await pipeline.process(batch.records)
            if settlement.failed:
                raise WorkerError(
                    f"{len(settlement.failed)} events could not be processed at {clock().isoformat()} "
                    "(endpoint unavailable?): the backtest would differ from the live worker; try again"
                )
            rescoring.scored(store.last_applied, batch.window_end_us)
            result.windows.add(batch.window_end_us)
            result.events_read += len(batch.records)
            for quarantined in dlq.take():
                if quarantined.error_code in TIME_CODES:
                    result.left_out[quarantined.error_code] += 1
                else:  # validated when the log was split: only the pipeline's own checks land here
                    source, line = origins[quarantined.line] if quarantined.line is not None else ("?", 0)
                    result.unexpected.append((source, line, quarantined.error_code, quarantined.error_detail))
            take_published()
            await rescoring.days_ending_by(batch.window_end_us)  # the batch closed a day: its quiet customers
            take_published()
            settle()
        await rescoring.days_ending_by(day_end_us(task.last_day))  # through the log's last day
        take_published()
    result.active_customer_days = rescoring.active_customer_days
    result.scored_customer_days = rescoring.scored_customer_days
    result.applied = int(pipeline.metrics.total("events_applied"))
    result.duplicates = int(pipeline.metrics.total("events_duplicate"))
    result.model_version = log.model_version
    result.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result.pid = os.getpid()
    return result


def days_of(min_us: int, max_us: int, window_us: int) -> tuple[int, int]:
    """The first and last UTC day a job's batches run on (the last window may end a day later)."""
    last_window_end = (max_us // window_us + 1) * window_us - 1
    return min_us // DAY_US, last_window_end // DAY_US
