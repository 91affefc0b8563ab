"""Errors raised by the model package. `UsageError` and its subclasses are the user's to fix (the CLI
exits 2); anything else deriving from `ModelPackageError` is an operational failure (exit 1)."""

from __future__ import annotations

from plumbing.exceptions import ChurnAlertsError, UsageError

__all__ = [
    "BundleMismatchError",
    "BundleNotFoundError",
    "DataError",
    "DeployError",
    "ModelPackageError",
    "UsageError",
]


class ModelPackageError(ChurnAlertsError):
    """Base for every error this package raises."""


class BundleNotFoundError(ModelPackageError, UsageError):
    """The bundle directory is missing or incomplete."""


class BundleMismatchError(ModelPackageError, UsageError):
    """The bundle was trained on a different feature registry than the running code's."""

    def __init__(self, bundle: str, bundle_hash: str, code_hash: str) -> None:
        super().__init__(
            f"model bundle {bundle} was trained on feature hash {bundle_hash}, but this code's feature "
            f"registry has hash {code_hash}: retrain it with `churn-model train --out {bundle}`"
        )
        self.bundle_hash = bundle_hash
        self.code_hash = code_hash


class DataError(ModelPackageError, UsageError):
    """Training or evaluation data that cannot be used (empty, one class only, wrong shapes)."""


class DeployError(ModelPackageError):
    """An AWS call during deployment failed; the message names the resource and the reason."""
