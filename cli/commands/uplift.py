"""`churn-worker uplift`: what the interventions achieved, treatment arm against control.

Alerts come from a file of alert bodies (`--alerts`: a backtest's alerts.jsonl, a dump of the
retention and control topics, ...) or from the alert ledger's records (`--ledger`: every claimed
alert of both arms, with the arm it was given; a Scan of the ledger table, billed by its size).
Outcomes are the file of docs/contracts.md, Outcomes files. The analysis is `jobs.uplift`: per alert
type, churn within the horizon after a (customer, type) pair's first alert, by arm, the difference
with its 95 % CI and p-value, and the pairs per arm an effect needs for 80 % power.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from features.churn_outcomes import load_outcomes
from features.state import from_us, to_us
from jobs.alert_log import alert_row, alert_rows
from jobs.uplift import AlertRow, format_uplift, uplift
from plumbing.clients import AwsClients
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.alerts.rules import iso
from worker.exceptions import UsageError
from worker.settings import Settings

FAR_FUTURE_US = 2**62


@dataclass(frozen=True)
class UpliftRequest:
    outcomes: Path
    alerts: list[str] | None = None  # files, directories, globs or s3:// prefixes
    ledger: bool = False
    since: datetime | None = None  # the experiment's start: earlier alerts are left out
    end: datetime | None = None  # outcomes known up to here (default: the latest alert or churn)
    horizon_days: int = 30
    as_json: bool = False


async def _ledger_rows(settings: Settings, since_us: int) -> list[AlertRow]:
    async with AwsClients(settings.aws_region, "dynamodb") as aws:
        ledger = DynamoDBAlertLedger(aws.dynamodb, alert_table_name(settings.table_prefix))
        return [
            alert_row(record, f"ledger record {record['alert_id']}")
            async for record in ledger.outcomes.scan_records(since_us, FAR_FUTURE_US)
        ]


async def run_uplift(settings: Settings, request: UpliftRequest) -> int:
    if bool(request.alerts) == request.ledger:
        raise UsageError(
            "give the alerts: --alerts FILE (a log of alert bodies) or --ledger (the alert ledger)"
        )
    if not request.outcomes.is_file():
        raise UsageError(f"{request.outcomes}: no such file")
    outcomes = load_outcomes(request.outcomes)
    since_us = to_us(request.since) if request.since else 0
    if request.ledger:
        rows = await _ledger_rows(settings, since_us)
        source = f"ledger {alert_table_name(settings.table_prefix)}"
    else:
        assert request.alerts is not None
        rows = [row for row in alert_rows(request.alerts) if row.as_of_us >= since_us]
        source = ", ".join(request.alerts)
    if not rows:
        raise UsageError(
            f"no alerts in {source}" + (f" since {request.since.isoformat()}" if request.since else "")
        )
    latest = max([row.as_of_us for row in rows] + list(outcomes.churned_at_us.values()))
    end_us = to_us(request.end) if request.end else latest
    report = uplift(rows, outcomes.churned_at_us, end_us, horizon_days=request.horizon_days)
    report.update({"alerts": len(rows), "source": source, "end": iso(from_us(end_us))})
    if request.as_json:
        print(json.dumps(report))
    else:
        print(format_uplift(report))
        print(f"{len(rows):,} alerts from {source}; outcomes known up to {report['end']} (--end to change)")
    return 0
