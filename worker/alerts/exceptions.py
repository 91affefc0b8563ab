"""Errors raised by the alerts package. Messages say what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.exceptions import WorkerError

if TYPE_CHECKING:
    from worker.alerts.rules import Alert


class AlertsError(WorkerError):
    """Base for every error this package raises."""


class InvalidPredictionError(AlertsError):
    """A model endpoint response that is not in the contract's shape (docs/contracts.md, The model
    endpoint)."""


class MissingFeatureError(AlertsError):
    """A rule needs a feature the caller did not pass; pass the registry's features by name."""


class AlertLedgerError(AlertsError):
    """The alert ledger table could not be read or written; the message says which table and why."""


class AlertPublishError(AlertsError):
    """Some alerts could not be published. `published` did go out (mark them sent), `failed` did not."""

    def __init__(self, message: str, published: list[Alert], failed: list[Alert]) -> None:
        super().__init__(message)
        self.published = published
        self.failed = failed
