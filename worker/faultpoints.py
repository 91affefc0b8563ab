"""Named kill points: the fault-injection suite (tests/faults/) crashes a worker at an exact step.

`kill_point(name)` ends the process at once with `os._exit(137)` (what SIGKILL looks like to a
parent: no cleanup, no flush, no settle) when `CHURN_FAULT_KILL_AT` names that point, and does
nothing otherwise (a dictionary lookup when unset: cheap on the hot path). The runtime arms it
from the settings (`arm(settings.fault_kill_at)`), so only a process started with the variable set
can ever die here.

`CHURN_FAULT_KILL_AT=<point>` kills at the first pass, `<point>@<n>` at the n-th pass (counted per
process), e.g. `after_publish@3`.

The points, in the order a batch passes them:

| point                | where                                                                  |
|----------------------|------------------------------------------------------------------------|
| `after_store_commit` | the feature store wrote the batch's events; nothing scored, nothing acknowledged |
| `after_alert_claim`  | alerts claimed in the ledger (pending), not yet published                |
| `after_publish`      | alerts published to SNS, not yet marked sent in the ledger               |
| `after_mark_sent`    | alerts marked sent; the batch not yet acknowledged (SQS delete / Kinesis checkpoint) |
| `mid_sweep`          | the re-scoring sweeper claimed due customers (their leases taken) and has not scored them |
"""

from __future__ import annotations

import os
import sys

POINTS = ("after_store_commit", "after_alert_claim", "after_publish", "after_mark_sent", "mid_sweep")
KILLED_EXIT_CODE = 137  # 128 + SIGKILL, as a shell reports a killed process

_target: str | None = None
_at_pass = 1
_passes = 0


def parse(spec: str) -> tuple[str, int]:
    """`point` or `point@n` to (point, n). Unknown points are refused, so a typo in a scenario
    fails loudly instead of never killing."""
    name, _, count = spec.partition("@")
    if name not in POINTS:
        raise ValueError(f"unknown kill point {name!r}; one of {', '.join(POINTS)}")
    try:
        at_pass = int(count) if count else 1
    except ValueError:
        raise ValueError(f"kill point pass must be a whole number, got {count!r}") from None
    if at_pass < 1:
        raise ValueError(f"kill point pass must be at least 1, got {count!r}")
    return name, at_pass


def arm(spec: str | None) -> None:
    """Kill at `spec` (`point` or `point@n`); None disarms."""
    global _target, _at_pass, _passes
    _passes = 0
    _target, _at_pass = parse(spec) if spec else (None, 1)


def kill_point(name: str) -> None:
    """Die here (exit code 137, no cleanup) if this is the armed point's n-th pass."""
    global _passes
    if _target is None or name != _target:
        return
    _passes += 1
    if _passes >= _at_pass:
        print(
            f"churn-worker: killed at fault point {name} (CHURN_FAULT_KILL_AT)", file=sys.stderr, flush=True
        )
        os._exit(KILLED_EXIT_CODE)
