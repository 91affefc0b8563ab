"""`churn-worker alerts report --since DAY --out report.html`: open, deferred and resolved alerts per
budget and type, live precision and time to resolution over time, and the customers most at risk
with what changed, as one self-contained HTML file (`jobs.alerts_report` says what it reads: the
alert ledger's counters, its sparse index and keys; never a Scan).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cli.commands.checks import writable_file
from jobs.alerts_report import report_data, report_page
from plumbing.clients import AwsClients
from worker.alerts.alert_outcomes import STATS_KEEP_DAYS
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.exceptions import UsageError
from worker.settings import Settings

DEFAULT_DAYS = 30


async def run_alerts_report(
    settings: Settings,
    since: date | None,
    until: date | None,
    out: Path,
    as_json: bool,
    today: date | None = None,
) -> int:
    today = today or datetime.now(UTC).date()
    until = until or today
    since = since or until - timedelta(days=DEFAULT_DAYS - 1)
    if since > until:
        raise UsageError(f"--since {since} is after --until {until}")
    if (until - since).days >= STATS_KEEP_DAYS:
        raise UsageError(
            f"--since {since}: the ledger keeps {STATS_KEEP_DAYS} days of counters; ask for fewer"
        )
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {out}: the report is an HTML page; name it *.html")
    writable_file(out, "--out")
    async with AwsClients(settings.aws_region, "dynamodb") as aws:
        ledger = DynamoDBAlertLedger(aws.dynamodb, alert_table_name(settings.table_prefix))
        data = await report_data(ledger, since, until, today, settings.alerts, settings.budgets)
    staging = out.with_name(out.name + ".partial")
    staging.write_text(report_page(data), encoding="utf-8")
    staging.replace(out)
    if as_json:
        print(json.dumps(data))
    else:
        alerts = sum(t["alerts"] for t in data["by_type"].values())
        deferred = sum(b["deferred"] for b in data["budgets"].values())
        resolved = sum(t["resolved"] for t in data["by_type"].values())
        print(
            f"wrote {out}: {alerts} alerts of {since} .. {until}, {deferred} deferred, {resolved} resolved, "
            f"{len(data['most_at_risk'])} customers most at risk listed"
        )
    return 0
