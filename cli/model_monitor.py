"""`churn-model skew`, `drift` and `monitor`: watching the model between retrains (jobs/monitoring/).

Every command reads the served-feature sample the worker writes (worker/served_log.py): --served,
else the `served/` prefix of --archive's bucket (default CHURN_ARCHIVE_S3_URI, as `retrain`)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cli.argtypes import iso_day, positive_float, positive_int


def _yesterday() -> date:
    return (datetime.now(UTC) - timedelta(days=1)).date()


def _sources(parser: argparse.ArgumentParser, since_required: bool) -> None:
    from worker.settings import ModelSettings

    configured = ModelSettings()
    parser.add_argument(
        "--since",
        type=iso_day,
        metavar="DAY",
        required=since_required,
        default=None if since_required else _yesterday(),
        help="served rows scored on this UTC day or later"
        + ("" if since_required else " (default: yesterday)"),
    )
    parser.add_argument(
        "--archive",
        metavar="PATH",
        default=configured.archive_s3_uri,
        help="the event archive, s3://bucket/prefix/ or local (default: CHURN_ARCHIVE_S3_URI)",
    )
    parser.add_argument(
        "--served",
        metavar="PATH",
        help="the served-feature log (default: s3://<archive bucket>/served/)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")


def _skew_options(parser: argparse.ArgumentParser) -> None:
    from jobs.monitoring.skew import DEFAULT_MAX_SHARE

    parser.add_argument(
        "--max-share",
        type=float,
        default=DEFAULT_MAX_SHARE,
        metavar="SHARE",
        help=f"fail when a feature differs on more than this share of rows (default {DEFAULT_MAX_SHARE})",
    )
    parser.add_argument(
        "--retention-days",
        type=positive_int,
        default=35,
        help="the worker's CHURN_RETENTION_DAYS (default 35)",
    )


def _drift_options(parser: argparse.ArgumentParser) -> None:
    from jobs.monitoring.drift import DEFAULT_MIN_ROWS, DEFAULT_THRESHOLD
    from worker.settings import ModelSettings

    parser.add_argument(
        "--threshold",
        type=positive_float,
        default=DEFAULT_THRESHOLD,
        help=f"PSI above which a day is drift (default {DEFAULT_THRESHOLD}; the alarm has its own)",
    )
    parser.add_argument(
        "--min-rows",
        type=positive_int,
        default=DEFAULT_MIN_ROWS,
        help=f"days with fewer sampled rows are not published (default {DEFAULT_MIN_ROWS})",
    )
    parser.add_argument(
        "--emf",
        action="store_true",
        help="write the metrics as CloudWatch EMF lines on stdout (the tables go to stderr)",
    )
    parser.add_argument(
        "--endpoint",
        default=ModelSettings().endpoint_name,
        help="without --bundle: the bundle behind this endpoint, fetched as retrain fetches the incumbent "
        "(default CHURN_ENDPOINT_NAME; unset: the cached default bundle)",
    )
    parser.add_argument(
        "--table-prefix",
        default="churn-",
        help="the metrics' TablePrefix dimension: the deployment's (default churn-)",
    )


def register(sub: Any, common: argparse.ArgumentParser, bundle_opt: argparse.ArgumentParser) -> None:
    skew = sub.add_parser(
        "skew",
        parents=[common],
        help="served features against the same features recomputed offline from the archive",
        description="Recompute the sampled customers' features at the instants they were served, from the "
        "event archive with the offline fold training and the backtest use, and report per feature the rows "
        "that differ beyond float tolerance and the largest difference. Exit 1 when a feature differs on more "
        "than --max-share of the rows.",
    )
    _sources(skew, since_required=True)
    _skew_options(skew)
    skew.set_defaults(func=_skew)

    drift = sub.add_parser(
        "drift",
        parents=[common, bundle_opt],
        help="PSI of the served sample against the bundle's training distribution, per day",
        description="Population stability index per feature and per head, per UTC day, of the served sample "
        "against the bundle's training distribution; with --emf, the day's largest as CloudWatch metrics "
        "(DriftMaxPSI: infra/alarms.yaml's ModelDrift alarm).",
    )
    _sources(drift, since_required=False)
    _drift_options(drift)
    drift.set_defaults(func=_drift)

    monitor = sub.add_parser(
        "monitor",
        parents=[common, bundle_opt],
        help="drift, calibration and skew in one table, and a page (--html)",
        description="Drift per feature and head, live calibration per probability bin (outcomes from the "
        "archive's churn events) and training/serving skew; --html writes one self-contained page.",
    )
    _sources(monitor, since_required=False)
    _drift_options(monitor)
    _skew_options(monitor)
    monitor.add_argument("--html", type=Path, metavar="FILE", help="write the monitoring page here")
    monitor.add_argument("--no-skew", action="store_true", help="skip the skew check (the longest part)")
    monitor.set_defaults(func=_monitor)


def _served(args: argparse.Namespace) -> str:
    from jobs.monitoring.served import served_location

    return served_location(args.served, args.archive)


def _write_json(path: Path | None, data: Any) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _bundle(args: argparse.Namespace, work: Path) -> Any:
    """--bundle; else the live model's (behind --endpoint: the scheduled job's case); else the default."""
    from cli.model import load_cli_bundle

    if args.bundle is None and args.endpoint:
        from jobs.incumbent import fetch_incumbent, find_deployed
        from model.deploy import make_clients
        from model.exceptions import UsageError

        s3, sagemaker, _ = make_clients(None, None)
        deployed = find_deployed(sagemaker, args.endpoint)
        if deployed is None:
            raise UsageError(f"no model is deployed at endpoint {args.endpoint}: pass --bundle DIR")
        return fetch_incumbent(s3, deployed, work, lambda line: print(line, file=sys.stderr))[0]
    return load_cli_bundle(args)


def _skew(args: argparse.Namespace) -> int:
    from jobs.monitoring.monitor import MonitorResult, archive_checks, load_rows
    from jobs.monitoring.skew import format_table
    from model.exceptions import UsageError

    if not args.archive:
        raise UsageError("skew needs the event archive: pass --archive (or set CHURN_ARCHIVE_S3_URI)")
    result = MonitorResult(load_rows(_served(args), args.since.isoformat()))
    archive_checks(
        result,
        args.archive,
        args.max_share,
        timedelta(days=args.retention_days),
        skew=True,
        calibration=False,
    )
    assert result.skew is not None
    print(format_table(result.skew))
    _write_json(args.json, result.skew.as_json())
    return 1 if result.skew.failed else 0


def _publish(args: argparse.Namespace, result: Any, out: Any) -> None:
    from jobs.monitoring.drift import emf_lines, write_emf
    from jobs.monitoring.emf import calibration_lines

    lines = emf_lines(result.drift, args.table_prefix) if result.drift is not None else []
    lines += calibration_lines(result.calibration or [], args.table_prefix)
    write_emf(lines, out)


def _drift(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        return _drift_in(args, _bundle(args, Path(work)))


def _drift_in(args: argparse.Namespace, bundle: Any) -> int:
    from jobs.monitoring.drift import format_table
    from jobs.monitoring.monitor import MonitorResult, drift_of, load_rows

    result = MonitorResult(load_rows(_served(args), args.since.isoformat()))
    report = drift_of(result, bundle.path, args.threshold, args.min_rows)
    text = sys.stderr if args.emf else sys.stdout
    if report is None:
        print(result.notes["drift"], file=text)
        return 0
    print(format_table(report), file=text)
    if args.emf:
        _publish(args, result, sys.stdout)
    _write_json(args.json, report.as_json())
    return 0


def _monitor(args: argparse.Namespace) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        return _monitor_in(args, _bundle(args, Path(work)))


def _monitor_in(args: argparse.Namespace, bundle: Any) -> int:
    from jobs.monitoring.monitor import MonitorResult, archive_checks, drift_of, format_all, load_rows
    from jobs.monitoring.page import monitor_page

    result = MonitorResult(load_rows(_served(args), args.since.isoformat()))
    drift_of(result, bundle.path, args.threshold, args.min_rows)
    if args.archive:
        archive_checks(
            result,
            args.archive,
            args.max_share,
            timedelta(days=args.retention_days),
            skew=not args.no_skew,
            calibration=True,
        )
    else:
        result.notes["skew"] = result.notes["calibration"] = "no --archive (CHURN_ARCHIVE_S3_URI): skipped"
    if args.no_skew:
        result.notes["skew"] = "skipped (--no-skew)"
    result.notes["summary"] = (
        f"{len(result.rows)} served rows from {args.since.isoformat()} on; model bundle {bundle.model_version}"
    )
    text = sys.stderr if args.emf else sys.stdout
    print(format_all(result), file=text)
    if args.emf:
        _publish(args, result, sys.stdout)
    if args.html is not None:
        args.html.write_text(
            monitor_page(
                "Model monitoring",
                result.drift,
                result.distribution,
                result.served_scores(),
                result.calibration,
                result.skew,
                result.notes,
            )
        )
        print(f"page written to {args.html}", file=text)
    _write_json(args.json, result.as_json())
    return 0
