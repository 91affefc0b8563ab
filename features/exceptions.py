"""Errors raised by the features package."""

from __future__ import annotations


class FeaturesError(Exception):
    """Base for every error this package raises."""


class UsageError(FeaturesError):
    """Bad usage or input the user has to fix: every command exits 2 on it. The one base class of
    usage errors: `worker.exceptions.UsageError` derives from it (and the model package's should)."""


class EventParseError(UsageError):
    """A message that is not a valid event. `error_code` is for machines (DLQ attributes, metrics),
    `error_detail` one line for a person (it may quote a few characters of the value at fault: it
    goes to the DLQ with the body, never to the logs), `field` the field at fault, if one is."""

    def __init__(self, error_code: str, error_detail: str, field: str | None = None) -> None:
        super().__init__(f"{error_code}: {error_detail}")
        self.error_code = error_code
        self.error_detail = error_detail
        self.field = field


class StoreConflictError(FeaturesError):
    """Another writer kept winning the race for one customer's items; retry the batch later."""


class FeatureStoreError(FeaturesError):
    """The feature store could not be read or written; the message says which table and why."""
