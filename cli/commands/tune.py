"""`churn-worker tune EVENTS... --outcomes FILE --out FILE`: thresholds chosen against what happened.

One backtest (same pipeline, clock and model as `churn-worker backtest`), then a sweep of every
rule's thresholds on the scoring instants it recorded (`jobs.tuning` says why that is
exact and cheap). Prints the trade-off table, writes the recommended config (the `--config` file's
other settings carried over) and a plot next to it (`FILE` with `.html`), then loads the written
file with the worker's own settings loader, so what is written is what `run --config` accepts.
"""

from __future__ import annotations

import json
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from cli.commands.backtest import BacktestRequest, backtest_once, check_request
from cli.commands.checks import writable_file
from features.churn_outcomes import load_outcomes
from features.events import format_utc
from features.state import DAY_US, from_us
from jobs.backtest.metrics import CONFIRM_DAYS
from jobs.backtest.report import population
from jobs.budget_usage import daily_counts, format_usage, latest_tiers, usage
from jobs.html import budget_usage_section, line_chart, page, table
from jobs.tuning import RuleResult, TuneTargets, chosen_alerts, config_text, format_table, sweep, write_config
from worker.exceptions import UsageError
from worker.settings import Settings, config_source, load_settings, read_config_values

__all__ = ["TuneTargets", "run_tune"]


async def run_tune(
    settings: Settings, request: BacktestRequest, out: Path, targets: TuneTargets, base_config: str | None
) -> int:
    if out.suffix.lower() not in (".toml", ""):
        raise UsageError(f"--out {out}: the recommended config is written as TOML; name it *.toml")
    if request.outcomes is None:
        raise UsageError("tune needs --outcomes FILE: thresholds are chosen against who churned")
    writable_file(out, "--out")
    sources = check_request(request)
    outcomes = load_outcomes(request.outcomes)  # before the model or the backtest: a bad file fails at once
    with tempfile.TemporaryDirectory(prefix="churn-tune-") as scratch:
        result, scoring, model_version = await backtest_once(
            settings, request, Path(scratch) / "alerts.jsonl", sources
        )
    pop = population(result, outcomes)
    settled_until = pop.settled_until_us  # alerts up to here have a known outcome
    if settled_until <= pop.start_us:
        raise UsageError(
            f"{request.events_text}: the events span {(pop.end_us - pop.start_us) / DAY_US:.0f} days; an alert's "
            f"precision is known {CONFIRM_DAYS} days after it, so tune needs more than {CONFIRM_DAYS} days of events"
        )
    columns = result.log.columns()
    results = sweep(columns, pop, settings.alerts, targets)
    budget = f", at most {targets.max_per_day:g} alerts a day" if targets.max_per_day is not None else ""
    header = [
        f"Written by `churn-worker tune {request.events_text} --outcomes {request.outcomes}`",
        f"targets: precision >= {targets.precision:g}, false positive rate <= {targets.max_fpr:g}, "
        f"at least {targets.min_alerted} customers alerted{budget}; best recall wins",
        f"per tier where a tier has at least {targets.min_segment_outcomes} customers who churned and as many "
        "who stayed; elsewhere the global thresholds",
        f"scoring: {scoring}, model {model_version}; {result.events_read:,} events, {len(pop.customers):,} customers",
        f"precision read on the alerts up to {format_utc(from_us(settled_until))}, {CONFIRM_DAYS} days before the "
        "events end (later alerts' outcomes are not known yet)",
    ]
    budgets: dict[str, Any] = {}
    if settings.budgets:  # what the chosen thresholds would send per day, against each budget
        types, customers, times = chosen_alerts(columns, pop, settings.alerts, results)
        counts = daily_counts(
            types, customers, times, latest_tiers(result.log.customers, columns), settings.budgets
        )
        budgets = usage(
            counts, settings.budgets, pop.start_us // DAY_US, max(pop.end_us - 1, pop.start_us) // DAY_US
        )
    # The file in force (--config, else CHURN_CONFIG: the deployed tasks' s3:// object) is the base:
    # its other settings are carried over, so the written file can replace it as it is.
    source = config_source(base_config)
    other = read_config_values(source) if source else {}
    write_config(out, config_text(results, settings.alerts, other, header))
    load_settings(out)  # what was written must be what the worker accepts (raises ConfigError naming the key)
    plot = out.with_suffix(".html")
    plot.write_text(_page(results, targets, header, budgets), encoding="utf-8")
    if request.as_json:
        print(json.dumps({**_as_json(results, out, plot), "budgets": budgets}))
    else:
        print(format_table(results, targets))
        if budgets:
            print("\nalerts per day against each budget, with the chosen thresholds")
            print(format_usage(budgets))
        chosen = ", ".join(f"{r.rule}: {r.chosen.label if r.chosen else 'disabled'}" for r in results)
        print(f"\nwrote {out} ({chosen}) and {plot}")
    return 0


def _as_json(results: list[RuleResult], out: Path, plot: Path) -> dict[str, Any]:
    return {
        "config": str(out),
        "plot": str(plot),
        "rules": {
            r.rule: {
                "enabled": r.enabled,
                "chosen": r.chosen.params if r.chosen else None,
                "by_tier": r.tier_overrides(),
                "tiers": {
                    s.tier: {
                        "own_thresholds": s.swept,
                        "churned": s.churners,
                        "stayed": s.stayers,
                        "chosen": s.chosen.params if s.chosen else None,
                        "note": s.note(r.chosen, r.min_segment_outcomes),
                    }
                    for s in r.segments
                },
                "sweep": [{"params": c.params, **s} for c, s in r.rows],
            }
            for r in results
        },
    }


def _page(
    results: list[RuleResult], targets: TuneTargets, header: list[str], budgets: dict[str, Any] | None = None
) -> str:
    sections: list[tuple[str, str]] = [("", "".join(f"<p>{line}</p>" for line in header))]
    if budgets:
        sections.append(
            ("Alerts per day against each budget, chosen thresholds", budget_usage_section(budgets))
        )
    for result in results:
        rows = result.rows
        if len(rows[0][0].params) == 1:
            (name,) = rows[0][0].params
            series = {
                metric: [(c.params[name], float(s[key])) for c, s in rows if s[key] is not None]
                for metric, key in (
                    ("precision", "precision"),
                    ("recall", "recall"),
                    ("false positive rate", "false_positive_rate"),
                )
            }
            chart = line_chart(series, name, "share", y_range=(0, 1), markers=True)
        else:  # two thresholds: the trade-off itself, one point per pair
            points = [
                (float(s["recall"]), float(s["precision"]))
                for _, s in rows
                if s["recall"] is not None and s["precision"] is not None
            ]
            chart = line_chart(
                {"candidates": sorted(points)}, "recall", "precision", (0, 1), (0, 1), markers=True
            )
        volume = [
            [
                c.label,
                s["alerts"],
                s["customers_alerted"],
                s["precision"],
                s["recall"],
                s["false_positive_rate"],
                s["alerts_per_1000_customers_per_week"],
                "chosen" if c is result.chosen else ("meets targets" if targets.met(s) else ""),
            ]
            for c, s in rows
        ]
        verdict = (
            f"chosen: {result.chosen.label}" if result.chosen else "disabled: no threshold met the targets"
        )
        sections.append(
            (
                f"[alerts.{result.rule}] - {verdict}",
                chart
                + table(
                    [
                        "threshold",
                        "alerts",
                        "customers",
                        "precision",
                        "recall",
                        "FPR",
                        "alerts / 1k / week",
                        "",
                    ],
                    volume,
                )
                + "".join(
                    f"<p>{escape(segment.note(result.chosen, result.min_segment_outcomes))}</p>"
                    for segment in result.segments
                ),
            )
        )
    return page("Alert threshold sweep", sections)
