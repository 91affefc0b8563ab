"""Errors raised by the worker package. Messages say what to do."""

from __future__ import annotations

from features.exceptions import UsageError as _UsageError


class WorkerError(Exception):
    """Base for every error this package raises."""


class UsageError(WorkerError, _UsageError):
    """Bad command-line usage or input file: exit code 2."""


class ConfigError(UsageError):
    """An invalid config file or environment variable; the message names the key and the reason."""


class FatalAwsError(WorkerError):
    """An AWS error no retry can fix (access denied, a missing table, queue, stream or topic): the
    worker stops with exit code 1 and this one line (`worker.retry` decides what is fatal)."""


class ScoringUnavailableError(WorkerError):
    """The model endpoint is down, throttling past the retries, or its circuit is open."""


class ScoringRejectedError(WorkerError):
    """The endpoint refused the input (a 4xx ModelError): a bad request, not an outage."""
