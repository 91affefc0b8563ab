"""Errors raised by the features package."""

from __future__ import annotations


class FeaturesError(Exception):
    """Base for every error this package raises."""


class UsageError(FeaturesError):
    """Bad usage or input the user has to fix: every command exits 2 on it. The one base class of
    usage errors: `worker.exceptions.UsageError` derives from it (and the model package's should)."""


class EventParseError(UsageError):
    """A message that is not a valid event. `error_code` is for machines (DLQ attributes, metrics),
    `error_detail` one line for a person."""

    def __init__(self, error_code: str, error_detail: str) -> None:
        super().__init__(f"{error_code}: {error_detail}")
        self.error_code = error_code
        self.error_detail = error_detail


class StoreConflictError(FeaturesError):
    """Another writer kept winning the race for one customer's items; retry the batch later."""


class FeatureStoreError(FeaturesError):
    """The feature store could not be read or written; the message says which table and why."""
