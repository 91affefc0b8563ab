"""The model card: MODEL_CARD.md in every bundle, from its metadata and metrics.

What a reviewer needs before trusting the model: the data (period, customers, churn rate), how it
was split, what each label means, how well it did on customers and times it never saw, how its
probabilities are calibrated, and the feature hash it expects.
"""

from __future__ import annotations

from typing import Any


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _targets(report: dict[str, Any]) -> list[str]:
    rows = ["| target | goal | measured | result | judged against |", "|---|---|---|---|---|"]
    for t in report.get("targets", []):
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[t["pass"]]
        rows.append(
            f"| {t['metric']} | {t['target']} | {_value(t['value'])} | {verdict} | {t.get('against', '')} |"
        )
    spike = report.get("ib_call_spike_thresholds") or []
    if spike:
        rows += [
            "",
            "IB_CALL_SPIKE is a rule on `ib_call_count_14d`, not a model output; what these customers allow it, "
            "by threshold (precision / recall / false share of its alerts / customers alerted): "
            + "; ".join(
                f">= {r['min_calls_14d']}: {_value(r.get('precision'))} / {_value(r.get('recall'))} / "
                f"{_value(r.get('false_alert_share'))} / {r.get('customers_alerted', 0)}"
                for r in spike
            )
            + ".",
        ]
    return rows


def _heads(report: dict[str, Any]) -> list[str]:
    rows = ["| head | labelled rows | AUC | ECE | MAE |", "|---|---|---|---|---|"]
    for head, h in (report.get("heads") or {}).items():
        cal = h.get("calibration") or {}
        rows.append(
            f"| {head} | {h.get('labelled', 0):,} | {_value(h.get('auc_roc'))} | {_value(cal.get('ece'))} | "
            f"{_value(h.get('mae'))} |"
        )
    return rows


def _calibration(metadata: dict[str, Any]) -> str:
    fitted = (metadata.get("calibration") or {}).items()
    parts = [
        f"{head} a={p['a']:.3f} b={p['b']:.3f} ({p.get('source', 'validation')}, {p['rows']:,} rows)"
        for head, p in fitted
        if p
    ]
    return ", ".join(parts) or "none"


def model_card(metadata: dict[str, Any], metrics: dict[str, Any]) -> str:
    card = metadata.get("card") or {}
    training = metadata.get("training") or {}
    lines = [
        f"# Model card: churn-alerts {metadata.get('model_version')}",
        "",
        f"Created {metadata.get('created_at')}; feature hash `{metadata.get('feature_hash')}` "
        f"({metadata.get('n_features')} features, `features/registry.py`). The endpoint refuses rows of another registry.",
        "",
        "## Data",
        "",
        f"- source: {card.get('data_source')}; events: {', '.join(card.get('events') or []) or 'n/a'}; "
        f"outcomes: {card.get('outcomes') or 'n/a'}",
        f"- period: {(card.get('period') or {}).get('start')} to {(card.get('period') or {}).get('end')}; "
        f"customers: {_value(card.get('customers'))}; events: {_value(card.get('events_read'))}",
        f"- examples: every active customer at each daily scoring instant (the last microsecond of the UTC day); "
        f"training instants sampled every {(card.get('sampling_every_days') or {}).get('train', 'n/a')} days per customer",
        f"- split: {card.get('split')}",
    ]
    survivors = card.get("survivor_history")
    if survivors:
        lines.append(
            f"- survivor history: the {survivors.get('quiet_labelled_instants', 0):,} labelled instants before "
            f"{survivors.get('until')} held no churner where {_value(survivors.get('expected_churners_at_later_rate'))} "
            "were expected at the later rate: their churn and health labels were left out "
            f"({survivors.get('censored_instants', 0):,} instants; docs/model.md, Survivor history)"
        )
    for name in ("train", "train_every_instant", "validation"):
        part = card.get(name) or {}
        if part:
            churn = part.get("churn_risk_30d") or {}
            lines.append(
                f"- {name}: {part.get('rows', 0):,} rows, {_value(part.get('customers'))} customers, "
                f"30-day churn rate {_value(churn.get('rate'))} over {churn.get('labelled', 0):,} labelled rows"
            )
    lines += [
        "",
        "## Labels",
        "",
        "```",
        card.get("labels") or "(simulated rows: the generator's own labels)",
        "```",
        "",
    ]
    lines += [
        "## Training",
        "",
        f"Epochs run {training.get('epochs_run')} (best {training.get('best_epoch')}), batch {training.get('batch_size')}, "
        f"learning rate {training.get('learning_rate')}, weight decay {training.get('weight_decay')}, EMA {training.get('ema')}, "
        f"seed {training.get('seed')}.",
        "",
        *_members(training),
        "Calibration (Platt scaling on the validation period, inside the exported model): "
        + _calibration(metadata),
        "",
        *_candidates(metadata.get("candidates") or {}),
        "## Metrics",
        "",
    ]
    evaluation = metrics.get("evaluation") or {}
    if not evaluation:
        lines.append(
            "Not evaluated at training time: run `churn-model evaluate --bundle DIR --events PATH --outcomes FILE`."
        )
    for name, report in evaluation.items():
        if not isinstance(report, dict):
            continue
        lines += [f"### {name.replace('_', ' ')}", ""]
        if name == "members":
            lines += [*_member_readings(report), ""]
            continue
        if "targets" not in report:
            lines += [report.get("note", "n/a"), ""]
            continue
        if "customers" in report:
            lines.append(
                f"{report['rows']:,} scoring instants of {report['customers']:,} customers "
                f"({report['churned_customers']:,} churned)."
            )
            lines.append("")
        lines += [*_targets(report), "", *_heads(report), ""]
        if report.get("note"):
            lines += [f"Note: {report['note']}", ""]
    lines += [
        "## Intended use and limits",
        "",
        "Scores active customers once a day (and on events) for the five alert rules. Probabilities are calibrated "
        "to the validation period; a marketplace whose churn rate moves should be re-trained (`churn-model retrain`) "
        "and promoted only through `churn-model compare`. The health score is an observable blend (see Labels), "
        "not a latent truth.",
        "",
    ]
    return "\n".join(lines)


_ORDER = ("network", "gbm", "blend")  # model/candidates.py CANDIDATES


def _candidates(record: dict[str, Any]) -> list[str]:
    """Which candidate serves each churn head, and why: every candidate's validation and test
    figures, the margin of the served one over the next, with its bootstrap interval."""
    heads = record.get("heads") or {}
    if not heads:
        return []
    lines = [
        "## Candidates for the churn heads",
        "",
        f"Fitted: {', '.join(record.get('names') or [])}. Each head serves the even blend (network weight 0.5) "
        "unless the candidate with the best AUC on the validation customers' instants after the time cut beats it "
        "beyond doubt (the lower end of the customer-bootstrap 95% interval above zero; a tie within 0.0001 keeps "
        "the leader); the test customers' figures after the cut are recorded here and were not "
        "used to choose. ECE on validation is optimistic: each candidate is calibrated there. `gbm` and `blend` "
        "run inside the SavedModel as compiled trees.",
        "",
        "| head | candidate | network weight | validation AUC | validation ECE | test AUC | test ECE | serves |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for head, choice in heads.items():
        readings = choice.get("candidates") or {}
        for name in sorted(readings, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
            reading = readings[name]
            validation = reading.get("validation") or {}
            test = reading.get("test_after_cut") or {}
            lines.append(
                f"| {head} | {name} | {_value(reading.get('network_weight'))} | {_value(validation.get('auc'))} | "
                f"{_value(validation.get('ece'))} | {_value(test.get('auc'))} | {_value(test.get('ece'))} | "
                f"{'yes' if name == choice.get('served') else ''} |"
            )
    lines.append("")
    for head, choice in heads.items():
        margin = choice.get("margin") or {}
        served = choice.get("served")
        if margin.get("difference") is None:
            lines.append(f"- {head}: {served} (the only candidate).")
            continue
        low, high = margin.get("ci95") or [None, None]
        lines.append(
            f"- {head}: **{served}** serves: validation AUC {_value(margin.get('a'))} against {margin.get('over')}'s "
            f"{_value(margin.get('b'))}, margin {margin['difference']:+.4f} (95% interval {_value(low)} to "
            f"{_value(high)}, {margin.get('validation_customers', 0):,} validation customers resampled)."
            + (f" {margin['default'][0].upper()}{margin['default'][1:]}." if margin.get("default") else "")
        )
    lines.append("")
    return lines


def _members(training: dict[str, Any]) -> list[str]:
    members = training.get("members") or {}
    if not members:
        return []
    parts = [
        f"`{name}` ({m.get('fit_rows', 0):,} rows, {m.get('epochs_run')} epochs, best {m.get('best_epoch')})"
        for name, m in members.items()
    ]
    return [
        "Two members of the network, averaged head by head: "
        + " and ".join(parts)
        + ". The first learns from the "
        "training customers' instants before the time cut (strictly out of time), the second from all of them (it has "
        "seen the whole calendar and the newest behaviour); "
        + _stopped_on(training.get("early_stopping") or {})
        + " The average is calibrated on the validation customers.",
        "",
    ]


def _stopped_on(stopping: dict[str, Any]) -> str:
    on = stopping.get("on")
    if not on:  # a bundle trained before this was recorded stopped on the validation customers
        return "both stopped early on the validation customers."
    held = (
        f" ({stopping['customers']:,} customers, {stopping['rows']:,} rows)"
        if "customers" in stopping
        else ""
    )
    return f"both stopped early on {on}{held}."


def _member_readings(report: dict[str, Any]) -> list[str]:
    lines = [
        "| member | AUC 14d after the cut | AUC 30d after the cut | AUC 14d whole log | AUC 30d whole log |",
        "|---|---|---|---|---|",
    ]
    for name, r in report.items():
        cells = [
            r.get(f"{reading}_auc_{h}")
            for reading in ("out_of_time_and_customer", "out_of_customer")
            for h in ("14d", "30d")
        ]
        lines.append(f"| {name} | " + " | ".join(_value(c) for c in cells) + " |")
    lines += [
        "",
        "Test customers, uncalibrated members (AUC does not depend on calibration); the earlier-instants "
        "member's reading after the cut is the strictly out-of-time one.",
    ]
    return lines
