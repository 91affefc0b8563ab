"""Gradient-boosted trees as constants and stock TensorFlow ops, for the serving signature.

A churn head served by trees (model/candidates.py chooses) runs in the same SavedModel as the
network, on the same TF Serving image, with no scikit-learn at serving time: `TreeEnsemble.from_gbm`
copies a fitted `HistGradientBoostingClassifier`'s trees into flat arrays (one row of nodes per
tree), and `tree_logits` walks every tree at once with gathers, one level per round:

    node = where(leaf[node], node, where(x[feature[node]] <= threshold[node], left[node], right[node]))

The logit is the booster's baseline plus the sum of the leaves reached: what `decision_function`
computes, summed in float64 like scikit-learn does.

The booster learns on `model.network.input_transform(x)` (sign(x) log(1 + |x|), as the baselines
do). That transform is folded into the thresholds rather than computed in the graph: it is strictly
increasing, so `t(x) <= thr` holds exactly for the float32 inputs `x <= r` with r the largest float32
whose transform (in float64, as scikit-learn evaluated it) is at most thr. The served split is then
the offline split bit for bit, where computing log1p in the graph could round a value sitting on a
threshold to the other side.

Attribution (`tree_contributions`): Saabas path contributions. Each node's expected logit is the
training-count-weighted mean of the leaves below it; walking a row's path, the change of expected
value at each split is credited to the split's feature. Per tree they sum to (leaf value - root
expectation), so over features they sum to the logit minus the booster's average logit: how far
each feature moves this customer from the average training row, in logit units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# The probability clip of model/calibration.py (EPSILON), as a logit: the offline path computes
# logit(clip(sigmoid(raw))), so the graph clips the raw logit to the same range.
LOGIT_LIMIT = float(np.log((1 - 1e-6) / 1e-6))
ARRAYS = ("feature", "threshold", "left", "right", "value", "expected", "leaf", "missing_left")


@dataclass(frozen=True)
class TreeEnsemble:
    """One booster's trees, [trees, nodes] arrays padded with leaves; node ids are per tree."""

    feature: np.ndarray  # int32: split feature (registry index)
    threshold: np.ndarray  # float32: go left when the raw input <= threshold
    left: np.ndarray  # int32
    right: np.ndarray  # int32
    value: np.ndarray  # float64: leaf values (shrinkage applied)
    expected: np.ndarray  # float64: count-weighted mean leaf value below each node (attribution)
    leaf: np.ndarray  # bool
    missing_left: np.ndarray  # bool: where NaN goes (inputs are finite; kept for fidelity)
    depth: int
    baseline: float  # the booster's initial logit

    @property
    def trees(self) -> int:
        return int(self.feature.shape[0])

    def as_arrays(self) -> dict[str, np.ndarray]:
        """For `np.savez` (the bundle's trees.npz): everything, scalars as 0-d arrays."""
        out = {name: getattr(self, name) for name in ARRAYS}
        out["depth"] = np.asarray(self.depth)
        out["baseline"] = np.asarray(self.baseline)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        fields = {name: np.asarray(arrays[name]) for name in ARRAYS}
        return cls(**fields, depth=int(arrays["depth"]), baseline=float(arrays["baseline"]))

    @classmethod
    def from_gbm(cls, gbm: Any, transformed: bool = True) -> TreeEnsemble:
        """A fitted binary `HistGradientBoostingClassifier`'s trees. `transformed`: it was fitted on
        `input_transform(x)` (the baselines' convention), whose thresholds are mapped back to raw
        float32 inputs (see the module docstring)."""
        predictors = [trees[0] for trees in gbm._predictors]
        if not predictors:
            raise ValueError("the booster has no trees")
        if any(np.any(p.nodes["is_categorical"]) for p in predictors):
            raise ValueError("categorical splits are not compiled: the features are numeric")
        width = max(len(p.nodes) for p in predictors)
        shape = (len(predictors), width)
        feature = np.zeros(shape, np.int32)
        threshold = np.zeros(shape, np.float64)
        left = np.zeros(shape, np.int32)
        right = np.zeros(shape, np.int32)
        value = np.zeros(shape, np.float64)
        expected = np.zeros(shape, np.float64)
        leaf = np.ones(shape, bool)
        missing_left = np.zeros(shape, bool)
        for t, predictor in enumerate(predictors):
            nodes = predictor.nodes
            k = len(nodes)
            feature[t, :k] = nodes["feature_idx"]
            threshold[t, :k] = nodes["num_threshold"]
            left[t, :k] = nodes["left"]
            right[t, :k] = nodes["right"]
            value[t, :k] = nodes["value"]
            leaf[t, :k] = nodes["is_leaf"].astype(bool)
            missing_left[t, :k] = nodes["missing_go_to_left"].astype(bool)
            expected[t, :k] = _expectations(nodes)
        split = ~leaf
        raw = threshold.astype(np.float32)
        if transformed:
            raw[split] = raw_thresholds(threshold[split])
        raw[~split] = 0.0
        feature[~split] = 0
        left[~split] = np.arange(width, dtype=np.int32)[None, :].repeat(len(predictors), 0)[~split]
        right[~split] = left[~split]
        depth = int(max(int(p.nodes["depth"].max()) for p in predictors))
        return cls(
            feature=feature,
            threshold=raw,
            left=left,
            right=right,
            value=np.where(leaf, value, 0.0),
            expected=expected,
            leaf=leaf,
            missing_left=missing_left,
            depth=depth,
            baseline=float(np.ravel(gbm._baseline_prediction)[0]),
        )

    def logits(self, x: np.ndarray) -> np.ndarray:
        """The raw logit in numpy (what the graph computes; tests and offline checks)."""
        node = np.zeros((len(x), self.trees), np.int64)
        x = np.asarray(x, np.float32)
        rows = np.arange(len(x))[:, None]
        trees = np.arange(self.trees)[None, :]
        for _ in range(self.depth):
            value = x[rows, self.feature[trees, node]]
            go_left = np.where(
                np.isnan(value), self.missing_left[trees, node], value <= self.threshold[trees, node]
            )
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(self.leaf[trees, node], node, step)
        logits: np.ndarray = self.baseline + self.value[trees, node].sum(axis=1)
        return logits


def _expectations(nodes: np.ndarray) -> np.ndarray:
    """Each node's count-weighted mean leaf value (children always follow their parent in
    scikit-learn's node order, so one backward pass fills them)."""
    expected = np.where(nodes["is_leaf"].astype(bool), nodes["value"], 0.0).astype(np.float64)
    count = np.maximum(nodes["count"].astype(np.float64), 1e-12)
    for i in range(len(nodes) - 1, -1, -1):
        if not nodes["is_leaf"][i]:
            a, b = int(nodes["left"][i]), int(nodes["right"][i])
            expected[i] = (count[a] * expected[a] + count[b] * expected[b]) / (count[a] + count[b])
    return expected


def _transform64(v: np.ndarray) -> np.ndarray:
    """`model.network.input_transform` of float32 values, in float64 as scikit-learn saw them."""
    v = np.asarray(v, np.float32).astype(np.float64)
    out: np.ndarray = np.sign(v) * np.log1p(np.abs(v))
    return out


def raw_thresholds(transformed: np.ndarray) -> np.ndarray:
    """For each threshold thr on transformed inputs, the largest float32 r with t(r) <= thr: then for
    every float32 x, t(x) <= thr exactly when x <= r (t strictly increasing)."""
    thr = np.asarray(transformed, np.float64)
    guess = (np.sign(thr) * np.expm1(np.abs(thr))).astype(np.float32)
    low = np.float32(-np.finfo(np.float32).max)
    high = np.float32(np.finfo(np.float32).max)
    for _ in range(64):  # a few ulps away at most; the loop bound only guards against surprises
        too_high = _transform64(guess) > thr
        guess = np.where(too_high, np.nextafter(guess, low), guess)
        if not too_high.any():
            break
    for _ in range(64):
        up = np.nextafter(guess, high)
        fits = (_transform64(up) <= thr) & (guess < high)
        guess = np.where(fits, up, guess)
        if not fits.any():
            break
    return guess.astype(np.float32)


class GraphTrees:
    """A `TreeEnsemble` as TensorFlow constants: flat node arrays (tree t's node j at t * width + j)
    so one gather serves every tree of every row.

    Leaves point to themselves (left = right = the leaf), so a walk needs no leaf test: a row that
    reached a leaf stays there for the remaining rounds, and its expected value stops changing.
    Inputs are finite (the endpoint's handlers and the in-process scorer refuse NaN and infinity),
    so the NaN branch scikit-learn keeps is not compiled."""

    def __init__(self, ensemble: TreeEnsemble, n_features: int) -> None:
        import tensorflow as tf

        trees, width = ensemble.feature.shape
        offset = (np.arange(trees, dtype=np.int32) * width)[:, None]
        self.n_features = n_features
        self.depth = ensemble.depth
        self.baseline = tf.constant(ensemble.baseline, tf.float64)
        # One gather per round fetches a node's feature and both children.
        links = np.stack([ensemble.feature, ensemble.left + offset, ensemble.right + offset], axis=-1)
        self.links = tf.constant(links.reshape(-1, 3).astype(np.int32))
        self.threshold = tf.constant(ensemble.threshold.ravel().astype(np.float32))
        self.value = tf.constant(ensemble.value.ravel().astype(np.float64))
        self.expected = tf.constant(ensemble.expected.ravel().astype(np.float64))
        self.roots = tf.constant(offset.ravel())

    def walk(self, features: Any, attribute: bool = False) -> tuple[Any, Any]:
        """(raw logit [n] float64, Saabas contributions [n, features] float64 or None)."""
        import tensorflow as tf

        rows = tf.shape(features)[0]
        node = tf.tile(self.roots[None, :], [rows, 1])
        changes, columns = [], []
        for _ in range(self.depth):
            links = tf.gather(self.links, node)  # [rows, trees, 3]
            split_feature = links[..., 0]
            value = tf.gather(features, split_feature, batch_dims=1)
            after = tf.where(value <= tf.gather(self.threshold, node), links[..., 1], links[..., 2])
            if attribute:
                changes.append(tf.gather(self.expected, after) - tf.gather(self.expected, node))
                columns.append(split_feature)
            node = after
        logit = self.baseline + tf.reduce_sum(tf.gather(self.value, node), axis=1)
        if not attribute:
            return logit, None
        # Every round's change of expected value, credited to its split feature, in one segment sum
        # (a leaf's rounds add 0 to feature 0).
        change = tf.concat(changes, axis=1)
        column = tf.concat(columns, axis=1) + tf.range(rows)[:, None] * self.n_features
        contributions = tf.math.unsorted_segment_sum(
            tf.reshape(change, [-1]), tf.reshape(column, [-1]), rows * self.n_features
        )
        return logit, tf.reshape(contributions, [rows, self.n_features])


def tree_logits(ensemble: TreeEnsemble, features: Any) -> Any:
    """The raw logits of `features` (a float32 tensor [n, f]) in the graph (float64)."""
    logit, _ = GraphTrees(ensemble, int(features.shape[-1])).walk(features)
    return logit
