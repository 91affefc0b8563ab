"""Candidates for the churn heads, and the choice between them on the validation customers.

On data we did not shape the multi-task network is often not the best model the rows support
(docs/model.md, Training candidates): gradient boosting on the same 150 features ranked later
customers 10 AUC points better at 14 days on a third-party simulator's log, and 2-5 points better on
our second generator's smaller logs. So `churn-model train` fits, per churn head:

- `network`: the multi-task network's head (the averaged members), as before;
- `gbm`: the baselines' gradient boosting (model/baselines.py), fitted on the same rows;
- `blend`: a weighted average of the two logits, `w * logit(network) + (1 - w) * logit(gbm)`, the
  weight chosen on the validation customers from 0.1, 0.2, ..., 0.9 (0 and 1 are the other two).

Each candidate is Platt-calibrated on its served logit on the validation rows (the network's own
calibration as before). The head serves the even blend (w = 0.5) unless the candidate with the
highest validation AUC beats it beyond doubt (the lower end of its 95% customer-bootstrap interval
above zero; a tie keeps the simpler). A team's validation customers are a few hundred, and on them the
leader is often luck: on a third-party log the validation customers put a 0.8 blend 2 points ahead,
and the later customers put it 3 points behind the even blend and 5 behind the trees alone. The
network's validation readings are honest because it early-stops on held-back training customers,
not on these (model/training.py `early_stopping_rows`). The test customers never take part: their
readings are recorded (metadata.json `candidates`, the model card) beside the validation ones, so a
reviewer sees whether the choice held. All three are one formula, `p = sigmoid(a * clip(w *
z_network + (1 - w) * z_trees) + b)` with w = 1 for the network and 0 for the trees, which is what
the serving signature computes (model/export.py, trees compiled by model/trees.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.calibration import Platt, fit_platt
from model.metrics import auc_roc, calibration, paired_bootstrap
from model.trees import LOGIT_LIMIT, TreeEnsemble

CANDIDATES = ("network", "gbm", "blend")
CHURN_HEADS = ("churn_risk_14d", "churn_risk_30d")
BLEND_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 10))  # the network's weight
EVEN = 0.5  # the blend that serves unless the validation customers clearly prefer another candidate
TIE = 1e-4  # validation AUCs closer than this are a tie: the earlier candidate in CANDIDATES serves


@dataclass(frozen=True)
class TreeHead:
    """What the serving signature needs for a churn head that is not the network alone."""

    ensemble: TreeEnsemble
    network_weight: float  # w: the served logit is w * z_network + (1 - w) * z_trees


@dataclass
class Choice:
    """One head's candidates and the one that serves."""

    head: str
    served: str
    network_weight: float
    platt: Platt
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    margin: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "network_weight": self.network_weight,
            "calibration": self.platt.as_dict(),
            "candidates": self.readings,
            "margin": self.margin,
        }


def parse_candidates(text: str) -> tuple[str, ...]:
    """`--candidates network,gbm,blend` -> the names, in CANDIDATES' order; ValueError names the bad one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown or not names:
        raise ValueError(
            f"unknown candidate {', '.join(unknown) or '(none)'}: choose from {', '.join(CANDIDATES)}"
        )
    if "blend" in names and not {"network", "gbm"} <= set(names):
        names = sorted(set(names) | {"network", "gbm"}, key=CANDIDATES.index)  # a blend needs both parts
    return tuple(name for name in CANDIDATES if name in names)


def logit_of(p: np.ndarray) -> np.ndarray:
    """The network head's logit as the graph computes it (model/calibration.py's clip)."""
    from model.calibration import logit

    return logit(np.asarray(p, dtype=np.float64).ravel())


def served_logit(z_network: np.ndarray | None, z_trees: np.ndarray | None, weight: float) -> np.ndarray:
    """w * z_network + (1 - w) * z_trees, clipped to the calibration's range."""
    if weight >= 1.0 or z_trees is None:
        assert z_network is not None
        z = np.asarray(z_network, np.float64)
    elif weight <= 0.0 or z_network is None:
        z = np.asarray(z_trees, np.float64)
    else:
        z = weight * np.asarray(z_network, np.float64) + (1.0 - weight) * np.asarray(z_trees, np.float64)
    clipped: np.ndarray = np.clip(z, -LOGIT_LIMIT, LOGIT_LIMIT)
    return clipped


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


def probability(platt: Platt, z: np.ndarray) -> np.ndarray:
    """The served probability of a candidate's logit (Platt on it, as the graph does)."""
    return platt.apply(_sigmoid(z))


def _reading(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    known = ~np.isnan(y)
    labels, probs = y[known], p[known]
    return {
        "auc": auc_roc(labels.astype(bool), probs),
        "ece": calibration(labels, probs)["ece"],
        "rows": int(known.sum()),
    }


@dataclass
class HeadData:
    """One head's logits and labels on the validation rows (and the test rows after the cut)."""

    y_validation: np.ndarray
    groups: np.ndarray  # validation customers (the bootstrap resamples them)
    z_network: np.ndarray
    z_trees: np.ndarray | None
    y_test: np.ndarray | None = None
    z_network_test: np.ndarray | None = None
    z_trees_test: np.ndarray | None = None


def choose(head: str, data: HeadData, names: tuple[str, ...], seed: int) -> Choice:
    """Every candidate's readings, and the one that serves (the module docstring says which)."""
    weights: dict[str, float] = {"network": 1.0}
    if data.z_trees is not None and "gbm" in names:
        weights["gbm"] = 0.0
    if data.z_trees is not None and "blend" in names:
        weights["blend"] = _best_blend(data)
    weights = {name: w for name, w in weights.items() if name in names or name == "network"}
    readings: dict[str, dict[str, Any]] = {}
    platts: dict[str, Platt] = {}
    validation_p: dict[str, np.ndarray] = {}
    for name, weight in weights.items():
        z = served_logit(data.z_network, data.z_trees, weight)
        platt = fit_platt(_sigmoid(z), data.y_validation)
        platts[name] = platt
        validation_p[name] = probability(platt, z)
        readings[name] = {
            "network_weight": weight,
            "validation": _reading(data.y_validation, validation_p[name]),
        }
        if data.y_test is not None and data.z_network_test is not None:
            z_test = served_logit(data.z_network_test, data.z_trees_test, weight)
            readings[name]["test_after_cut"] = _reading(data.y_test, probability(platt, z_test))
    ranked = sorted(
        weights,
        key=lambda n: (-round((readings[n]["validation"]["auc"] or 0.0) / TIE), CANDIDATES.index(n)),
    )
    served = ranked[0] if "network" in names else next(n for n in ranked if n in names)
    customers = len(np.unique(data.groups[~np.isnan(data.y_validation)]))
    margin: dict[str, Any] = {}
    if "blend" in weights and (served != "blend" or weights["blend"] != EVEN):
        # The even blend serves unless the validation customers prefer the leader beyond doubt: on a
        # few hundred customers the leader is often luck (docs/model.md, "The even blend by default")
        z_even = served_logit(data.z_network, data.z_trees, EVEN)
        platt_even = fit_platt(_sigmoid(z_even), data.y_validation)
        p_even = probability(platt_even, z_even)
        even: dict[str, Any] = {"network_weight": EVEN, "validation": _reading(data.y_validation, p_even)}
        leader = readings[served]
        tied = abs((even["validation"]["auc"] or 0.0) - (leader["validation"]["auc"] or 0.0)) <= TIE
        if not tied:  # (a tie keeps the leader: the simpler model, or the same blend)
            versus = paired_bootstrap(data.y_validation, validation_p[served], p_even, data.groups, seed)
            over = f"{served} (network weight {leader['network_weight']})"
            if versus["ci95"][0] is not None and versus["ci95"][0] > 0.0:
                margin = {
                    "over": f"blend (network weight {EVEN})",
                    **versus,
                    "validation_customers": customers,
                }
                return Choice(head, served, weights[served], platts[served], readings, margin)
            if data.y_test is not None and data.z_network_test is not None:
                z_test = served_logit(data.z_network_test, data.z_trees_test, EVEN)
                even["test_after_cut"] = _reading(data.y_test, probability(platt_even, z_test))
            readings["blend"] = even  # the blend that serves; the leader's weight is named in the margin
            margin = {
                "over": over,
                "default": "the even blend: the validation customers do not prefer the leader beyond doubt",
                **_reversed(versus),
                "validation_customers": customers,
            }
            return Choice(head, "blend", EVEN, platt_even, readings, margin)
    if len(ranked) > 1:
        other = ranked[1] if ranked[0] == served else ranked[0]
        margin = {
            "over": other,
            **paired_bootstrap(
                data.y_validation, validation_p[served], validation_p[other], data.groups, seed
            ),
            "validation_customers": customers,
        }
    return Choice(head, served, weights[served], platts[served], readings, margin)


def _reversed(margin: dict[str, Any]) -> dict[str, Any]:
    """`paired_bootstrap(y, a, b, ...)` read as b against a."""
    low, high = margin["ci95"]
    flipped = {"ci95": [None if high is None else -high, None if low is None else -low]}
    if margin.get("difference") is not None:
        flipped["difference"] = -margin["difference"]
    if "a" in margin:
        flipped["a"], flipped["b"] = margin["b"], margin["a"]
    return {**margin, **flipped}


def _best_blend(data: HeadData) -> float:
    """The network weight in BLEND_WEIGHTS with the best validation AUC (ties: the first)."""
    known = ~np.isnan(data.y_validation)
    y = data.y_validation[known].astype(bool)
    best, best_auc = BLEND_WEIGHTS[len(BLEND_WEIGHTS) // 2], -1.0
    assert data.z_trees is not None
    for weight in BLEND_WEIGHTS:
        z = served_logit(data.z_network[known], data.z_trees[known], weight)
        auc = auc_roc(y, z) or 0.0
        if auc > best_auc + TIE:
            best, best_auc = weight, auc
    return best


def choose_heads(
    network: Any,
    gbms: dict[str, Any],
    validation: Any,
    test: Any | None,
    names: tuple[str, ...],
    seed: int,
) -> tuple[dict[str, Choice], dict[str, TreeHead]]:
    """Per churn head, the candidates' readings and the served one; and the trees the serving
    signature needs for heads that are not the network alone. `validation`, `test`: `Arrays` (the
    test rows: the test customers after the cut, or None)."""
    from model.baselines import transform

    x_val = validation.x.astype(np.float32)
    raw = network.predict(x_val, batch_size=8192, verbose=0)
    raw_test = None
    if test is not None and len(test.x):
        raw_test = network.predict(test.x.astype(np.float32), batch_size=8192, verbose=0)
    choices: dict[str, Choice] = {}
    served: dict[str, TreeHead] = {}
    for head in CHURN_HEADS:
        gbm = gbms.get(head)
        data = HeadData(
            y_validation=np.asarray(validation.y[head], np.float64).ravel(),
            groups=np.asarray(validation.groups),
            z_network=logit_of(raw[head]),
            z_trees=None if gbm is None else gbm.decision_function(transform(x_val)).ravel(),
        )
        if raw_test is not None and test is not None:
            data.y_test = np.asarray(test.y[head], np.float64).ravel()
            data.z_network_test = logit_of(raw_test[head])
            if gbm is not None:
                data.z_trees_test = gbm.decision_function(transform(test.x)).ravel()
        choice = choose(head, data, names, seed)
        choices[head] = choice
        if choice.network_weight < 1.0 and gbm is not None:
            served[head] = TreeHead(TreeEnsemble.from_gbm(gbm), choice.network_weight)
    return choices, served


def served_summary(metadata: dict[str, Any]) -> str:
    """One line naming what serves each churn head (for the gate and logs): e.g.
    "churn_risk_14d gbm, churn_risk_30d blend (network weight 0.6)"; "network" for older bundles."""
    record = (metadata.get("candidates") or {}).get("heads") or {}
    parts = []
    for head in CHURN_HEADS:
        choice = record.get(head) or {}
        name = choice.get("served", "network")
        weight = choice.get("network_weight")
        suffix = f" (network weight {weight})" if name == "blend" else ""
        parts.append(f"{head} {name}{suffix}")
    return ", ".join(parts)
