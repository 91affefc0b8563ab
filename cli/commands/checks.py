"""Checks the commands run on their arguments before any training or network work: a run that would
fail at its end on an output it cannot write fails at once instead, with one line naming the option.
Nothing is created here: the command makes its directories when it writes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from worker.exceptions import UsageError


def writable_dir(directory: Path, option: str) -> None:
    """`directory` is a directory a file can be written in, or can be made one: its nearest existing
    ancestor is a directory a file can be written in."""
    directory = directory.expanduser()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{option} {directory}: exists and is not a directory")
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {directory}: cannot be made: {existing} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {directory}: cannot write in {existing}: {exc.strerror or exc}") from None


def writable_file(path: Path, option: str) -> None:
    """`path` names a file (not a directory) that can be written (see `writable_dir`)."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory: name the file to write")
    writable_dir(path.expanduser().parent, option)
