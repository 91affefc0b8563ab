"""Day-end re-scoring in event time: every active customer scored at least once per UTC day.

The live worker re-scores quiet customers on a timer; a backtest (and anything else that replays
history through `Pipeline`) does the same at each day's scoring instant (`features.activity`):
the customers active at the day's end who were not scored during that day are read from the store
and scored then, through `Pipeline.score_customers` with the trigger "rescore", as the live
worker's sweeper does. Days without a single event are re-scored too: quiet customers are the point.
With an alert lifecycle configured (`resolve_after_hours`), each day's end also publishes the
resolutions that are due, as the sweeper's every step does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta

from features.activity import day_end_us, is_active
from features.state import DAY_US, CustomerState
from jobs.backtest.clock import SimulatedClock
from worker.exceptions import WorkerError
from worker.pipeline import Pipeline
from worker.ports import FeatureStore

RESOLVE_ALL = 1_000_000  # a day's resolutions in one go (in process there is no step to bound)
StatesSource = Callable[[], Awaitable[Mapping[str, CustomerState]]]


class DayEndRescoring:
    """`states` lists every customer the job knows (to find who is active); `store` is the pipeline's
    feature store, read for the quiet ones as the live sweeper reads it."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: FeatureStore,
        clock: SimulatedClock,
        retention: timedelta,
        states: StatesSource,
    ) -> None:
        self._pipeline = pipeline
        self._store = store
        self._clock = clock
        self._retention = retention
        self._states = states
        self._scored_day: dict[str, int] = {}  # customer -> the last UTC day they were scored on
        self._next_day: int | None = None  # the first UTC day whose end has not been handled yet
        self.active_customer_days = 0  # (customer, day) pairs active at the day's end
        self.scored_customer_days = 0  # of those, the ones scored that day (by an event or re-scoring)

    def start(self, moment_us: int) -> None:
        """Begin with the day of the first batch (idempotent)."""
        if self._next_day is None:
            self._next_day = moment_us // DAY_US

    def scored(self, customers: Iterable[str], moment_us: int) -> None:
        """These customers were scored at `moment_us` (an event batch)."""
        day = moment_us // DAY_US
        for cid in customers:
            self._scored_day[cid] = day

    async def days_ending_by(self, moment_us: int) -> None:
        """Handle every day whose end is at or before `moment_us`."""
        while self._next_day is not None and day_end_us(self._next_day) <= moment_us:
            day, as_of_us = self._next_day, day_end_us(self._next_day)
            self._next_day += 1
            states = await self._states()
            active = [cid for cid, state in states.items() if is_active(state, as_of_us, self._retention)]
            quiet = sorted(cid for cid in active if self._scored_day.get(cid, -1) < day)
            self.active_customer_days += len(active)
            self.scored_customer_days += len(active) - len(quiet)
            if self._pipeline.has_lifecycle:
                self._clock.advance_to_us(as_of_us)
                await self._pipeline.resolve_cleared(self._clock(), RESOLVE_ALL)
            if not quiet:
                continue
            self._clock.advance_to_us(as_of_us)
            outcome = await self._pipeline.score_customers(
                await self._store.get(quiet), self._clock(), "rescore"
            )
            if outcome.unscored:
                raise WorkerError(
                    f"{len(quiet)} customers could not be scored at {self._clock().isoformat()} "
                    "(endpoint unavailable?): the backtest would differ from the live worker; try again"
                )
            self.scored_customer_days += len(quiet)
            for cid in quiet:
                self._scored_day[cid] = day
