"""`churn-worker shadow report`: the live model's alerts and the shadow model's, against outcomes.

Shadow alerts come from the shadow log (`--shadow`, by default the archive bucket's `shadow/`
prefix, where the worker writes them without a shadow topic; a dump of `CHURN_SHADOW_TOPIC_ARN`'s
messages works too), live alerts from a log of alert bodies (`--live`) or the alert ledger's records
(`--ledger`). The comparison is `jobs.shadow_compare`'s: per alert type, customers
alerted, precision and recall of each model over the period both cover, and their agreement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from features.churn_outcomes import load_outcomes
from features.state import from_us, to_us
from jobs.alert_log import alert_row, read_bodies
from jobs.shadow_compare import compare, format_comparison
from jobs.uplift import AlertRow
from plumbing.clients import AwsClients
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.alerts.rules import iso
from worker.exceptions import UsageError
from worker.settings import Settings
from worker.shadow_log import shadow_uri


@dataclass(frozen=True)
class ShadowReportRequest:
    outcomes: Path
    shadow: list[str] | None = None  # default: the archive bucket's shadow/ prefix
    live: list[str] | None = None
    ledger: bool = False
    arm: str | None = None
    end: datetime | None = None
    as_json: bool = False


def _rows(paths: list[str], shadow: bool, versions: set[str]) -> list[AlertRow]:
    rows = []
    for name, number, body in read_bodies(paths):
        if bool(body.get("shadow")) != shadow:
            continue  # a shadow log holds only shadow records; a live log none
        rows.append(alert_row(body, f"{name}:{number}"))
        if body.get("model_version"):
            versions.add(str(body["model_version"]))
    return rows


async def _ledger_rows(settings: Settings, versions: set[str]) -> list[AlertRow]:
    async with AwsClients(settings.aws_region, "dynamodb") as aws:
        ledger = DynamoDBAlertLedger(aws.dynamodb, alert_table_name(settings.table_prefix))
        rows = []
        async for record in ledger.outcomes.scan_records(0, 2**62):
            rows.append(alert_row(record, f"ledger record {record['alert_id']}"))
            if record.get("model_version"):
                versions.add(str(record["model_version"]))
        return rows


async def run_shadow_report(settings: Settings, request: ShadowReportRequest) -> int:
    if bool(request.live) == request.ledger:
        raise UsageError(
            "give the live alerts: --live PATH (a log of alert bodies) or --ledger (the alert ledger)"
        )
    if not request.outcomes.is_file():
        raise UsageError(f"{request.outcomes}: no such file")
    shadow_paths = request.shadow or (
        [shadow_uri(settings.archive_s3_uri)] if settings.archive_s3_uri else None
    )
    if not shadow_paths:
        raise UsageError(
            "give the shadow log: --shadow PATH (or set CHURN_ARCHIVE_S3_URI: its bucket's shadow/ prefix)"
        )
    outcomes = load_outcomes(request.outcomes)
    versions: dict[str, set[str]] = {"live": set(), "shadow": set()}
    shadow = _rows(shadow_paths, True, versions["shadow"])
    if not shadow:
        raise UsageError(f'no shadow alerts in {", ".join(shadow_paths)} (records with "shadow": true)')
    live = (
        await _ledger_rows(settings, versions["live"])
        if request.ledger
        else _rows(request.live or [], False, versions["live"])
    )
    latest = max([r.as_of_us for r in shadow + live] + list(outcomes.churned_at_us.values()))
    end_us = to_us(request.end) if request.end else latest
    report: dict[str, Any] = compare(live, shadow, outcomes.churned_at_us, end_us, arm=request.arm)
    for key in ("start", "stop", "end"):
        if report.get(key) is not None:
            report[key] = iso(from_us(report[key]))
    report["model_versions"] = {side: sorted(names) for side, names in versions.items()}
    if request.as_json:
        print(json.dumps(report))
    else:
        if not report["by_type"]:
            raise UsageError(f"no shadow alerts of the {request.arm} arm")
        print(
            f"live and shadow alerts of {report['start']} .. {report['stop']}, outcomes up to {report['end']}\n"
        )
        print(format_comparison(report, report["model_versions"]))
    return 0
