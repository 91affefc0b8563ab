"""The backtest loop: an event file through `worker.pipeline.Pipeline`, on event time, in process.

Every port is an in-memory twin (feature store, alert ledger, publisher, dead-letter queue) and the
clock is simulated: each batch is processed at the end of its event-time window, so the 7/14/30-day
windows, cooldowns, `as_of` and `created_at` are those of the events, and two runs over the same file
and config write the same bytes. Published bodies go to `alerts.jsonl` as each batch settles (memory
stays flat however many alerts there are).

Quiet customers are scored too, as the live worker re-scores them: at the end of every UTC day of
event time (`features.activity.day_end_us`), every active customer (`features.activity.is_active`)
not yet scored that day is scored through `Pipeline.rescore`, so each active customer is scored at
least once per day whether or not they had events, and the report's precision and recall count the
customers who went quiet. With the default daily batches every score happens at a day's end: the
instants training examples are built at (`churn-model train --events`).

The history a backtest builds (every customer's pages, the ledger, the scoring log) is millions of
long-lived objects; CPython's cyclic garbage collector would rescan all of them on every full
collection, which cost a third of the run. After each batch the loop collects what that batch left
(only objects created since the last batch are scanned) and freezes the survivors out of the
collector's reach (`gc.freeze`). Nothing is lost: frozen objects are still freed by reference
counting, only cycles among them wait until the backtest ends (`gc.unfreeze`).

A batch whose records the pipeline could not settle (only a real endpoint can fail here) stops the
backtest: a live worker would redeliver them later, a backtest would silently differ.
"""

from __future__ import annotations

import gc
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

from tqdm import tqdm

from features.activity import day_end_us
from features.state import DAY_US, CustomerState, to_us
from features.store import MemoryFeatureStore
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import MemoryAlertLedger
from worker.alerts.publisher import MemoryAlertPublisher
from worker.backtest.clock import SimulatedClock
from worker.backtest.recording import MemoryDeadLetterQueue, RecordingScorer, RecordingStore, ScoringLog
from worker.backtest.rescoring import DayEndRescoring
from worker.backtest.source import DEFAULT_MAX_EVENTS, DEFAULT_WINDOW_US, BadLine, read_lines, time_batches
from worker.exceptions import UsageError, WorkerError
from worker.pipeline import Pipeline
from worker.scoring import Scorer

# Dead-letter codes that are about the clock, not the line: a late line older than retention at
# the time it is processed, as a live worker would reject it too.
TIME_CODES = frozenset({"too_old", "in_future"})
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
    max_events: int = DEFAULT_MAX_EVENTS
    progress: bool | None = None  # None: a bar on a terminal only


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


async def run_backtest(
    path: Path,
    scorer: Scorer,
    alerts_out: Path,
    options: BacktestOptions = BacktestOptions(),
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> BacktestResult:
    result = BacktestResult()
    clock = SimulatedClock()
    log = result.log
    store = RecordingStore(MemoryFeatureStore(options.retention), log)
    publisher = MemoryAlertPublisher(clock=clock)
    dlq = MemoryDeadLetterQueue()
    pipeline = Pipeline(
        store=store, scorer=RecordingScorer(scorer, log, clock), ledger=MemoryAlertLedger(), publisher=publisher,
        dlq=dlq, alerts=options.alerts, retention=options.retention, clock=clock,
    )  # fmt: skip

    async def known_states() -> dict[str, CustomerState]:
        return store.states

    rescoring = DayEndRescoring(pipeline, clock, options.retention, known_states)

    def bad(number: int | None, code: str, detail: str) -> None:
        where = f"{path}:{number}" if number is not None else str(path)
        if options.on_error == "stop":
            raise UsageError(f"{where}: {code}: {detail} (use --on-error skip to skip bad lines)")
        result.bad_lines += 1
        if len(result.bad_line_examples) < KEPT_BAD_LINES:
            result.bad_line_examples.append(f"line {number}: {code}: {detail}")
        say(f"{where}: skipped: {code}: {detail}")

    def write_published(out: IO[str]) -> None:
        for message in publisher.messages:
            body = message.body
            out.write(json.dumps(body) + "\n")
            result.alerts.types.append(body["type"])
            result.alerts.customers.append(body["customer_id"])
            result.alerts.as_of_us.append(to_us(datetime.fromisoformat(body["as_of"])))
        publisher.messages.clear()

    batches = time_batches(read_lines(path), options.window_us, options.max_events, options.on_error == "stop")
    with _history_frozen_between_batches() as settle, alerts_out.open("w", encoding="utf-8") as out, tqdm(
        desc="backtest", unit="ev", unit_scale=True, file=sys.stderr, disable=None if options.progress is None else not options.progress,
    ) as bar:  # fmt: skip
        for item in batches:
            if isinstance(item, BadLine):
                bad(item.number, item.error_code, item.error_detail)
                continue
            if item.window_end_us is not None and item.earliest_us is not None:
                rescoring.start(item.window_end_us)
                await rescoring.days_ending_by(item.window_end_us - 1)  # the days this batch comes after
                write_published(out)
                clock.advance_to_us(item.window_end_us)
                result.first_us = min(result.first_us or item.earliest_us, item.earliest_us)
            now_us = to_us(clock())
            result.last_us = now_us if result.last_us is None else max(result.last_us, now_us)
            store.last_applied = []
            settlement = await pipeline.process(item.records)
            if settlement.failed:
                raise WorkerError(
                    f"{len(settlement.failed)} events could not be processed at {clock().isoformat()} "
                    "(endpoint unavailable?): the backtest would differ from the live worker; try again"
                )
            rescoring.scored(store.last_applied, now_us)
            result.batches += 1
            result.events_read += len(item.records)
            for quarantined in dlq.take():
                if quarantined.error_code in TIME_CODES:
                    result.left_out[quarantined.error_code] += 1
                else:
                    bad(quarantined.line, quarantined.error_code, quarantined.error_detail)
            write_published(out)
            await rescoring.days_ending_by(now_us)  # the batch closed a day: re-score its quiet customers
            write_published(out)
            bar.update(len(item.records))
            settle()
        if result.last_us is not None:
            await rescoring.days_ending_by(day_end_us(result.last_us // DAY_US))  # the last day of events
            write_published(out)
            result.last_us = to_us(clock())
            settle()
    result.active_customer_days = rescoring.active_customer_days
    result.scored_customer_days = rescoring.scored_customer_days
    result.applied = int(pipeline.metrics.total("events_applied"))
    result.duplicates = int(pipeline.metrics.total("events_duplicate"))
    return result
