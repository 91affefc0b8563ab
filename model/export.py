"""Serving artefacts: the SavedModel with its serving signature, and SageMaker's model.tar.gz.

The serving signature (`serving_default`) takes raw registry vectors (`features`, float32 [n, 150])
and returns, per instance, the six heads plus the top-10 feature attributions for `churn_risk_30d`,
computed inside the graph with a `GradientTape` so TensorFlow Serving returns them as ordinary outputs.

Calibration (model/calibration.py) is part of the graph: each probability head's output goes through
its Platt scaling fitted on the validation period, so TF Serving returns calibrated probabilities.

A churn head may be served by gradient boosting or a blend of it with the network
(model/candidates.py chooses): its trees are constants in the graph, walked with gathers
(model/trees.py), and the head returns sigmoid(a * (w * logit(network) + (1 - w) * trees) + b).

First-session success is only a question before the first session. For a customer who completed
one (`has_first_session`, the flagged first session) the signature returns its observed outcome
(`first_session_was_success`, 1 or 0); for one with completed sessions but no flagged first one (a
log without the flag, or a first session before the log began) it returns 1: nothing left to risk.
The head itself speaks only for customers with no completed session, the rows it was trained on.

Attribution: gradient x (input - training mean), i.e. d churn_risk_30d / d x_i times how far x_i is
from the average training customer. It is the first-order estimate of how much feature i moves this
customer's risk away from the average customer's, so it is in probability units and does not depend
on a feature's units (a raw gradient would rank "dollars of lifetime spend" against "days since last
session" by unit size). `importance` is its absolute value; the top 10 by importance are returned.
For a 30-day head served by trees or a blend, the trees' path contributions (logit units, times
dp/dlogit and the trees' weight 1 - w) are added to the network's term, which flows through the
blend with weight w: the attribution explains the probability that is served.

The package layout is what SageMaker's TensorFlow Serving container expects under /opt/ml/model:
`<version>/saved_model.pb`, `<version>/variables/`, `code/inference.py`, `code/requirements.txt`,
plus `code/feature_spec.json` which the handlers read (feature names, hash, model version).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from model.bundle import ServingFn
from model.candidates import TreeHead
from model.trees import LOGIT_LIMIT, GraphTrees

TOP_K = 10
SIGNATURE = "serving_default"
# Output keys of the serving signature, in the order the output handler reads them.
SERVING_OUTPUTS: tuple[str, ...] = (
    "first_session_success",
    "session_velocity",
    "churn_risk_14d",
    "churn_risk_30d",
    "supply_demand",
    "health_score",
    "top_feature_indices",
    "top_feature_importance",
)

_INFERENCE_SOURCE = Path(__file__).with_name("inference.py")
_REQUIREMENTS = (
    "# The handlers in inference.py use only the Python standard library; the TensorFlow Serving\n"
    "# container installs what is listed here before it starts.\n"
)


def _calibrated(p: tf.Tensor, params: dict[str, float] | None) -> tf.Tensor:
    """Platt scaling in the graph (model/calibration.py's formula); identity without parameters."""
    if not params:
        return p
    q = tf.clip_by_value(p, 1e-6, 1 - 1e-6)
    z = tf.math.log(q) - tf.math.log1p(-q)
    return tf.sigmoid(float(params["a"]) * z + float(params["b"]))


def _first_session_gate(p: tf.Tensor, features: tf.Tensor, names: tuple[str, ...] | None) -> tf.Tensor:
    """The head's probability only before any completed session (see the module docstring)."""
    if names is None or not {
        "has_first_session",
        "first_session_was_success",
        "lifetime_session_count",
    } <= set(names):
        return p
    had_first = features[:, names.index("has_first_session")] > 0
    first_success = tf.cast(features[:, names.index("first_session_was_success")] > 0, p.dtype)
    had_session = features[:, names.index("lifetime_session_count")] > 0
    return tf.where(had_first, first_success, tf.where(had_session, tf.ones_like(p), p))


def _tree_head(
    p_network: tf.Tensor,
    trees: GraphTrees,
    head: TreeHead,
    params: dict[str, float] | None,
    features: tf.Tensor,
    attribute: bool,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """A churn head served by trees or a blend (model/candidates.py): (probability [n, 1] float32,
    dp/dz [n, 1] float64, the trees' Saabas contributions [n, f] float64 or None).

    p = sigmoid(a * clip(w * logit(p_network) + (1 - w) * z_trees) + b): the network's logit as
    `_calibrated` takes it, the trees' raw logit, the head's Platt scaling fitted on this blend."""
    z_trees, contributions = trees.walk(features, attribute=attribute)
    z = tf.clip_by_value(tf.stop_gradient(z_trees), -LOGIT_LIMIT, LOGIT_LIMIT)[:, None]
    if head.network_weight > 0:
        q = tf.clip_by_value(tf.cast(p_network, tf.float64), 1e-6, 1 - 1e-6)
        z_network = tf.math.log(q) - tf.math.log1p(-q)
        z = tf.clip_by_value(
            head.network_weight * z_network + (1.0 - head.network_weight) * z, -LOGIT_LIMIT, LOGIT_LIMIT
        )
    a = float((params or {}).get("a", 1.0))
    b = float((params or {}).get("b", 0.0))
    p = tf.sigmoid(a * z + b)
    return tf.cast(p, tf.float32), a * p * (1.0 - p), contributions


def make_serving_fn(
    model: keras.Model,
    mean: np.ndarray,
    calibration: dict[str, dict[str, float]] | None = None,
    feature_names: tuple[str, ...] | None = None,
    trees: dict[str, TreeHead] | None = None,
) -> tf.types.experimental.PolymorphicFunction:
    """`trees`: churn heads served by compiled trees or a blend with the network (model/trees.py,
    model/candidates.py); their `calibration` is the Platt scaling of the served blend. Attribution
    of such a 30-day head is the network's gradient x (input - mean) through the blend plus the
    trees' path contributions, both in probability units (dp/dlogit x the tree weight x logit
    contributions), so `feature_importance` explains the probability that is served."""
    n_features = int(model.input_shape[-1])
    baseline = tf.constant(np.asarray(mean, dtype=np.float32).reshape(1, n_features))
    k = min(TOP_K, n_features)
    calibration = calibration or {}
    trees = trees or {}
    graphs = {head: GraphTrees(spec.ensemble, n_features) for head, spec in trees.items()}

    def churn_head(
        out: dict[str, tf.Tensor], head: str, features: tf.Tensor, attribute: bool = False
    ) -> tuple[tf.Tensor, Any]:
        """(calibrated probability [n, 1], the trees' attribution in probability units or None)."""
        if head not in trees:
            return _calibrated(out[head], calibration.get(head)), None
        p, slope, contributions = _tree_head(
            out[head], graphs[head], trees[head], calibration.get(head), features, attribute
        )
        if contributions is None:
            return p, None
        tree_share = 1.0 - trees[head].network_weight
        return p, tf.cast(slope * tree_share * contributions, tf.float32)

    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(features)
            out = model(features, training=False)
            churn, tree_attribution = churn_head(out, "churn_risk_30d", features, attribute=True)
        # Rows are independent at inference (BatchNorm uses its moving statistics), so the gradient
        # of the batch sum is each row's own gradient.
        gradient = tape.gradient(churn, features)
        if gradient is None:  # the trees alone serve the head: no gradient reaches the inputs
            gradient = tf.zeros_like(features)
        attribution = gradient * (features - baseline)
        if tree_attribution is not None:
            attribution = attribution + tree_attribution
        attribution = tf.abs(attribution)
        top = tf.math.top_k(attribution, k=k)
        first = tf.squeeze(
            _calibrated(out["first_session_success"], calibration.get("first_session_success")), axis=-1
        )
        churn_14d, _ = churn_head(out, "churn_risk_14d", features)
        return {
            "first_session_success": _first_session_gate(first, features, feature_names),
            "session_velocity": tf.squeeze(out["session_velocity"], axis=-1),
            "churn_risk_14d": tf.squeeze(churn_14d, axis=-1),
            "churn_risk_30d": tf.squeeze(churn, axis=-1),
            "supply_demand": out["supply_demand"],
            "health_score": tf.squeeze(out["health_score"], axis=-1),
            "top_feature_indices": top.indices,
            "top_feature_importance": top.values,
        }

    # tf.function called, not used as a decorator: TensorFlow is untyped, and its Any stays here.
    return tf.function(
        serve, input_signature=[tf.TensorSpec([None, n_features], tf.float32, name="features")]
    )


def export_saved_model(
    model: keras.Model,
    mean: np.ndarray,
    path: Path,
    calibration: dict[str, dict[str, float]] | None = None,
    feature_names: tuple[str, ...] | None = None,
    trees: dict[str, TreeHead] | None = None,
) -> Path:
    """Write the SavedModel with the `serving_default` signature to `path` (a fresh directory)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    serve = make_serving_fn(model, mean, calibration, feature_names, trees)
    archive.add_endpoint(name=SIGNATURE, fn=serve)
    archive.write_out(str(path), verbose=False)
    return path


def load_serving_fn(path: Path) -> ServingFn:
    """The `serving_default` concrete function of a SavedModel: call it as `fn(features=array)`."""
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures[SIGNATURE]
    fn._churn_alerts_owner = loaded  # keep the trackable alive as long as the function
    serving: ServingFn = fn
    return serving


def build_package(
    saved_model_dir: Path, feature_spec: dict[str, Any], out_file: Path, version: int = 1
) -> Path:
    """SageMaker's model.tar.gz for the TensorFlow Serving container, written atomically."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".partial")
    now = time.time()

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(now)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp, "w:gz") as tar:
        for file in sorted(saved_model_dir.rglob("*")):
            tar.add(
                file, arcname=f"{version}/{file.relative_to(saved_model_dir).as_posix()}", recursive=False
            )
        add_bytes(tar, "code/inference.py", _INFERENCE_SOURCE.read_bytes())
        add_bytes(tar, "code/requirements.txt", _REQUIREMENTS.encode())
        add_bytes(tar, "code/feature_spec.json", json.dumps(feature_spec, indent=2).encode())
    tmp.replace(out_file)
    return out_file


def package_version(package: Path) -> str:
    """The model version recorded in a model.tar.gz (its code/feature_spec.json)."""
    from model.exceptions import UsageError

    try:
        with tarfile.open(package) as tar:
            member = tar.extractfile("code/feature_spec.json")
            if member is None:
                raise KeyError("code/feature_spec.json")
            return str(json.load(member)["model_version"])
    except FileNotFoundError:
        raise UsageError(f"no package at {package}: run `churn-model package` first") from None
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise UsageError(
            f"{package} is not a churn-model package ({exc}): build one with `churn-model package`"
        ) from None
