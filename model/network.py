"""The multi-task network: the seed's architecture as a Keras 3 functional model, and its losses.

Fixes against the seed (docs/model.md, The network):
- The seed's `MultiTaskLoss` takes `y_true`/`y_pred` dicts, which Keras never passes to a loss, and
  its `y` had no `supply_demand`, so that head was never trained. Here each of the six outputs has
  its own Keras loss (BCE for the three classifiers, MSE for the three regressors) and the seed's
  task weights are Keras `loss_weights`: the total is the same weighted sum, and all six heads train.
- Inputs are normalised inside the model (a `Normalization` layer fitted on training data), so the
  endpoint takes the raw registry vector and no client can forget to scale.
- The health head is the seed's sigmoid scaled x100, so the model outputs 0-100. Its loss is MSE on
  the 0-1 scale (`ScaledMeanSquaredError(scale=100)` divides target and prediction by 100): an MSE in
  points squared would be ~10^4 times the BCE terms and drown the churn heads; on the 0-1 scale the
  seed's weight 1.5 means what it says.
- Labels from real history are often unknown (censored churn near the end of the data, first-session
  outcomes only before a first session, subjects without bookings). A missing label is NaN and
  every loss is masked: a NaN target adds nothing to the loss or its gradient (it counts as zero in
  the batch mean, so a head labelled on few rows weighs in proportion to them, instead of training
  on a filler value).
- Counts have long tails that differ from one marketplace to the next, so each input goes through
  sign(x) log(1 + |x|) before the normalisation (`SignedLog1p`): a customer with ten times the
  usual logins is a few standard deviations out, not a hundred.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

N_SUBJECTS = 20
HEALTH_SCALE = 100.0

CLASSIFIERS: tuple[str, ...] = ("first_session_success", "churn_risk_14d", "churn_risk_30d")
REGRESSORS: tuple[str, ...] = ("session_velocity", "supply_demand", "health_score")
# Output order of the model (the seed's dict order).
TASKS: tuple[str, ...] = (
    "first_session_success",
    "session_velocity",
    "churn_risk_14d",
    "churn_risk_30d",
    "supply_demand",
    "health_score",
)
TASK_WEIGHTS: dict[str, float] = {
    "first_session_success": 1.0,
    "session_velocity": 0.5,
    "churn_risk_14d": 2.0,  # the critical tasks weigh double, as in the seed
    "churn_risk_30d": 2.0,
    "supply_demand": 1.0,
    "health_score": 1.5,
}
# (hidden width, output width, output activation) per head, as in the seed.
HEADS: dict[str, tuple[int, int, str]] = {
    "first_session_success": (32, 1, "sigmoid"),
    "session_velocity": (32, 1, "linear"),
    "churn_risk_14d": (32, 1, "sigmoid"),
    "churn_risk_30d": (32, 1, "sigmoid"),
    "supply_demand": (64, N_SUBJECTS, "linear"),
    "health_score": (32, 1, "sigmoid"),  # 0-1, then scaled to 0-100
}
# A feature whose training variance is below this is scaled by 1 instead of 1/std: otherwise a
# feature that never varied in training (say, tier changes) would be multiplied by ~1e3 or more the
# first time it moves in production.
MIN_VARIANCE = 1e-6


def _masked(y_true: Any, y_pred: Any) -> tuple[Any, Any, Any]:
    """(targets with NaN replaced by 0, mask 1/0, labelled elements per row) of a batch."""
    y_true = keras.ops.cast(y_true, y_pred.dtype)
    mask = keras.ops.cast(keras.ops.logical_not(keras.ops.isnan(y_true)), y_pred.dtype)
    filled = keras.ops.where(mask > 0, y_true, keras.ops.zeros_like(y_true))
    return filled, mask, keras.ops.sum(mask, axis=-1)


def _row_mean(values: Any, mask: Any, count: Any) -> Any:
    return keras.ops.sum(values * mask, axis=-1) / keras.ops.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="churn_alerts")
class ScaledMeanSquaredError(keras.losses.Loss):
    """MSE of `y / scale` over the labelled elements (NaN targets are masked): the health head
    trains on 0-1 although the model outputs 0-100."""

    def __init__(self, scale: float = HEALTH_SCALE, name: str = "scaled_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = float(scale)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        filled, mask, count = _masked(y_true, y_pred)
        return _row_mean(keras.ops.square(y_pred / self.scale - filled / self.scale), mask, count)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="churn_alerts")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of the labelled rows; a NaN target (censored) contributes nothing."""

    def __init__(self, name: str = "masked_bce", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        filled, mask, count = _masked(y_true, y_pred)
        p = keras.ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
        bce = -(filled * keras.ops.log(p) + (1.0 - filled) * keras.ops.log(1.0 - p))
        return _row_mean(bce, mask, count)


@keras.saving.register_keras_serializable(package="churn_alerts")
class MaskedMeanSquaredError(keras.losses.Loss):
    """MSE over the labelled elements of each row (supply/demand: the subjects with data)."""

    def __init__(self, name: str = "masked_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        filled, mask, count = _masked(y_true, y_pred)
        return _row_mean(keras.ops.square(y_pred - filled), mask, count)


@keras.saving.register_keras_serializable(package="churn_alerts")
class SignedLog1p(keras.layers.Layer):
    """sign(x) log(1 + |x|), element-wise: long-tailed counts on a scale a normalisation can handle."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.sign(inputs) * keras.ops.log1p(keras.ops.abs(inputs))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


def input_transform(x: np.ndarray) -> np.ndarray:
    """What `SignedLog1p` does, in numpy (for the normalisation statistics)."""
    x = np.asarray(x, dtype=np.float64)
    transformed: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return transformed


def normalization_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance of the transformed inputs (`input_transform` of raw rows), for
    the normalisation layer, with the `MIN_VARIANCE` floor."""
    x = input_transform(x)
    mean = x.mean(axis=0)
    variance = x.var(axis=0)
    variance = np.where(variance < MIN_VARIANCE, 1.0, variance)
    return mean.astype(np.float32), variance.astype(np.float32)


def build_model(
    n_features: int,
    mean: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    name: str = "marketplace_health",
) -> keras.Model:
    """The seed's network. `mean`/`variance` (from `normalization_stats` on training rows) fix the
    input scaling; without them the layer is the identity (for shape tests)."""
    if mean is None or variance is None:
        mean, variance = np.zeros(n_features, np.float32), np.ones(n_features, np.float32)
    inputs = keras.Input(shape=(n_features,), name="features")
    x = SignedLog1p(name="signed_log1p")(inputs)
    x = keras.layers.Normalization(mean=mean, variance=variance, name="normalize")(x)
    x = keras.layers.Dense(256, activation="relu", name="shared_1")(x)
    x = keras.layers.BatchNormalization(name="shared_bn_1")(x)
    x = keras.layers.Dropout(0.3, name="shared_dropout_1")(x)
    x = keras.layers.Dense(128, activation="relu", name="shared_2")(x)
    x = keras.layers.BatchNormalization(name="shared_bn_2")(x)
    x = keras.layers.Dropout(0.2, name="shared_dropout_2")(x)
    shared = keras.layers.Dense(64, activation="relu", name="shared_3")(x)

    outputs = {}
    for task in TASKS:
        hidden, width, activation = HEADS[task]
        h = keras.layers.Dense(hidden, activation="relu", name=f"{task}_hidden")(shared)
        if task == "health_score":
            unit = keras.layers.Dense(width, activation=activation, name="health_score_unit")(h)
            outputs[task] = keras.layers.Rescaling(HEALTH_SCALE, name=task)(unit)
        else:
            outputs[task] = keras.layers.Dense(width, activation=activation, name=task)(h)
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def average_members(members: list[keras.Model]) -> keras.Model:
    """One model whose every head is the mean of the members' heads (the exported model: one
    SavedModel, one calibration, one attribution). With one member, that member itself.

    Why two members (model/training.py `fit_ensemble`): one trained on the training customers'
    earlier instants only (the honest out-of-time recipe), one on all their instants (it has seen
    the whole calendar: seasons, the latest behaviour). Measured on later customers of our two
    generators, the average keeps the better of the two on each: the simulator 0.882 / 0.850 (earlier
    instants alone 0.883 / 0.851, every instant alone 0.869 / 0.835), the second generator 0.720 /
    0.712 (0.694 / 0.688 and 0.727 / 0.717)."""
    if len(members) == 1:
        return members[0]
    n_features = int(members[0].input_shape[-1])
    inputs = keras.Input(shape=(n_features,), name="features")
    outs = [member(inputs) for member in members]
    averaged = {task: keras.layers.Average(name=task)([out[task] for out in outs]) for task in TASKS}
    return keras.Model(inputs=inputs, outputs=averaged, name="marketplace_health_ensemble")


def start_at_label_means(model: keras.Model, y: dict[str, np.ndarray]) -> None:
    """Set each head's output bias so that, before training, it predicts the mean of its known
    labels (the base rate for a probability). A head with few labelled rows (first-session success
    is known at a few percent of instants) then starts, and stays if it learns little, at the base
    rate instead of sigmoid(0) = 0.5, which sits on the FIRST_SESSION_RISK threshold."""
    for task in TASKS:
        labels = np.asarray(y[task], dtype=np.float64)
        labels = labels.reshape(-1, N_SUBJECTS) if task == "supply_demand" else labels.reshape(-1, 1)
        known = ~np.isnan(labels)
        if not known.any():
            continue
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(np.where(known, labels, np.nan), axis=0)
        mean = np.where(np.isnan(mean), 0.0, mean)
        if task in CLASSIFIERS or task == "health_score":
            unit = np.clip(mean / (HEALTH_SCALE if task == "health_score" else 1.0), 0.01, 0.99)
            bias = np.log(unit) - np.log1p(-unit)
        else:
            bias = mean
        layer = model.get_layer("health_score_unit" if task == "health_score" else task)
        kernel, _ = layer.get_weights()
        layer.set_weights([kernel, np.asarray(bias, dtype=np.float32).reshape(-1)])


def losses() -> dict[str, keras.losses.Loss]:
    out: dict[str, keras.losses.Loss] = {task: MaskedBinaryCrossentropy() for task in CLASSIFIERS}
    out["session_velocity"] = MaskedMeanSquaredError()
    out["supply_demand"] = MaskedMeanSquaredError()
    out["health_score"] = ScaledMeanSquaredError(HEALTH_SCALE)
    return out


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-3,
    weight_decay: float | None = None,
    ema_every_steps: int | None = None,
) -> keras.Model:
    """Adam at the seed's learning rate. `weight_decay` is decoupled (AdamW-style: each step shrinks
    the weights by lr x weight_decay); `ema_every_steps` keeps an exponential moving average of the
    weights and writes it into the model every that many steps (pass the steps per epoch, so each
    epoch's validation and early stopping see the averaged weights)."""
    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate,
        weight_decay=weight_decay or None,
        use_ema=ema_every_steps is not None,
        # An average over about an epoch of steps, at most 100: with few steps per epoch (a small
        # log) a fixed 0.99 would still hold half of the first step's near-random weights after 70 steps.
        ema_momentum=min(0.99, 1.0 - 1.0 / max(2, ema_every_steps or 100)),
        ema_overwrite_frequency=ema_every_steps,
    )
    # No Keras metrics: they would count masked (NaN) labels; model.evaluation measures the heads.
    model.compile(optimizer=optimizer, loss=losses(), loss_weights=dict(TASK_WEIGHTS))
    return model


def targets_for_fit(y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The six targets shaped as the outputs: [n, 1] for scalar heads, [n, 20] for supply/demand."""
    missing = [task for task in TASKS if task not in y]
    if missing:
        raise KeyError(f"training targets lack {', '.join(missing)}")
    out = {}
    for task in TASKS:
        value = np.asarray(y[task], dtype=np.float32)
        out[task] = value.reshape(-1, N_SUBJECTS) if task == "supply_demand" else value.reshape(-1, 1)
    return out
