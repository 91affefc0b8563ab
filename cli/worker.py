"""`churn-worker`: the command line. Parses arguments, builds Settings once, dispatches to
`cli.commands.*`. Exit codes: 0 success, 2 bad usage or input, 1 any other failure; errors are
one line unless `--debug`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cli.argtypes import iso_day, iso_instant, positive_float, positive_int, share
from cli.errors import run_command
from worker.exceptions import UsageError

if TYPE_CHECKING:
    from worker.settings import Settings

PROG = "churn-worker"
EVENTS_HELP = "event files (.jsonl, .jsonl.gz, .parquet), directories, globs or s3://bucket/prefix/; duplicates by event_id count once"
DEFAULT_BUNDLE_HELP = (
    "model bundle (default: the cached default bundle, trained first when it is missing: a few "
    "minutes, once; every other argument is checked before)"
)


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: the options work before or after the command without a subparser's default undoing them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=str,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML or YAML settings file (or CHURN_CONFIG)",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Streaming churn-alert worker: customer events in (SQS or Kinesis), rolling 7/14/30-day "
        "features in DynamoDB, a SageMaker multi-task model, alerts out to SNS.",
        epilog="Run `churn-worker COMMAND --help` for a command's options. `make run` starts everything locally.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    local = sub.add_parser(
        "local",
        parents=[common],
        help="run the whole pipeline on an embedded local stack (make run)",
        description="Start moto's server on 127.0.0.1 and the local model endpoint (training the default "
        "bundle on first use), bootstrap every resource, run the worker, load simulated customers' history "
        "into the feature store, send their last days through SQS as live traffic and print the alerts as "
        "retention teams receive them, then a summary. Ctrl-C stops everything cleanly.",
    )
    local.add_argument("--customers", type=positive_int, default=60, help="simulated customers (default 60)")
    local.add_argument("--days", type=positive_int, default=30, help="days of simulated history (default 30)")
    local.add_argument(
        "--live-days",
        type=positive_int,
        default=2,
        help="the most recent days are sent through SQS; older ones preloaded (default 2)",
    )
    local.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    local.add_argument(
        "--events",
        nargs="+",
        metavar="PATH",
        help="events to use instead of the simulation: files, directories, globs or s3:// prefixes",
    )
    local.add_argument(
        "--rate",
        type=float,
        default=5.0,
        help="live events per second sent to SQS (default 5; 0 = as fast as possible)",
    )

    run = sub.add_parser(
        "run",
        parents=[common],
        help="run the worker (the ECS service's command)",
        description="Consume events from SQS or Kinesis (CHURN_SOURCE), keep features in DynamoDB, score with "
        "the SageMaker endpoint, publish alerts to SNS. Logs are JSON lines when stderr is not a terminal. "
        "Serves /healthz, /readyz and /metrics on CHURN_HEALTH_PORT. SIGTERM: stop polling, finish or release "
        "in-flight work within CHURN_SHUTDOWN_GRACE_SECONDS, exit 0.",
    )
    run.add_argument(
        "--json-logs", action="store_true", default=None, help="force JSON logs on a terminal too"
    )

    features = sub.add_parser(
        "features",
        parents=[common],
        help="compute features for every customer in an event log",
        description="Fold EVENTS (event files .jsonl, .jsonl.gz, .parquet, directories, globs or "
        "s3://bucket/prefix/; duplicates by event_id count once) into a feature store and print each "
        "customer's features at --as-of. Events after --as-of or older than retention before it are left out "
        "and counted on stderr. Input without a valid event: exit 2, no events in PATH.",
    )
    features.add_argument("events_file", nargs="+", metavar="EVENTS", help=EVENTS_HELP)
    features.add_argument(
        "--as-of",
        type=iso_instant,
        required=True,
        metavar="ISO",
        help="the instant the windows end at, e.g. 2026-11-27T12:00:00Z",
    )
    features.add_argument(
        "--store",
        choices=["memory", "dynamodb"],
        default="memory",
        help="memory (default) or the configured DynamoDB table (moto or AWS via AWS_ENDPOINT_URL)",
    )
    features.add_argument("--json", action="store_true", help="one JSON line per customer with all features")
    features.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="on a bad line: stop with exit code 2 (default) or report it and go on",
    )

    bootstrap = sub.add_parser(
        "bootstrap",
        parents=[common],
        help="create the DynamoDB table(s) and other resources, idempotently",
        description="Create every resource the worker needs from the settings, against whatever endpoint is "
        "configured. Existing resources are left alone. Prints the names.",
    )
    bootstrap.add_argument("--json", action="store_true", help="one JSON line per resource")

    alerts = sub.add_parser("alerts", parents=[common], help="watch the alerts the worker publishes")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    tail = alerts_sub.add_parser(
        "tail",
        parents=[common],
        help="print alerts as they arrive",
        description="Subscribe a temporary SQS queue to CHURN_ALERTS_TOPIC_ARN (with a filter policy for "
        "--type/--severity), print alerts as they arrive, and remove the subscription and queue on exit.",
    )
    tail.add_argument(
        "--type",
        dest="alert_type",
        metavar="T",
        choices=[
            "IB_CALL_SPIKE",
            "HIGH_CHURN_RISK",
            "HEALTH_SCORE_CRITICAL",
            "FIRST_SESSION_RISK",
            "SESSION_VELOCITY_DROP",
        ],
        help="only this alert type",
    )
    tail.add_argument(
        "--severity", metavar="S", choices=["CRITICAL", "HIGH", "MEDIUM"], help="only this severity"
    )
    tail.add_argument("--json", action="store_true", help="print each alert's JSON body")
    tail.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)"
    )
    stats = alerts_sub.add_parser(
        "stats",
        parents=[common],
        help="live outcomes per alert type: confirmed, expired, precision",
        description="Read the alert ledger's daily counters: per alert type, the alerts claimed (both experiment "
        "arms), confirmed (the customer churned within 30 days after), expired (30 days without churn), open, "
        "and precision (confirmed / resolved), for the alerts of --since .. --until (UTC days of their as_of); "
        "then the settled days only (every outcome known: the live precision), and per arm when an experiment "
        "holds alerts back. One DynamoDB Query per day, no Scan.",
    )
    stats.add_argument("--since", type=iso_day, metavar="ISO", help="first alert day (default: 60 days ago)")
    stats.add_argument("--until", type=iso_day, metavar="ISO", help="last alert day (default: today)")
    stats.add_argument("--json", action="store_true", help="print the counts as JSON")
    alerts_sub.add_parser(
        "stamp-churns",
        parents=[common],
        help="once, after upgrading: stamp the churns an earlier version recorded (a Scan of the ledger)",
        description="Upgrade an alert ledger table written before churn stamps: copy every recorded churn (and "
        "return) onto the customer's claim items, then mark the table as stamped. Until then workers check each "
        "claim against the customer's #churned item (2 more write units per alert; they log that once). Run it "
        "once every worker runs this version. A Scan of the whole ledger table, with your credentials (the "
        "worker's role has no Scan); safe to run again and while workers run.",
    )
    report = alerts_sub.add_parser(
        "report",
        parents=[common],
        help="an HTML page: open, deferred and resolved alerts, precision, the customers most at risk",
        description="Read the alert ledger (its daily counters, its sparse index and the open alerts' items by "
        "key; never a Scan) and write one self-contained HTML page (inline SVG, no script, no network): alerts "
        "sent and deferred per budget and per day against its cap, alerts opened, escalated and resolved per "
        "type with the mean time to resolution, live precision and time to resolution over time, the customers "
        "most at risk with what changed since their previous scoring, and the deferred alerts, most valuable "
        "first.",
    )
    report.add_argument("--since", type=iso_day, metavar="DAY", help="first alert day (default: 30 days ago)")
    report.add_argument("--until", type=iso_day, metavar="DAY", help="last alert day (default: today)")
    report.add_argument("--out", type=Path, required=True, metavar="FILE", help="the HTML file to write")
    report.add_argument("--json", action="store_true", help="also print the report's numbers as JSON")

    _add_history_commands(sub, common)
    _add_loop_commands(sub, common)

    config = sub.add_parser("config", parents=[common], help="show or validate settings")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser(
        "show", parents=[common], help="print the effective settings, secrets redacted"
    )
    show.add_argument("--json", action="store_true")
    validate = config_sub.add_parser(
        "validate", parents=[common], help="check a config file; exit 2 if invalid"
    )
    validate.add_argument("file", metavar="FILE", help="a local path or an s3://bucket/key object")
    return parser


def _add_history_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`replay`, `backtest`, `tune`: history through the live system, or through its code in process."""
    replay = sub.add_parser(
        "replay",
        parents=[common],
        help="publish a historical event log to the live queue or stream",
        description="Stream EVENTS (event files .jsonl, .jsonl.gz, .parquet, directories, globs or "
        "s3://bucket/prefix/) to CHURN_SQS_QUEUE_URL (send_message_batch) or "
        "CHURN_KINESIS_STREAM (put_records, PartitionKey = customer_id). Files are read one after another, "
        "in the order listed (a directory or glob in name order, an s3:// prefix in key order: the archive's "
        "keys sort by day), and one customer's events go out in that order, not re-sorted by occurred_at: "
        "the next is sent only once the previous was accepted. An event_id already sent is not sent again "
        "(counted as a duplicate). Throttling and partly failed batches are "
        "retried (only the failed entries) with jittered back-off: nothing is lost and nothing accepted is sent "
        "again (FIFO queues also get MessageDeduplicationId = event_id). A progress bar on a terminal, then a "
        "summary line: sent, skipped, retried, out of range, duplicates, seconds. Every argument and the first "
        "events are checked before anything is sent: input without a valid event is exit 2, no events in PATH; "
        "no AWS credentials is exit 2 naming the queue or stream.",
    )
    replay.add_argument("events_file", nargs="+", metavar="EVENTS", help=EVENTS_HELP)
    replay.add_argument(
        "--to", choices=["sqs", "kinesis"], required=True, help="the configured queue or stream"
    )
    replay.add_argument(
        "--rate", type=positive_float, metavar="EVENTS_PER_S", help="at most this many events/s"
    )
    replay.add_argument(
        "--speedup",
        type=positive_float,
        metavar="X",
        help="keep the events' spacing in time, divided by X (default: as fast as allowed)",
    )
    replay.add_argument(
        "--start", type=iso_instant, metavar="ISO", help="only events at or after this instant"
    )
    replay.add_argument("--end", type=iso_instant, metavar="ISO", help="only events before this instant")
    replay.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="on a bad line: stop with exit code 2 (default) or report it and go on",
    )
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")

    backtest = sub.add_parser(
        "backtest",
        parents=[common],
        help="run the pipeline over history in process, on event time",
        description="Replay EVENTS (event files, directories, globs or s3:// prefixes) through the worker's "
        "pipeline in process: in-memory store, ledger and publisher, the model in process (--bundle, or the "
        "cached default bundle, trained first when missing: a few minutes, once) or --endpoint, and a clock that "
        "follows "
        "the events (batches of --batch-hours of event time, each processed at its window's end; at every UTC day's "
        "end the active customers no event scored that day are re-scored, as the live worker re-scores quiet "
        "customers). Writes DIR/alerts.jsonl "
        "(the bodies production would publish), DIR/report.json and DIR/report.html. With --outcomes (CONTRACTS "
        "section 5, e.g. from `churn-model simulate`) the report gives precision, recall, false positive rate, "
        "lead time and volume per alert type, the model's AUC, calibration and health MAE, and the seed's targets. "
        "Every argument (event paths read up to their first event, the outcomes file, the output directory) is "
        "checked before the model is loaded or trained.",
    )
    backtest.add_argument("events_file", nargs="+", metavar="EVENTS", help=EVENTS_HELP)
    backtest.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the outputs")
    backtest.add_argument("--outcomes", type=Path, metavar="FILE", help="who churned when (JSON Lines)")
    backtest.add_argument(
        "--endpoint", metavar="NAME", help="score with this SageMaker endpoint, not in process"
    )
    backtest.add_argument("--bundle", type=Path, metavar="DIR", help=DEFAULT_BUNDLE_HELP)
    backtest.add_argument(
        "--batch-hours",
        type=positive_float,
        default=24.0,
        metavar="H",
        help="event time per pipeline batch, each processed at the end of its window (default 24: "
        "UTC days, every score at a day's end, the instants training uses; 1 is closer to live "
        "scoring and about twice as slow)",
    )
    backtest.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="on a bad line: stop with exit code 2 (default) or report it and go on",
    )
    backtest.add_argument("--json", action="store_true", help="print a JSON summary instead of the tables")
    _add_engine_options(backtest)

    tune = sub.add_parser(
        "tune",
        parents=[common],
        help="sweep alert thresholds against outcomes and write a config file",
        description="Backtest EVENTS (event files, directories, globs or s3:// prefixes; as `backtest`, with "
        "--bundle or the cached default bundle, trained first when missing: a few minutes, once) once, then sweep "
        "every rule's thresholds on the scoring instants it "
        "recorded (same cooldowns and churn handling as the ledger), print the precision/recall/volume trade-off, "
        "pick per rule the threshold with the best recall that meets --target-precision and --max-fpr (and "
        "--max-per-day) (or disable the rule if none does), the same per tier where the tier has enough outcomes "
        "(--min-segment-outcomes; elsewhere the global thresholds, said so in the table and the file), and write "
        "FILE: [alerts.<type>] and [alerts.<type>.by_tier.<tier>] tables that `run --config FILE`, "
        "`backtest --config FILE` and `config validate FILE` take as they are. A plot goes next to FILE (.html). "
        "Precision is read on settled alerts, those with 30 days of events after them (an alert nearer the end "
        "cannot be told true or false yet): EVENTS must span more than 30 days.",
    )
    tune.add_argument("events_file", nargs="+", metavar="EVENTS", help=EVENTS_HELP)
    tune.add_argument(
        "--outcomes", type=Path, required=True, metavar="FILE", help="who churned when (JSON Lines)"
    )
    tune.add_argument("--out", type=Path, required=True, metavar="FILE", help="the TOML config file to write")
    tune.add_argument(
        "--target-precision",
        type=share,
        default=0.75,
        metavar="P",
        help="least precision a threshold must reach (default 0.75, the seed's IB spike target)",
    )
    tune.add_argument(
        "--max-fpr",
        type=share,
        default=0.15,
        metavar="F",
        help="highest false positive rate allowed (default 0.15, the seed's critical-alert target)",
    )
    tune.add_argument(
        "--min-alerted",
        type=positive_int,
        default=5,
        metavar="N",
        help="ignore thresholds that alert fewer customers than this with a settled alert (30 days of "
        "events after it; default 5)",
    )
    tune.add_argument(
        "--max-per-day",
        type=positive_float,
        default=None,
        metavar="N",
        help="a capacity budget: only thresholds that send at most N alerts a day on average, per rule (a "
        "tier: its share of N); the table shows alerts per day, and against each [budgets.<name>] of the config",
    )
    tune.add_argument(
        "--min-segment-outcomes",
        type=positive_int,
        default=20,
        metavar="N",
        help="a tier gets thresholds of its own ([alerts.<type>.by_tier.<tier>]) when it has at least N customers "
        "who churned and N who stayed; elsewhere the global ones apply, as the table and the file say (default 20)",
    )
    tune.add_argument("--bundle", type=Path, metavar="DIR", help=DEFAULT_BUNDLE_HELP)
    tune.add_argument("--endpoint", metavar="NAME", help="score with this SageMaker endpoint, not in process")
    tune.add_argument(
        "--batch-hours",
        type=positive_float,
        default=24.0,
        metavar="H",
        help="event time per pipeline batch, as for backtest (default 24)",
    )
    tune.add_argument("--on-error", choices=["stop", "skip"], default="stop", help="as for backtest")
    tune.add_argument("--json", action="store_true", help="print the sweep and the choices as JSON")
    _add_engine_options(tune)


def _add_loop_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """`uplift`, `outcomes` and `shadow report`: what the alerts achieved, who churned, how a new model compares."""
    uplift = sub.add_parser(
        "uplift",
        parents=[common],
        help="churn after alerts, treatment arm against control (the A/B holdout)",
        description="Compare churn within --horizon-days after the first alert of each (customer, alert type) pair, "
        "treatment arm (published to the retention team) against control (withheld), per alert type and over all: "
        "churn rate per arm, the difference with a 95% confidence interval and p-value, and how many pairs per arm "
        "an effect of 2, 5 or 10 points needs for 80% power. Pairs whose horizon runs past --end without a churn "
        "are left out (censored). Alerts come from --alerts (alert bodies: a backtest's alerts.jsonl, topic dumps) "
        "or --ledger (the alert ledger's records of both arms: a Scan of the table, billed by its size).",
    )
    uplift.add_argument(
        "--outcomes", type=Path, required=True, metavar="FILE", help="who churned when (JSON Lines)"
    )
    source = uplift.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--alerts",
        nargs="+",
        metavar="PATH",
        help="alert bodies: files (.jsonl, .jsonl.gz), directories, globs or s3:// prefixes",
    )
    source.add_argument(
        "--ledger", action="store_true", help="the alert ledger's records (CHURN_TABLE_PREFIX)"
    )
    uplift.add_argument(
        "--since", type=iso_instant, metavar="ISO", help="the experiment's start: earlier alerts are left out"
    )
    uplift.add_argument(
        "--end",
        type=iso_instant,
        metavar="ISO",
        help="outcomes are known up to here (default: the latest alert or churn)",
    )
    uplift.add_argument(
        "--horizon-days", type=positive_int, default=30, metavar="N", help="churn within N days (default 30)"
    )
    uplift.add_argument("--json", action="store_true", help="print the report as JSON")

    outcomes = sub.add_parser(
        "outcomes",
        parents=[common],
        help="derive the outcomes file (who churned when) from an event log or archive",
        description="Read every event of --events (files .jsonl, .jsonl.gz, .parquet, directories, globs, or "
        "s3://bucket/prefix/ such as the worker's archive, CHURN_ARCHIVE_S3_URI) and write FILE: one JSON line per "
        'customer, {"customer_id": ..., "churned_at": ISO or null} (docs/contracts.md, Outcomes files). '
        "churned_at is the customer's latest customer_churned if it is later than their latest "
        "customer_signed_up (a customer who signed up again is back: null), else null. Duplicates by event_id count once. The file is what "
        "`churn-model train/evaluate/compare --outcomes`, `backtest`, `tune`, `uplift` and `shadow report` read.",
    )
    outcomes.add_argument(
        "--events",
        nargs="+",
        required=True,
        metavar="PATH",
        help="event files, directories, globs or s3:// prefixes",
    )
    outcomes.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the outcomes file to write"
    )
    outcomes.add_argument(
        "--since",
        type=iso_day,
        metavar="DAY",
        help="leave out the archive's date=YYYY-MM-DD partitions before this UTC day (unread)",
    )
    outcomes.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="on a bad line: stop with exit code 2 (default) or report it and go on",
    )
    outcomes.add_argument("--json", action="store_true", help="print the summary as JSON")

    shadow = sub.add_parser("shadow", parents=[common], help="the shadow model: compare it with the live one")
    shadow_sub = shadow.add_subparsers(dest="shadow_command", metavar="ACTION", required=True)
    report = shadow_sub.add_parser(
        "report",
        parents=[common],
        help="live and shadow alerts against outcomes: precision, recall, agreement",
        description="Compare the live model's alerts with the shadow model's (CHURN_SHADOW_ENDPOINT_NAME) over the "
        "period both cover, against outcomes: per alert type, customers alerted, precision (alerted customers who "
        "churned within 30 days after an alert), recall (churners alerted in the 30 days before) and agreement "
        "(customers both alerted / either alerted). Shadow alerts: the shadow log (--shadow; default the archive "
        "bucket's shadow/ prefix). Live alerts: a log of alert bodies (--live) or the alert ledger (--ledger, a "
        "Scan). Interventions follow live alerts only: with an experiment on, --arm control compares fairly.",
    )
    report.add_argument(
        "--outcomes", type=Path, required=True, metavar="FILE", help="who churned when (JSON Lines)"
    )
    report.add_argument(
        "--shadow",
        nargs="+",
        metavar="PATH",
        help="shadow records: files, directories, globs or s3:// prefixes (default: "
        "s3://<archive bucket>/shadow/)",
    )
    live = report.add_mutually_exclusive_group(required=True)
    live.add_argument(
        "--live", nargs="+", metavar="PATH", help="live alert bodies: files, directories, globs, s3://"
    )
    live.add_argument("--ledger", action="store_true", help="the alert ledger's records (CHURN_TABLE_PREFIX)")
    report.add_argument("--arm", choices=["treatment", "control"], help="only this experiment arm's alerts")
    report.add_argument(
        "--end",
        type=iso_instant,
        metavar="ISO",
        help="outcomes are known up to here (default: the latest alert or churn)",
    )
    report.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _add_engine_options(command: argparse.ArgumentParser) -> None:
    """Where offline work runs: in process, local Dask workers, or an existing Dask cluster."""
    group = command.add_argument_group(
        "parallel work (customers are split into shards by a hash of their id)"
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="worker processes on this machine (default: one per core for inputs of 64 MB or "
        "more, else 1; 1 runs in this process without Dask). Results are identical for any N",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on this existing Dask cluster (e.g. tcp://10.0.0.5:8786; default "
        "CHURN_DASK_SCHEDULER); its workers need this package and read access to the events",
    )
    group.add_argument(
        "--shards",
        type=positive_int,
        metavar="S",
        help="customer shards, a divisor of 64 (default: by input size, about 64 MB each: a shard is "
        "held in memory while it runs)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None)
    args.debug = getattr(args, "debug", False)
    return run_command(PROG, lambda: _dispatch(args), args.debug)


def _dispatch(args: argparse.Namespace) -> int:
    from worker.settings import load_settings

    if args.command == "config":
        from cli.commands.config import run_config_show, run_config_validate

        if args.config_command == "validate":
            return run_config_validate(args.file)
        return run_config_show(args.config, args.json)

    settings = load_settings(args.config)
    if args.command == "features":
        from cli.commands.features import run_features

        return asyncio.run(
            run_features(settings, args.events_file, args.as_of, args.store, args.json, args.on_error)
        )
    if args.command == "bootstrap":
        from cli.commands.bootstrap import run_bootstrap

        return asyncio.run(run_bootstrap(settings, args.json))
    if args.command == "local":
        from cli.commands.local import run_local
        from worker.logs import configure_logging

        # The alerts are the output here; the worker's INFO lines would bury them (--debug shows all).
        configure_logging(args.debug, json_logs=False, level=None if args.debug else "WARNING")
        return run_local(
            settings, args.customers, args.days, args.live_days, args.seed, args.events, args.rate
        )
    if args.command == "alerts" and args.alerts_command == "report":
        from cli.commands.alerts_report import run_alerts_report

        return asyncio.run(run_alerts_report(settings, args.since, args.until, args.out, args.json))
    if args.command == "alerts" and args.alerts_command == "stamp-churns":
        from cli.commands.alerts_stamp_churns import run_stamp_churns

        return asyncio.run(run_stamp_churns(settings))
    if args.command == "alerts" and args.alerts_command == "stats":
        from cli.commands.alerts_stats import run_alerts_stats

        return asyncio.run(run_alerts_stats(settings, args.since, args.until, args.json))
    if args.command == "alerts":
        from cli.commands.alerts_tail import run_alerts_tail

        return asyncio.run(run_alerts_tail(settings, args.alert_type, args.severity, args.json, args.timeout))
    if args.command in ("replay", "backtest", "tune"):
        return _dispatch_history(args, settings)
    if args.command == "uplift":
        from cli.commands.uplift import UpliftRequest, run_uplift

        return asyncio.run(
            run_uplift(
                settings,
                UpliftRequest(
                    args.outcomes,
                    alerts=args.alerts,
                    ledger=args.ledger,
                    since=args.since,
                    end=args.end,
                    horizon_days=args.horizon_days,
                    as_json=args.json,
                ),
            )
        )
    if args.command == "outcomes":
        from cli.commands.outcomes import OutcomesRequest, run_outcomes

        return run_outcomes(
            OutcomesRequest(
                args.events, args.out, since=args.since, on_error=args.on_error, as_json=args.json
            )
        )
    if args.command == "shadow":
        from cli.commands.shadow_report import ShadowReportRequest, run_shadow_report

        return asyncio.run(
            run_shadow_report(
                settings,
                ShadowReportRequest(
                    args.outcomes,
                    shadow=args.shadow,
                    live=args.live,
                    ledger=args.ledger,
                    arm=args.arm,
                    end=args.end,
                    as_json=args.json,
                ),
            )
        )
    if args.command == "run":
        from worker.logs import configure_logging
        from worker.runtime import run_worker
        from worker.settings import check_runnable

        configure_logging(args.debug, json_logs=args.json_logs)
        check_runnable(settings)
        return asyncio.run(run_worker(settings))
    raise UsageError(f"unknown command {args.command!r}")  # argparse already refuses these


def _dispatch_history(args: argparse.Namespace, settings: Settings) -> int:
    from worker.logs import configure_logging

    # The summary and the report are the output; one INFO line per alert would bury them.
    configure_logging(args.debug, json_logs=False, level=None if args.debug else "WARNING")
    if args.command == "replay":
        from jobs.replay import ReplayRequest, run_replay

        return asyncio.run(
            run_replay(
                settings,
                ReplayRequest(
                    args.events_file,
                    args.to,
                    rate=args.rate,
                    speedup=args.speedup,
                    start=args.start,
                    end=args.end,
                    on_error=args.on_error,
                    as_json=args.json,
                ),
            )
        )
    from cli.commands.backtest import BacktestRequest

    request = BacktestRequest(
        args.events_file,
        args.out if args.command == "backtest" else args.out.parent,
        outcomes=args.outcomes,
        endpoint=args.endpoint,
        bundle=args.bundle,
        on_error=args.on_error,
        batch_hours=args.batch_hours,
        as_json=args.json,
        workers=args.workers,
        scheduler=args.scheduler or settings.dask_scheduler,
        shards=args.shards,
    )
    if args.command == "backtest":
        from cli.commands.backtest import run_backtest_command

        return asyncio.run(run_backtest_command(settings, request))
    from cli.commands.tune import TuneTargets, run_tune

    targets = TuneTargets(
        args.target_precision, args.max_fpr, args.min_alerted, args.max_per_day, args.min_segment_outcomes
    )
    return asyncio.run(run_tune(settings, request, args.out, targets, args.config))


if __name__ == "__main__":
    sys.exit(main())
