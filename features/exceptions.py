"""Errors raised by the features package."""

from __future__ import annotations

from plumbing.exceptions import ChurnAlertsError, UsageError

__all__ = ["EventParseError", "FeatureStoreError", "FeaturesError", "StoreConflictError", "UsageError"]


class FeaturesError(ChurnAlertsError):
    """Base for every error this package raises."""


class EventParseError(FeaturesError, UsageError):
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
