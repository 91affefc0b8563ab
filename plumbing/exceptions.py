"""The root of every error this product raises, and the two kinds every command treats alike.

Each package has its own `exceptions.py` with a base of its own (`FeaturesError`, `ModelError`,
`WorkerError`, ...) deriving from `ChurnAlertsError`. `UsageError` is the one class for "the user
has to fix this" (a bad flag, a malformed file, an invalid setting): the command-line tools exit 2
on it and 1 on anything else (`cli/errors.py`). Packages re-export it; there is no second one.
"""

from __future__ import annotations


class ChurnAlertsError(Exception):
    """Base for every error this product raises."""


class UsageError(ChurnAlertsError):
    """Bad usage or input the user has to fix: every command exits 2 on it."""


class FatalAwsError(ChurnAlertsError):
    """An AWS error no retry can fix (access denied, a missing table, queue, stream or topic): the
    worker stops with exit code 1 and this one line (`plumbing.retry` decides what is fatal)."""
