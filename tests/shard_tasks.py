"""Shard functions for tests of `plumbing.parallel` (Dask imports them by name in its workers)."""

from __future__ import annotations

import os
from pathlib import Path


def square(item: int) -> int:
    return item * item


def square_but_die_once(item: tuple[int, str]) -> int:
    """Kills its own process the first time it sees item 3 (a marker file remembers), as an
    out-of-memory kill or a lost machine would."""
    value, marker_dir = item
    marker = Path(marker_dir) / f"died-{value}"
    if value == 3 and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(137)
    return value * value


def fail_on(item: int) -> int:
    if item == 2:
        raise ValueError(f"shard {item} is broken")
    return item
