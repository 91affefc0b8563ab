"""`churn-model train`, `evaluate` and `compare`: the commands that read training data or history.

`register(sub, common, bundle_opt)` adds the three subcommands to the `churn-model` parser
(cli/model.py); each sets `func` to its handler. Heavy imports happen in the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.argtypes import holdout_fraction, positive_float, positive_int
from jobs.gate import MIN_NEGATIVES, MIN_POSITIVES
from model.exceptions import UsageError

if TYPE_CHECKING:
    from worker.alerts.config import AlertsConfig

EVENTS_HELP = (
    "event log: a file (.jsonl, .jsonl.gz, .parquet), a directory or a glob of them, or several; "
    "duplicates by event_id count once"
)
OUTCOMES_HELP = 'outcomes, JSON Lines: {"customer_id": ..., "churned_at": ISO or null} (docs/contracts.md, Outcomes files)'


def _history_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--events", nargs="+", metavar="PATH", required=required, help=EVENTS_HELP)
    parser.add_argument("--outcomes", type=Path, metavar="FILE", required=required, help=OUTCOMES_HELP)
    parser.add_argument(
        "--ignore-unknown-outcomes",
        action="store_true",
        help="accept an outcomes file naming customers the events never mention (otherwise exit 2)",
    )
    parser.add_argument(
        "--on-error",
        choices=["skip", "stop"],
        default="skip",
        help="bad event lines: skip them and report how many (default), or stop at the first",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="build the examples on a local Dask cluster of N processes (default 1: in process)",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="build the examples on an existing Dask cluster"
    )


def _candidates(text: str) -> tuple[str, ...]:
    from model.candidates import parse_candidates

    try:
        return parse_candidates(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: Any, common: argparse.ArgumentParser, bundle_opt: argparse.ArgumentParser) -> None:
    from model.datasources import DEFAULT_CUSTOMERS, DEFAULT_DAYS

    train = sub.add_parser(
        "train",
        parents=[common],
        help="train a model bundle on your event history (or simulated data)",
        description="With --events and --outcomes: build point-in-time examples from your own history with the "
        "worker's feature code, at the daily scoring instant of every active customer (the instants the backtest "
        "and live re-scoring use), labels from events and outcomes only (docs/model.md, Label definitions). Split "
        "honestly: early-stop and calibrate on instants after a time cut of other customers, test on a third "
        "group of customers. The model is two networks averaged: one trained on the training customers' instants "
        "before the cut (the out-of-time reading), one on all their instants (the whole calendar). Each churn head "
        "then serves the best of the candidates (--candidates: the network, gradient boosting on the same rows, "
        "a blend of the two) by AUC on the validation customers; trees run inside the same SavedModel. Writes a "
        "bundle: model.keras, saved_model/ (calibrated probabilities), feature_spec.json, metadata.json, "
        "metrics.json, MODEL_CARD.md (every candidate's figures and the choice), baselines.pkl, trees.npz. Without "
        "--events: the same path on a simulated log (--data simulated, the default), or the seed's generator "
        "(--data seed). Same seed, same weights.",
    )
    train.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="bundle directory to write (default: the cached default bundle); an existing bundle there is replaced",
    )
    _history_options(train, required=False)
    train.add_argument(
        "--data",
        choices=["simulated", "seed"],
        default="simulated",
        help="without --events: simulated (default), a simulated event log through the same path as "
        "your history; seed: the spec's segment generator (26 features, the rest zero)",
    )
    train.add_argument(
        "--customers",
        type=positive_int,
        help=f"--data simulated: customers (default {DEFAULT_CUSTOMERS}); --data seed: rows (default 10000)",
    )
    train.add_argument("--days", type=positive_int, help=f"--data simulated: days (default {DEFAULT_DAYS})")
    train.add_argument(
        "--seed", type=int, default=42, help="seed for data, sampling and weights (default 42)"
    )
    train.add_argument(
        "--validation-fraction",
        type=holdout_fraction,
        default=0.15,
        help="share of customers whose instants after the time cut validate and calibrate (default 0.15)",
    )
    train.add_argument(
        "--test-fraction",
        type=holdout_fraction,
        default=0.15,
        help="share of customers held out for the evaluation written to metrics.json (default 0.15; 0 = none)",
    )
    train.add_argument(
        "--holdout",
        choices=["latest", "random"],
        default="latest",
        help="validation and test customers: the latest to appear in the log (default; new customers are "
        "who the model meets next) or a random share",
    )
    train.add_argument(
        "--max-train-rows",
        type=positive_int,
        default=240_000,
        help="training instants are sampled (every k-th day per customer) down to about this many (default 240000)",
    )
    train.add_argument("--epochs", type=positive_int, default=40, help="maximum epochs (default 40)")
    train.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    train.add_argument(
        "--learning-rate", type=positive_float, default=1e-3, help="Adam learning rate (default 0.001)"
    )
    train.add_argument(
        "--patience",
        type=int,
        default=5,
        help="early-stopping patience in epochs (the churn heads' validation AUC); 0 = off (default 5)",
    )
    train.add_argument(
        "--weight-decay",
        type=float,
        default=1.0,
        help="decoupled weight decay per step, x learning rate (default 1.0; 0 = off)",
    )
    train.add_argument("--no-ema", action="store_true", help="do not average weights (EMA) during training")
    train.add_argument(
        "--earlier-instants-only",
        action="store_true",
        help="one network, trained on the instants before the time cut only: every reading of the "
        "test customers after the cut is then strictly out of time (default: two networks averaged)",
    )
    train.add_argument(
        "--candidates",
        type=_candidates,
        default=None,
        metavar="NAMES",
        help="what may serve each churn head, chosen on the validation customers: a comma-separated subset of "
        "network, gbm (gradient boosting on the same rows, compiled into the SavedModel) and blend (a weighted "
        "average of their logits, the weight chosen on validation); default all three. `--candidates network` "
        "serves the network alone (the behaviour before candidates). Logs only: --data seed keeps the network",
    )
    train.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation")
    train.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the logistic and GBM baselines the model card compares with (faster)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument(
        "--json", action="store_true", help="print the bundle path, version and metrics as JSON"
    )
    train.set_defaults(func=run_train)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common, bundle_opt],
        help="measure a bundle on any event log, or its held-out customers",
        description="With --events and --outcomes: score every active customer at every daily scoring instant of the "
        "log with the bundle (customers it was trained on are left out) and report the seed's targets (churn AUC "
        "14/30 days, IB call spike precision and recall, health MAE, p95 latency, critical-alert false positive "
        "rate and share of critical alerts that were false), every head's metrics, the baselines fitted on the "
        "bundle's training rows, calibration with reliability bins, and each alert rule at the configured "
        "thresholds, with the definitions `churn-worker backtest` uses. Without --events: the bundle's own "
        "held-out customers. Exit 0 whether or not targets pass.",
    )
    _history_options(evaluate, required=False)
    evaluate.add_argument(
        "--config",
        type=str,
        metavar="FILE",
        help="alert thresholds: the worker's config file (default: CHURN_CONFIG, a path or an s3:// object, as the worker reads it; CHURN_ALERTS__* variables apply over it)",
    )
    evaluate.add_argument(
        "--include-training-customers",
        action="store_true",
        help="also score the customers the bundle was trained or calibrated on (optimistic)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    evaluate.set_defaults(func=run_evaluate)

    compare = sub.add_parser(
        "compare",
        parents=[common],
        help="promotion gate: is a candidate bundle not worse than the incumbent?",
        description="Score the same history with both bundles (customers either was trained on are left out) and "
        "bootstrap customers for 95%% intervals of candidate minus incumbent: AUC 14/30 days, 30-day ECE, and the "
        "precision of each enabled alert rule at the configured thresholds. A metric fails when the candidate is "
        "worse by more than its margin (AUC 0.01, ECE 0.01, precision 0.05) or significantly worse (the interval "
        "entirely on the worse side). The gate also fails when it cannot judge: a horizon with fewer churners or "
        "customers who stayed than --min-positives / --min-negatives, or a metric without a value (a rule's precision "
        "is gated only where both models alert at least 10 customers). Records gate.json in the candidate bundle, "
        "which `churn-model deploy` checks. Exit 0 when the candidate is not worse, 1 when it is worse or cannot "
        "be judged, 2 on bad input.",
    )
    compare.add_argument("--candidate", type=Path, required=True, metavar="DIR", help="the new bundle")
    compare.add_argument(
        "--incumbent", type=Path, required=True, metavar="DIR", help="the bundle in production"
    )
    _history_options(compare, required=True)
    compare.add_argument(
        "--config",
        type=str,
        metavar="FILE",
        help="alert thresholds: the worker's config file (default: CHURN_CONFIG, a path or an s3:// object, as the worker reads it; CHURN_ALERTS__* variables apply over it)",
    )
    compare.add_argument(
        "--include-training-customers",
        action="store_true",
        help="also score customers either bundle was trained on (a log whose ids mean other customers)",
    )
    compare.add_argument("--rounds", type=positive_int, default=200, help="bootstrap rounds (default 200)")
    compare.add_argument(
        "--min-positives",
        type=positive_int,
        default=MIN_POSITIVES,
        metavar="N",
        help=f"fewest customers who churned within each horizon (14 and 30 days) the gate needs to judge the "
        f"churn heads; with fewer it fails, 'cannot judge' (default {MIN_POSITIVES})",
    )
    compare.add_argument(
        "--min-negatives",
        type=positive_int,
        default=MIN_NEGATIVES,
        metavar="N",
        help=f"fewest customers who did not churn within each horizon the gate needs (default {MIN_NEGATIVES})",
    )
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.add_argument("--json", action="store_true", help="print the gate as JSON")
    compare.set_defaults(func=run_compare)


def alert_thresholds(config: str | None) -> AlertsConfig:
    """The alert rules' thresholds exactly as the worker loads them: `--config FILE`, else
    CHURN_CONFIG (a path or the s3:// object the service stack passes), then CHURN_ALERTS__*
    variables over it. What `tune` wrote is what evaluate, compare and retrain judge by."""
    from worker.settings import load_settings

    return load_settings(config).alerts


def _check_history(args: argparse.Namespace) -> None:
    if bool(args.events) != bool(args.outcomes):
        raise UsageError("--events and --outcomes go together: the log and who churned in it")


def run_train(args: argparse.Namespace) -> int:
    from jobs.training import model_cache, train
    from model.bundle import default_bundle_dir, load_bundle
    from model.datasources import DataParams
    from model.training import TrainConfig

    _check_history(args)
    if args.patience < 0 or args.weight_decay < 0:
        raise UsageError("--patience and --weight-decay must be 0 (off) or more")
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        weight_decay=args.weight_decay,
        ema=not args.no_ema,
        every_instant_member=not args.earlier_instants_only,
        **({} if args.candidates is None else {"candidates": args.candidates}),
    )
    common = {
        "seed": args.seed,
        "test_fraction": args.test_fraction,
        "validation_fraction": args.validation_fraction,
        "max_train_rows": args.max_train_rows,
        "holdout": args.holdout,
    }
    if args.events:
        data = DataParams(
            source="events",
            events=tuple(args.events),
            outcomes=str(args.outcomes),
            allow_unknown_outcomes=args.ignore_unknown_outcomes,
            on_error=args.on_error,
            workers=args.workers,
            scheduler=args.scheduler,
            **common,
        )
    else:
        if args.data == "seed" and args.test_fraction == 0:
            raise UsageError("--data seed needs a --test-fraction above 0")
        data = DataParams(source=args.data, customers=args.customers, days=args.days, **common)
    out = args.out if args.out is not None else default_bundle_dir(model_cache())
    train(
        out,
        config,
        data,
        progress=not args.quiet,
        evaluate=not args.no_evaluate,
        baselines=not args.no_baselines,
    )
    bundle = load_bundle(out)
    evaluation = bundle.metrics().get("evaluation")
    if args.json:
        print(
            json.dumps({"bundle": str(out), "model_version": bundle.model_version, "evaluation": evaluation})
        )
    else:
        if evaluation:
            from jobs.evaluation import format_report

            print(format_report(evaluation))
        from model.candidates import served_summary

        print(f"serves: {served_summary(bundle.metadata)}")
        print(f"bundle: {out} (model card: {out / 'MODEL_CARD.md'})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from cli.model import load_cli_bundle
    from jobs.evaluation import format_report

    _check_history(args)
    bundle = load_cli_bundle(args)
    report = evaluate_on_log(bundle, args) if args.events else evaluate_recorded(bundle, args)
    report["model_version"] = bundle.model_version
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def evaluate_on_log(bundle: Any, args: argparse.Namespace) -> dict[str, Any]:
    from jobs.evaluation import evaluate_examples
    from model.baselines import load_baselines
    from model.bundle import training_customers
    from model.owndata import BuildOptions, build_examples

    excluded = frozenset() if args.include_training_customers else training_customers(bundle)
    options = BuildOptions(
        mode="evaluation",
        excluded=excluded,
        on_error=args.on_error,
        workers=args.workers,
        scheduler=args.scheduler,
        allow_unknown_outcomes=args.ignore_unknown_outcomes,
    )
    examples, build = build_examples(
        args.events, args.outcomes, options, progress=not args.json and sys.stderr.isatty()
    )
    report = evaluate_examples(
        bundle.serving_fn(),
        examples.x,
        examples.y,
        examples.customer,
        examples.t_us,
        churn=build.churn,
        churned_at=build.outcomes.churned_at_us,
        start_us=build.start_us,
        end_us=build.end_us,
        alerts=alert_thresholds(args.config),
        baselines=None if args.no_baselines else load_baselines(bundle.path),
        health_truth=build.outcomes.health,  # the simulator's latent health, where its truth file is
    )
    report["log"] = examples.summary
    report["left_out_training_customers"] = examples.summary["excluded_customers"]  # of this log's customers
    return report


def evaluate_recorded(bundle: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The bundle's own held-out data, rebuilt from what its metadata records."""
    from jobs.evaluation import evaluate_held_out
    from jobs.training import model_cache
    from model.datasources import DataParams, load_training_data
    from model.training import data_version

    recorded = bundle.metadata.get("data", {})
    fields = {k: v for k, v in recorded.items() if k in DataParams.__dataclass_fields__}
    fields["events"] = tuple(fields.get("events") or ())
    params = DataParams(**fields)
    if not args.json:
        print(f"rebuilding the {params.source} data of model {bundle.model_version} ...", file=sys.stderr)
    if recorded.get("data_version") and recorded["data_version"] != data_version():
        print(
            f"note: the example builder or simulator changed since this bundle was trained (data "
            f"{recorded['data_version']}, now {data_version()}): its held-out customers are the same, their "
            "examples may differ",
            file=sys.stderr,
        )
    loaded = load_training_data(params, progress=False, say=lambda m: None, cache=model_cache())
    return evaluate_held_out(bundle, loaded, params.seed)


def run_compare(args: argparse.Namespace) -> int:
    from jobs.gate import GateOptions, format_gate, gate_bundles
    from model.bundle import load_bundle

    candidate, incumbent = load_bundle(args.candidate), load_bundle(args.incumbent)
    record = gate_bundles(
        candidate,
        incumbent,
        args.events,
        args.outcomes,
        GateOptions(
            on_error=args.on_error,
            workers=args.workers,
            scheduler=args.scheduler,
            allow_unknown_outcomes=args.ignore_unknown_outcomes,
            include_training_customers=args.include_training_customers,
            alerts=alert_thresholds(args.config),
            rounds=args.rounds,
            seed=args.seed,
            min_positives=args.min_positives,
            min_negatives=args.min_negatives,
        ),
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(record))
    else:
        print(format_gate(record))
    return 0 if record["passed"] else 1
