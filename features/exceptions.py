"""Errors raised by the features package."""

from __future__ import annotations


class FeaturesError(Exception):
    """Base for every error this package raises."""


class EventParseError(FeaturesError):
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
