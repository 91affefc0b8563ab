"""`churn-worker`: the command line. Parses arguments, builds Settings once, dispatches to
`worker.commands.*`. Exit codes: 0 success, 2 bad usage or input, 1 any other failure; errors are
one line unless `--debug`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from features.exceptions import EventParseError, FeaturesError
from worker.exceptions import UsageError, WorkerError

PROG = "churn-worker"


def _iso_instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 instant: {text!r} (e.g. 2026-11-27T12:00:00Z)") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset or Z, e.g. 2026-11-27T12:00:00Z")
    return moment.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: the options work before or after the command without a subparser's default undoing them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML or YAML settings file (or CHURN_CONFIG)")  # fmt: skip
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Streaming churn-alert worker: customer events in (SQS or Kinesis), rolling 7/14/30-day "
        "features in DynamoDB, a SageMaker multi-task model, alerts out to SNS.",
        epilog="Run `churn-worker COMMAND --help` for a command's options. `make run` starts everything locally.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    local = sub.add_parser(
        "local", parents=[common], help="run the whole pipeline on an embedded local stack (moto)",
        description="Start moto's server on 127.0.0.1, bootstrap the resources, feed sample events through "
        "the feature store and print what the worker computes. Ctrl-C stops everything.",
    )  # fmt: skip
    local.add_argument("--events", type=Path, help="event file to feed (default: the built-in sample)")

    features = sub.add_parser(
        "features", parents=[common], help="compute features for every customer in an event file",
        description="Fold EVENTS_FILE (.jsonl, .jsonl.gz, .parquet) into a feature store and print each "
        "customer's features at --as-of. Events after --as-of or older than retention before it are left out "
        "and counted on stderr.",
    )  # fmt: skip
    features.add_argument("events_file", type=Path, metavar="EVENTS_FILE")
    features.add_argument("--as-of", type=_iso_instant, required=True, metavar="ISO",
                          help="the instant the windows end at, e.g. 2026-11-27T12:00:00Z")  # fmt: skip
    features.add_argument("--store", choices=["memory", "dynamodb"], default="memory",
                          help="memory (default) or the configured DynamoDB table (moto or AWS via AWS_ENDPOINT_URL)")  # fmt: skip
    features.add_argument("--json", action="store_true", help="one JSON line per customer with all features")
    features.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                          help="on a bad line: stop with exit code 2 (default) or report it and go on")  # fmt: skip

    bootstrap = sub.add_parser(
        "bootstrap", parents=[common], help="create the DynamoDB table(s) and other resources, idempotently",
        description="Create every resource the worker needs from the settings, against whatever endpoint is "
        "configured. Existing resources are left alone. Prints the names.",
    )  # fmt: skip
    bootstrap.add_argument("--json", action="store_true", help="one JSON line per resource")

    config = sub.add_parser("config", parents=[common], help="show or validate settings")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser("show", parents=[common], help="print the effective settings, secrets redacted")
    show.add_argument("--json", action="store_true")
    validate = config_sub.add_parser("validate", parents=[common], help="check a config file; exit 2 if invalid")
    validate.add_argument("file", type=Path, metavar="FILE")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = getattr(args, "config", None)
    args.debug = getattr(args, "debug", False)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, EventParseError) as exc:
        return _fail(args, exc, 2)
    except (WorkerError, FeaturesError, OSError) as exc:
        return _fail(args, exc, 1)
    except Exception as exc:
        return _fail(args, exc, 1)


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    if args.debug:
        traceback.print_exc()
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    from worker.settings import load_settings

    if args.command == "config":
        from worker.commands.config import run_config_show, run_config_validate

        if args.config_command == "validate":
            return run_config_validate(args.file)
        return run_config_show(args.config, args.json)

    settings = load_settings(args.config)
    if args.command == "features":
        from worker.commands.features import run_features

        if not args.events_file.is_file():
            raise UsageError(f"{args.events_file}: no such file")
        return asyncio.run(
            run_features(settings, args.events_file, args.as_of, args.store, args.json, args.on_error)
        )
    if args.command == "bootstrap":
        from worker.commands.bootstrap import run_bootstrap

        return asyncio.run(run_bootstrap(settings, args.json))
    if args.command == "local":
        from worker.commands.local import run_local

        return run_local(settings, args.events)
    raise UsageError(f"unknown command {args.command!r}")  # argparse already refuses these


if __name__ == "__main__":
    sys.exit(main())
