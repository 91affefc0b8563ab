"""The promotion gate: is a candidate bundle not worse than the incumbent on the same history?

Both bundles score the same rows (every active customer at every daily scoring instant of the log,
leaving out customers either bundle trained on), and each metric's difference (candidate minus
incumbent) gets a 95% interval from a paired bootstrap over customers (both models resampled
together, whole customers at a time, since one customer's rows are correlated):

- AUC-ROC of the 14- and 30-day churn heads (higher is better),
- expected calibration error of the 30-day head (lower is better),
- precision of every enabled alert rule at the configured thresholds (higher is better), read per
  customer as the backtest reads it, for rules that alert at least `MIN_ALERTED` customers under
  both models.

A metric fails when the candidate is worse beyond the tolerance (point difference past `margin`)
or significantly worse (the whole interval on the worse side of zero). The gate passes when no
metric fails; `churn-model compare` then exits 0 and records `gate.json` in the candidate bundle,
which `churn-model deploy` reads: a candidate whose gate failed is refused unless `--force`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.exceptions import UsageError
from worker.alerts.config import AlertsConfig

if TYPE_CHECKING:
    from jobs.backtest.metrics import Population
    from model.bundle import Bundle

GATE_FILE = "gate.json"
MIN_ALERTED = 10
# The gate judges a churn horizon only with at least this many customers who churned within it
# (positives) and who did not (negatives) among its customers: with fewer, an AUC difference is
# noise, and with none it is undefined; either way the gate fails rather than pass on what it
# cannot measure.
MIN_POSITIVES = 20
MIN_NEGATIVES = 20
MARGINS = {"auc_roc": 0.01, "ece": 0.01, "precision": 0.05}


@dataclass(frozen=True)
class MetricDiff:
    name: str
    candidate: float | None
    incumbent: float | None
    difference: float | None
    low: float | None
    high: float | None
    higher_is_better: bool
    margin: float

    @property
    def verdict(self) -> str:
        if self.difference is None or self.low is None or self.high is None:
            return "cannot judge"
        worse = -self.difference if self.higher_is_better else self.difference
        significantly = self.high < 0 if self.higher_is_better else self.low > 0
        return "worse" if worse > self.margin or significantly else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "difference": self.difference,
            "ci95": [self.low, self.high],
            "higher_is_better": self.higher_is_better,
            "margin": self.margin,
            "verdict": self.verdict,
        }


def _r(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def _classes(labels: np.ndarray, members: np.ndarray) -> tuple[int, int]:
    """(customers with a positive label, customers whose known labels are all negative)."""
    known = ~np.isnan(labels)
    positive = np.zeros(members.max() + 1 if len(members) else 0, dtype=bool)
    seen = positive.copy()
    positive[members[known & (labels == 1)]] = True
    seen[members[known]] = True
    return int(positive.sum()), int((seen & ~positive).sum())


def _bootstrap(stat: Any, groups: list[np.ndarray] | int, rounds: int, seed: int) -> list[float]:
    """`stat` of each resample: whole groups (a list of row arrays), or with an int n, the indices
    0..n-1 themselves."""
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(rounds):
        if isinstance(groups, int):
            rows = rng.integers(0, groups, groups)
        else:
            rows = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        value = stat(rows)
        if value is not None:
            differences.append(value)
    return differences


def _diff(
    name: str,
    stat_a: Any,
    stat_b: Any,
    groups: list[np.ndarray] | int,
    rounds: int,
    seed: int,
    higher_is_better: bool,
    margin: float,
) -> MetricDiff:
    every = np.arange(groups) if isinstance(groups, int) else np.concatenate(groups)
    a, b = stat_a(every), stat_b(every)

    def both(rows: np.ndarray) -> float | None:
        x, y = stat_a(rows), stat_b(rows)
        return None if x is None or y is None else x - y

    samples = _bootstrap(both, groups, rounds, seed)
    point = None if a is None or b is None else a - b  # both(every), without scoring every row twice more
    low, high = np.percentile(samples, [2.5, 97.5]) if samples else (None, None)
    return MetricDiff(name, _r(a), _r(b), _r(point), _r(low), _r(high), higher_is_better, margin)


def compare_predictions(
    y: dict[str, np.ndarray],
    customer: np.ndarray,
    candidate: dict[str, Any],
    incumbent: dict[str, Any],
    rounds: int = 200,
    seed: int = 0,
    margins: dict[str, float] = MARGINS,
    min_positives: int = MIN_POSITIVES,
    min_negatives: int = MIN_NEGATIVES,
) -> dict[str, Any]:
    """The gate on one set of rows. `candidate`/`incumbent`: {"pred": serving outputs, "rules":
    {RULE: (alerted customer flags, confirmed customer flags)}} over the same customers. It passes
    only when every gated metric was measured and none is worse: a horizon with fewer than
    `min_positives` churners or `min_negatives` other customers, or a metric without a value, is
    `cannot_judge` and fails it."""
    from model.metrics import auc_roc, calibration

    _, members = np.unique(customer, return_inverse=True)
    order = np.argsort(members, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(members[order])) + 1)
    diffs: list[MetricDiff] = []
    cannot_judge: dict[str, str] = {}
    for head in ("churn_risk_14d", "churn_risk_30d"):
        labels = np.asarray(y[head], dtype=np.float64)
        positives, negatives = _classes(labels, members)
        if positives < min_positives or negatives < min_negatives:
            reason = (
                f"{positives} customers churned within {head[-3:]} and {negatives} did not among the "
                f"gate's customers; it needs at least {min_positives} and {min_negatives}"
            )
            cannot_judge[f"{head}.auc_roc"] = reason
            if head == "churn_risk_30d":
                cannot_judge[f"{head}.ece"] = reason

        def auc(rows: np.ndarray, p: np.ndarray, labels: np.ndarray = labels) -> float | None:
            known = rows[~np.isnan(labels[rows])]
            return auc_roc(labels[known].astype(bool), p[known]) if len(known) else None

        a, b = candidate["pred"][head], incumbent["pred"][head]
        diffs.append(
            _diff(
                f"{head}.auc_roc",
                lambda r, a=a, auc=auc: auc(r, a),
                lambda r, b=b, auc=auc: auc(r, b),
                groups,
                rounds,
                seed,
                True,
                margins["auc_roc"],
            )
        )
    labels30 = np.asarray(y["churn_risk_30d"], dtype=np.float64)

    def ece(rows: np.ndarray, p: np.ndarray) -> float | None:
        known = rows[~np.isnan(labels30[rows])]
        return calibration(labels30[known], p[known])["ece"] if len(known) else None

    a30, b30 = candidate["pred"]["churn_risk_30d"], incumbent["pred"]["churn_risk_30d"]
    diffs.append(
        _diff(
            "churn_risk_30d.ece",
            lambda r: ece(r, a30),
            lambda r: ece(r, b30),
            groups,
            rounds,
            seed,
            False,
            margins["ece"],
        )
    )
    customers = len(groups)
    for rule, (alerted_a, confirmed_a) in candidate["rules"].items():
        alerted_b, confirmed_b = incumbent["rules"][rule]
        if alerted_a.sum() < MIN_ALERTED or alerted_b.sum() < MIN_ALERTED:
            continue

        def precision(rows: np.ndarray, alerted: np.ndarray, confirmed: np.ndarray) -> float | None:
            n = alerted[rows].sum()
            return float(confirmed[rows].sum() / n) if n else None

        diffs.append(
            _diff(
                f"{rule}.precision",
                lambda r, x=alerted_a, c=confirmed_a: precision(r, x, c),
                lambda r, x=alerted_b, c=confirmed_b: precision(r, x, c),
                customers,
                rounds,
                seed,
                True,
                margins["precision"],
            )
        )
    for diff in diffs:
        if diff.verdict == "cannot judge":
            cannot_judge.setdefault(diff.name, "the metric has no value on these customers")
    failed = [d.name for d in diffs if d.verdict == "worse" and d.name not in cannot_judge]
    return {
        "passed": not failed and not cannot_judge,
        "failed": failed,
        "cannot_judge": cannot_judge,
        "metrics": [d.as_dict() for d in diffs],
        "rows": len(customer),
        "customers": customers,
        "bootstrap_rounds": rounds,
    }


def rule_flags(
    columns: dict[str, np.ndarray], population: Population, alerts: AlertsConfig
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per enabled rule at the configured thresholds: which customers had a settled alert, and which
    a confirmed settled one (churned within 30 days of it), as the backtest reads precision."""
    from jobs.backtest.metrics import confirmation
    from jobs.tuning import TRIGGERS, apply_cooldown

    customers = len(population.customers)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for rule, trigger in TRIGGERS.items():
        settings = alerts.rule(rule)
        if not settings.enabled:
            continue
        params = {
            k: float(v)
            for k, v in settings.model_dump().items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        mask = trigger(columns, params, alerts)
        cooldown = int(settings.cooldown.total_seconds() * 1_000_000)
        customer, t = apply_cooldown(columns["customer"][mask], columns["t_us"][mask], cooldown)
        _, confirmed, settled = confirmation(customer, t, population)
        alerted = np.zeros(customers, dtype=bool)
        alerted[customer[settled]] = True
        hit = np.zeros(customers, dtype=bool)
        hit[customer[settled & confirmed]] = True
        out[rule.upper()] = (alerted, hit)
    return out


def write_gate(candidate_dir: Path, result: dict[str, Any]) -> None:
    (candidate_dir / GATE_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def gate_record(
    result: dict[str, Any], candidate_version: str, incumbent_version: str, events: list[str]
) -> dict[str, Any]:
    return {
        **result,
        "candidate_version": candidate_version,
        "incumbent_version": incumbent_version,
        "events": events,
        "compared_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def check_gate(bundle_dir: Path, model_version: str, force: bool) -> str | None:
    """Refuse (UsageError) a candidate whose recorded gate failed, unless `force`. Returns a note
    for the user (no gate on record, or forced), or None."""
    file = bundle_dir / GATE_FILE
    if not file.exists():
        return (
            f"note: model {model_version} was never compared with the incumbent "
            "(`churn-model compare --candidate ... --incumbent ...`)"
        )
    try:
        gate = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{file}: unreadable gate record ({exc}); run `churn-model compare` again") from None
    if gate.get("candidate_version") != model_version:
        return (
            f"note: {file} is about model {gate.get('candidate_version')}, not {model_version}: not applied"
        )
    if gate.get("passed"):
        return None
    if force:
        return f"warning: deploying model {model_version} although it failed the promotion gate ({gate_reason(gate)}): --force"
    raise UsageError(
        f"model {model_version} failed the promotion gate against {gate.get('incumbent_version')} "
        f"({gate_reason(gate)}, see {file}); deploy it anyway with --force"
    )


@dataclass(frozen=True)
class GateOptions:
    on_error: str = "skip"
    workers: int = 1
    scheduler: str | None = None
    allow_unknown_outcomes: bool = False
    include_training_customers: bool = False
    alerts: AlertsConfig | None = None  # None: the defaults
    rounds: int = 200
    seed: int = 0
    min_positives: int = MIN_POSITIVES
    min_negatives: int = MIN_NEGATIVES


def gate_bundles(
    candidate: Bundle,
    incumbent: Bundle,
    events: str | Path | Sequence[str | Path],
    outcomes: Path,
    options: GateOptions,
    progress: bool = False,
) -> dict[str, Any]:
    """The promotion gate of two loaded bundles on one log; records gate.json in
    the candidate and returns the record (`passed`, `failed`, the metrics)."""
    from jobs.evaluation import population_of, rule_columns
    from model.bundle import training_customers
    from model.evaluation import predict
    from model.owndata import BuildOptions, build_examples

    excluded = (
        frozenset()
        if options.include_training_customers
        else training_customers(candidate) | training_customers(incumbent)
    )
    build_options = BuildOptions(
        mode="evaluation",
        excluded=excluded,
        on_error=options.on_error,
        workers=options.workers,
        scheduler=options.scheduler,
        allow_unknown_outcomes=options.allow_unknown_outcomes,
    )
    examples, build = build_examples(events, outcomes, build_options, progress=progress)
    alerts = options.alerts if options.alerts is not None else AlertsConfig()
    population, index = population_of(
        examples.customer,
        examples.t_us,
        build.churn,
        build.outcomes.churned_at_us,
        build.start_us,
        build.end_us,
    )
    sides = {}
    for name, bundle in (("candidate", candidate), ("incumbent", incumbent)):
        pred = predict(bundle.serving_fn(), examples.x)
        columns = rule_columns(examples.x, index, examples.t_us, pred)
        sides[name] = {"pred": pred, "rules": rule_flags(columns, population, alerts)}
    result = compare_predictions(
        examples.y,
        index,
        sides["candidate"],
        sides["incumbent"],
        options.rounds,
        options.seed,
        min_positives=options.min_positives,
        min_negatives=options.min_negatives,
    )
    events_list = [str(e) for e in events] if isinstance(events, list | tuple) else [str(events)]
    record = gate_record(result, candidate.model_version, incumbent.model_version, events_list)
    write_gate(candidate.path, record)
    return record


def format_gate(record: dict[str, Any]) -> str:
    lines = [
        f"candidate {record['candidate_version']} vs incumbent {record['incumbent_version']}: "
        f"{record['rows']:,} instants of {record['customers']:,} customers, {record['bootstrap_rounds']} bootstrap rounds",
        "",
        f"{'metric':<36} {'candidate':>9} {'incumbent':>9} {'diff':>8} {'95% CI':>20}  verdict",
    ]
    for m in record["metrics"]:

        def show(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4f}"

        ci = f"[{show(m['ci95'][0])}, {show(m['ci95'][1])}]"
        lines.append(
            f"{m['metric']:<36} {show(m['candidate']):>9} {show(m['incumbent']):>9} {show(m['difference']):>8} "
            f"{ci:>20}  {m['verdict']}"
        )
    lines += ["", gate_verdict(record)]
    return "\n".join(lines)


def gate_verdict(record: dict[str, Any]) -> str:
    """One line: PASS, or FAIL and why."""
    if record["passed"]:
        return "PASS: the candidate is not worse"
    reasons = [f"worse on {', '.join(record['failed'])}"] if record.get("failed") else []
    reasons += [f"cannot judge {metric}: {why}" for metric, why in (record.get("cannot_judge") or {}).items()]
    return "FAIL: " + "; ".join(reasons)


def gate_reason(record: dict[str, Any]) -> str:
    """Why a gate failed: the metrics the candidate is worse on, and those it could not judge."""
    reasons = [f"{', '.join(record['failed'])} worse"] if record.get("failed") else []
    reasons += [f"cannot judge {metric}: {why}" for metric, why in (record.get("cannot_judge") or {}).items()]
    return "; ".join(reasons)
