"""Errors raised by the worker package. Messages say what to do."""

from __future__ import annotations

from plumbing.exceptions import ChurnAlertsError, FatalAwsError, UsageError

__all__ = [
    "ConfigError",
    "FatalAwsError",
    "ScoringRejectedError",
    "ScoringUnavailableError",
    "UsageError",
    "WorkerError",
]


class WorkerError(ChurnAlertsError):
    """Base for every error this package raises."""


class ConfigError(WorkerError, UsageError):
    """An invalid config file or environment variable; the message names the key and the reason."""


class ScoringUnavailableError(WorkerError):
    """The model endpoint is down, throttling past the retries, or its circuit is open."""


class ScoringRejectedError(WorkerError):
    """The endpoint refused the input (a 4xx ModelError): a bad request, not an outage."""
