"""The simulated clock a backtest gives the pipeline: it reads whatever event time the runner set.

The pipeline asks its `clock` once per batch for `now` (retention checks, `as_of`, ledger windows
and cooldowns), and the in-memory publisher asks it for `created_at`. In a backtest both must follow
the events rather than the wall clock, or cooldowns would span the seconds a backtest takes instead
of the days the events span, and two runs would differ in every body.
"""

from __future__ import annotations

from datetime import UTC, datetime

from features.state import from_us


class SimulatedClock:
    """A callable clock that only moves forward, and only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC)

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        return self._now

    def advance_to_us(self, moment_us: int) -> datetime:
        """Move to `moment_us` (epoch microseconds) unless that is in the past: an event that arrives
        late does not turn time back, exactly as it would not for a live worker."""
        moment = from_us(moment_us)
        if moment > self._now:
            self._now = moment
        return self._now
