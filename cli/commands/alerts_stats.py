"""`churn-worker alerts stats`: live outcomes of the alerts, from the ledger's daily counters.

Per alert type: alerts claimed (both experiment arms), confirmed (the customer churned within 30
days after), expired (30 days without churn), open (neither yet) and precision (confirmed / resolved),
over the alerts of `--since` .. `--until` (UTC days of their `as_of`); then the same over the
settled days only (every outcome known: the live precision), and per arm when an experiment holds
some alerts back. Reads one Query per day and the open alerts' index keys: never a Scan.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from plumbing.clients import AwsClients
from worker.alerts.alert_outcomes import STATS_KEEP_DAYS, format_stats
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.exceptions import UsageError
from worker.settings import Settings

DEFAULT_DAYS = 60  # thirty settled days and the thirty still open


async def run_alerts_stats(
    settings: Settings, since: date | None, until: date | None, as_json: bool, today: date | None = None
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
    async with AwsClients(settings.aws_region, "dynamodb") as aws:
        ledger = DynamoDBAlertLedger(aws.dynamodb, alert_table_name(settings.table_prefix))
        stats = await ledger.outcome_stats(since, until)
    print(json.dumps(stats.as_json(today)) if as_json else format_stats(stats, today))
    return 0
