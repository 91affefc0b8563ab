"""The model in process: a `worker.scoring.Scorer` that runs the bundle's serving signature directly.

What the endpoint returns is what the packaged handlers make of TF Serving's answer
(`model.inference.Handlers.prediction`), so this runs the same: `LocalPredictor.predict_array` (the
SavedModel signature the local endpoint and SageMaker serve), outputs turned into Python floats as
TF Serving's JSON carries them, then the same `prediction` formatting. Inputs are cast to float32
as the endpoint casts the JSON numbers it receives.

Scores do not depend on how rows are grouped, nor on the process: `LocalPredictor` runs every call
as blocks of exactly 64 rows with op determinism on (model/server.py says why), so a row's result
depends on its own features only, whatever else is scored with it, however a backtest was split
into shards or workers, whether a model was trained in the same process before, and whatever the
thread count. The chunks below are `worker.scoring`'s request split, as the endpoint receives them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from worker.exceptions import ScoringRejectedError, UsageError
from worker.scoring import MAX_PAYLOAD_BYTES

if TYPE_CHECKING:
    from model.server import LocalPredictor
    from worker.settings import Settings


def _chunks(features: np.ndarray) -> list[np.ndarray]:
    """`worker.scoring`'s request split (rows per request under SageMaker's payload limit)."""
    row_bytes = features.shape[1] * 24 + 4
    per_chunk = max(1, MAX_PAYLOAD_BYTES // row_bytes)
    return [features[i : i + per_chunk] for i in range(0, len(features), per_chunk)]


class InProcessScorer:
    """`await score(matrix)` -> one endpoint-shaped prediction dict per row."""

    def __init__(self, predictor: LocalPredictor) -> None:
        self._predictor = predictor
        self._handlers = predictor.handlers
        self.model_version: str = str(predictor.bundle.model_version)
        self.bundle_dir: Path = Path(predictor.bundle.path)
        self.rows = 0

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickled as its bundle's directory: a Dask worker loads the bundle itself, once."""
        return bundle_scorer, (str(self.bundle_dir),)

    @classmethod
    def from_bundle_dir(cls, bundle_dir: Path | None) -> InProcessScorer:
        """The bundle at `bundle_dir`, or the cached default bundle (trained on first use)."""
        from model.bundle import load_bundle
        from model.server import LocalPredictor

        return cls(LocalPredictor(load_bundle(bundle_dir_or_default(bundle_dir))))

    async def score(self, features: np.ndarray) -> list[dict[str, Any]]:
        if len(features) == 0:
            return []
        if not np.isfinite(features).all():
            raise ScoringRejectedError("feature matrix holds NaN or infinity; refusing to score it")
        predictions: list[dict[str, Any]] = []
        for chunk in _chunks(features):
            out = self._predictor.predict_array(chunk.astype(np.float32))
            columns = {key: value.tolist() for key, value in out.items()}
            keys = list(columns)
            predictions += [
                self._handlers.prediction(dict(zip(keys, values, strict=True)))
                for values in zip(*columns.values(), strict=True)
            ]
        self.rows += len(features)
        return predictions


def _model_extra_missing(exc: ImportError) -> UsageError:
    return UsageError(
        f"the in-process model needs the model extra ({exc.name} missing): pip install -e '.[model]', "
        "or score with a deployed endpoint: --endpoint NAME"
    )


def bundle_dir_or_default(bundle_dir: Path | None) -> Path:
    """`bundle_dir` if it is a bundle (a one-line UsageError if not), else the cached default bundle
    (trained on first use)."""
    try:
        from jobs.training import ensure_default_bundle
        from model.bundle import load_bundle
        from model.exceptions import ModelPackageError
    except ImportError as exc:
        raise _model_extra_missing(exc) from None
    if bundle_dir is None:
        return ensure_default_bundle(progress=True)
    try:
        load_bundle(bundle_dir)
    except ModelPackageError as exc:
        raise UsageError(str(exc)) from None  # the model's message names the directory and what to do
    return bundle_dir


def bundle_version(bundle_dir: Path) -> str:
    from model.bundle import load_bundle

    return str(load_bundle(bundle_dir).model_version)


_LOADED: dict[str, InProcessScorer] = {}


def bundle_scorer(bundle_dir: str) -> InProcessScorer:
    """The bundle at `bundle_dir` in process, loaded once per process (Dask workers run many shards)."""
    if bundle_dir not in _LOADED:
        from model.training import quiet_tensorflow

        quiet_tensorflow()
        _LOADED[bundle_dir] = InProcessScorer.from_bundle_dir(Path(bundle_dir))
    return _LOADED[bundle_dir]


@dataclass(frozen=True)
class GivenScorer:
    """A scorer object as it is (a test's, or an `InProcessScorer`, which pickles as its bundle)."""

    scorer: Any

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Any]:
        yield self.scorer


@dataclass(frozen=True)
class BundleScorer:
    """The model bundle at `bundle_dir`, in each process that scores."""

    bundle_dir: str

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Any]:
        yield bundle_scorer(self.bundle_dir)


@dataclass(frozen=True)
class EndpointScorer:
    """A deployed SageMaker endpoint through the worker's own client, opened where it scores."""

    settings: Settings
    endpoint: str

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Any]:
        from plumbing.clients import AwsClients
        from worker.scoring import SageMakerScorer

        async with AwsClients(self.settings.aws_region, "sagemaker-runtime") as aws:
            yield SageMakerScorer(
                aws.sagemaker_runtime, self.endpoint, max_attempts=self.settings.scoring_max_attempts
            )
