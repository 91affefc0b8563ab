"""The model in process: a `worker.scoring.Scorer` that runs the bundle's serving signature directly.

What the endpoint returns is what the packaged handlers make of TF Serving's answer
(`model.inference.Handlers.prediction`), so this runs the same: `LocalPredictor.predict_array` (the
SavedModel signature the local endpoint and SageMaker serve), outputs turned into Python floats as
TF Serving's JSON carries them, then the same `prediction` formatting. Inputs are cast to float32
as the endpoint casts the JSON numbers it receives, and split into the same chunks the SageMaker
client sends, so a batch scores as it would through the endpoint, minus HTTP and JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.exceptions import ScoringRejectedError, UsageError
from worker.scoring import MAX_PAYLOAD_BYTES


def _chunks(features: np.ndarray) -> list[np.ndarray]:
    """`worker.scoring`'s request split (rows per request under SageMaker's payload limit)."""
    row_bytes = features.shape[1] * 24 + 4
    per_chunk = max(1, MAX_PAYLOAD_BYTES // row_bytes)
    return [features[i : i + per_chunk] for i in range(0, len(features), per_chunk)]


class InProcessScorer:
    """`await score(matrix)` -> one endpoint-shaped prediction dict per row."""

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor  # model.server.LocalPredictor
        self._handlers = predictor.handlers
        self.model_version: str = str(predictor.bundle.model_version)
        self.rows = 0

    @classmethod
    def from_bundle_dir(cls, bundle_dir: Path | None) -> InProcessScorer:
        """The bundle at `bundle_dir`, or the cached default bundle (trained on first use)."""
        try:
            from model.bundle import load_bundle
            from model.server import LocalPredictor
            from model.training import ensure_default_bundle
        except ImportError as exc:
            raise UsageError(
                f"the in-process model needs the model extra ({exc.name} missing): pip install -e '.[model]', "
                "or score with a deployed endpoint: --endpoint NAME"
            ) from None
        path = bundle_dir if bundle_dir is not None else ensure_default_bundle(progress=True)
        return cls(LocalPredictor(load_bundle(path)))

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
