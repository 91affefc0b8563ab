"""Model bundles: one trained model and everything needed to serve, evaluate and package it.

Layout of a bundle directory:
    model.keras          the Keras model (architecture, weights, input normalisation)
    saved_model/         the exported SavedModel with the serving signature (see model/export.py)
    feature_spec.json    feature names in input order, the registry's FEATURE_HASH, the model version
    metadata.json        model_version, training and data parameters, seed, library versions
    metrics.json         training history and the held-out evaluation made at training time
    MODEL_CARD.md        data period, customers, churn rate, label definitions, metrics, feature hash
    baselines.pkl        logistic regression and gradient boosting fitted on the same rows (event data)
    trees.npz            the compiled trees of churn heads served by gradient boosting or a blend
                         (model/candidates.py; the SavedModel holds the same constants)
    training_customers.txt.gz  customers whose rows trained or calibrated it (evaluate leaves them out)
    training_distribution.json  deciles of every feature and head on the training rows (model/drift.py)

A bundle is written to a temporary sibling directory and renamed into place, so a reader never sees
half a bundle. Every reader goes through `load_bundle`, which refuses a bundle whose feature hash is
not the running code's (`BundleMismatchError`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from features.registry import FEATURE_HASH, FEATURE_NAMES, REGISTRY_VERSION
from model.exceptions import BundleMismatchError, BundleNotFoundError

if TYPE_CHECKING:
    import numpy as np

    from model.candidates import TreeHead

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
SPEC_FILE = "feature_spec.json"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "MODEL_CARD.md"
TRAINING_CUSTOMERS_FILE = "training_customers.txt.gz"
TREES_FILE = "trees.npz"
REQUIRED = (KERAS_FILE, SAVED_MODEL_DIR, SPEC_FILE, METADATA_FILE)


class ServingFn(Protocol):
    """The SavedModel's serving signature as TensorFlow loads it (`model.export.load_serving_fn`):
    `fn(features=float32 tensor [n, 150])` -> every output by name, as tensors (`.numpy()`)."""

    def __call__(self, *, features: Any) -> dict[str, Any]: ...


def cache_dir(configured: str | None) -> Path:
    """The model cache (default bundles, simulated logs): `configured` (the commands pass
    `CHURN_MODEL_CACHE`), else ~/.cache/churn-alerts."""
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "churn-alerts"


def default_bundle_dir(cache: Path) -> Path:
    return cache / "bundles" / "default"


def feature_spec(model_version: str) -> dict[str, Any]:
    return {
        "names": list(FEATURE_NAMES),
        "n_features": len(FEATURE_NAMES),
        "feature_hash": FEATURE_HASH,
        "registry_version": REGISTRY_VERSION,
        "model_version": model_version,
    }


@dataclass
class Bundle:
    path: Path
    spec: dict[str, Any]
    metadata: dict[str, Any]
    _serving_fn: ServingFn | None = field(default=None, repr=False)

    @property
    def model_version(self) -> str:
        return str(self.metadata["model_version"])

    @property
    def saved_model_dir(self) -> Path:
        return self.path / SAVED_MODEL_DIR

    def metrics(self) -> dict[str, Any]:
        file = self.path / METRICS_FILE
        return json.loads(file.read_text()) if file.exists() else {}

    def serving_fn(self) -> ServingFn:
        """The SavedModel's serving signature, loaded once: `fn(features=float32 [n, 150])`."""
        if self._serving_fn is None:
            from model.export import load_serving_fn

            self._serving_fn = load_serving_fn(self.saved_model_dir)
        return self._serving_fn

    def keras_model(self) -> Any:
        import keras

        import model.network  # noqa: F401 - registers the custom loss for deserialisation

        return keras.saving.load_model(self.path / KERAS_FILE, compile=False)


def load_bundle(path: Path | str, check_hash: bool = True) -> Bundle:
    """Open a bundle; raises `BundleNotFoundError` or, on a feature registry change, `BundleMismatchError`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BundleNotFoundError(
            f"no model bundle at {path}: train one with `churn-model train --out {path}`"
        )
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise BundleNotFoundError(
            f"{path} is not a complete model bundle (missing {', '.join(missing)}): "
            f"retrain it with `churn-model train --out {path}`"
        )
    try:
        spec = json.loads((path / SPEC_FILE).read_text())
        metadata = json.loads((path / METADATA_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleNotFoundError(f"cannot read the model bundle at {path}: {exc}") from exc
    if check_hash:
        bundle_hash = str(spec.get("feature_hash"))
        if bundle_hash != FEATURE_HASH or list(spec.get("names", [])) != list(FEATURE_NAMES):
            raise BundleMismatchError(str(path), bundle_hash, FEATURE_HASH)
    return Bundle(path=path, spec=spec, metadata=metadata)


def is_bundle(path: Path) -> bool:
    return path.is_dir() and all((path / name).exists() for name in REQUIRED)


def write_bundle(
    out_dir: Path,
    keras_model: Any,
    mean: np.ndarray,
    metadata: dict[str, Any],
    metrics: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
    trees: dict[str, TreeHead] | None = None,
) -> Path:
    """Write a complete bundle to `out_dir`, replacing a bundle already there (never anything else).
    `extra_files`: more files by name (the baselines, the model card, the training customers).
    `trees`: churn heads served by compiled trees or a blend (exported in the SavedModel, and kept
    in trees.npz)."""
    from model.export import export_saved_model

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not is_bundle(out_dir) and any(out_dir.iterdir()):
        raise BundleNotFoundError(
            f"{out_dir} exists and is not a model bundle: choose an empty or new directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from other users of a shared cache
    try:
        with warnings.catch_warnings():
            # Keras 3.15 saving a TF-backend optimizer trips numpy 2's copy= deprecation: harmless.
            warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
            keras_model.save(staging / KERAS_FILE)
        calibration = {task: params for task, params in (metadata.get("calibration") or {}).items() if params}
        export_saved_model(
            keras_model, mean, staging / SAVED_MODEL_DIR, calibration, tuple(FEATURE_NAMES), trees
        )
        if trees:
            save_trees(trees, staging / TREES_FILE)
        spec = feature_spec(metadata["model_version"])
        (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def update_metrics(bundle: Bundle, metrics: dict[str, Any]) -> None:
    (bundle.path / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def save_trees(trees: dict[str, TreeHead], file: Path) -> None:
    import numpy as np

    arrays: dict[str, Any] = {}
    for head, spec in trees.items():
        arrays[f"{head}/network_weight"] = np.asarray(spec.network_weight)
        for name, value in spec.ensemble.as_arrays().items():
            arrays[f"{head}/{name}"] = value
    with file.open("wb") as handle:
        np.savez_compressed(handle, **arrays)


def load_trees(bundle: Bundle) -> dict[str, TreeHead]:
    """The compiled trees of the bundle's churn heads served by trees or a blend (none: {})."""
    import numpy as np

    from model.candidates import TreeHead
    from model.trees import TreeEnsemble

    file = bundle.path / TREES_FILE
    if not file.exists():
        return {}
    with np.load(file) as data:
        by_head: dict[str, dict[str, Any]] = {}
        for key in data.files:
            head, name = key.split("/", 1)
            by_head.setdefault(head, {})[name] = data[key]
    return {
        head: TreeHead(TreeEnsemble.from_arrays(arrays), float(arrays["network_weight"]))
        for head, arrays in by_head.items()
    }


def training_customers(bundle: Bundle) -> frozenset[str]:
    """Customers whose rows trained or calibrated the bundle (empty for simulated-row bundles)."""
    import gzip

    file = bundle.path / TRAINING_CUSTOMERS_FILE
    if not file.exists():
        return frozenset()
    with gzip.open(file, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip() for line in handle if line.strip())
