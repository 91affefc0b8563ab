"""Baselines on exactly the model's rows and features: a logistic regression and gradient boosting.

Fitted for each churn head on the training rows whose label is known (the same rows the network's
loss sees), calibrated with the same Platt scaling on the same validation rows, and kept in the
bundle (`baselines.pkl`), so `churn-model evaluate` on another log compares the model with
baselines that learnt from the same history, not from the log being measured.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.calibration import Platt, fit_platt

BASELINE_FILE = "baselines.pkl"
HEADS = ("churn_risk_14d", "churn_risk_30d")
NAMES = ("logistic", "gbm")


@dataclass
class Baselines:
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # head -> name -> fitted estimator
    calibration: dict[str, dict[str, Platt]] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """head -> name -> calibrated probabilities."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for head, models in self.models.items():
            out[head] = {}
            for name, model in models.items():
                raw = model.predict_proba(transform(x))[:, 1]
                out[head][name] = self.calibration[head][name].apply(raw)
        return out


def transform(x: np.ndarray) -> np.ndarray:
    """The network's own input transform, so the logistic regression sees comparable scales (the
    trees do not care; model/trees.py folds it into their thresholds when it compiles them)."""
    from model.network import input_transform

    return input_transform(x)


def fit_baselines(
    x_train: np.ndarray,
    y_train: dict[str, np.ndarray],
    x_val: np.ndarray,
    y_val: dict[str, np.ndarray],
    seed: int,
    names: tuple[str, ...] = NAMES,
) -> Baselines:
    """`names`: the baselines to fit (training fits only the GBM, a candidate for the churn heads
    (model/candidates.py), when the baselines are not wanted)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    baselines = Baselines()
    xt, xv = transform(x_train), transform(x_val)
    for head in HEADS:
        known = ~np.isnan(y_train[head])
        labels = y_train[head][known].astype(int)
        if len(np.unique(labels)) < 2:
            continue
        logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
        # Shallow, slow and with large leaves: consecutive days of one customer are near copies, so a
        # default booster (deep trees, early stopping on a random row split that shares customers with
        # training) memorises customers and falls apart on new ones (AUC 0.67 against 0.88 here).
        gbm = HistGradientBoostingClassifier(
            max_iter=100,
            learning_rate=0.05,
            max_depth=4,
            min_samples_leaf=300,
            l2_regularization=1.0,
            max_bins=63,
            early_stopping=False,
            random_state=seed,
        )
        baselines.models[head] = {}
        baselines.calibration[head] = {}
        for name, model in (("logistic", logistic), ("gbm", gbm)):
            if name not in names:
                continue
            model.fit(xt[known], labels)
            baselines.models[head][name] = model
            baselines.calibration[head][name] = fit_platt(model.predict_proba(xv)[:, 1], y_val[head])
    return baselines


def save_baselines(baselines: Baselines, directory: Path) -> None:
    with (directory / BASELINE_FILE).open("wb") as handle:
        pickle.dump(baselines, handle, protocol=pickle.HIGHEST_PROTOCOL)


def load_baselines(directory: Path) -> Baselines | None:
    """The bundle's baselines, or None (an older bundle, or one unpickling fails for: a different
    scikit-learn)."""
    file = directory / BASELINE_FILE
    if not file.exists():
        return None
    try:
        with file.open("rb") as handle:
            loaded = pickle.load(handle)  # the bundle's own file, written by fit_baselines
    except Exception:
        return None
    return loaded if isinstance(loaded, Baselines) else None
