"""`churn-worker alerts stamp-churns`: the one-off upgrade of an alert ledger table written before
churn stamps (worker/alerts/dynamodb_ledger.py, CHURN STAMPS).

A churn is now also written onto the customer's claim items, so a claim's own condition refuses a
churned customer and its transaction needs no check of the `#churned` item (2 write units less per
alert). Churns recorded by an earlier version have no stamps: until this command has run, workers
keep the check (correct, dearer; they log that once). Run it once every worker runs this version
(an earlier one would record churns without stamps). A Scan of the table (ops credentials: the
worker's role has no Scan); safe to run again, and while workers run.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from plumbing.clients import AwsClients
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name
from worker.settings import Settings


async def run_stamp_churns(settings: Settings) -> int:
    table = alert_table_name(settings.table_prefix)
    async with AwsClients(settings.aws_region, "dynamodb") as aws:
        ledger = DynamoDBAlertLedger(aws.dynamodb, table)
        with tqdm(desc=f"reading {table}", unit=" items", file=sys.stderr, disable=None) as bar:

            def progress(read: int, stamped: int) -> None:
                bar.update(read - bar.n)
                bar.set_postfix(churns=stamped)

            stamped = await ledger.stamp_churns(progress)
    print(
        f"{table}: {stamped:,} churns stamped on their customers' claim items; claims no longer check "
        "the #churned item (running workers notice within a minute)"
    )
    return 0
