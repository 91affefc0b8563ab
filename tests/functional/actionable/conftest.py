"""Workers for the alert tests on moto: the live pipeline and sweeper over the DynamoDB adapters
(feature store, due index, alert ledger), each worker on AWS clients of its own as separate processes
would have, publishing to SNS (verified through an SQS subscription) or to the in-memory twin, on a
clock the test drives. A "restart" is a new worker on the same tables: nothing carried over in memory.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiobotocore.session import get_session

from features.due_dynamodb import DynamoDBDueIndex
from features.dynamodb import DynamoDBFeatureStore, create_feature_table, table_name
from plumbing.clients import AwsClients
from tests.fakes import Clock, FeatureScorer, ListDlq
from tests.functional.actionable.alert_workers import DAY, ONLY_CALLS, RETENTION, MakeWorker, Worker
from worker.alerts.budgets import BudgetsConfig
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.publisher import MemoryAlertPublisher, SnsAlertPublisher
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.ports import AlertPublisher
from worker.rescore import Rescorer


@pytest.fixture
async def tables(aws_endpoint: str, unique_prefix: str) -> tuple[str, str]:
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        features, alerts = table_name(unique_prefix), alert_table_name(unique_prefix)
        await create_feature_table(client, features)
        await create_alert_table(client, alerts)
    return features, alerts


@pytest.fixture
async def make_worker(tables: tuple[str, str]) -> AsyncIterator[MakeWorker]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            clock: Clock,
            alerts: AlertsConfig = ONLY_CALLS,
            budgets: BudgetsConfig | None = None,
            topic_arn: str | None = None,
            interval: timedelta = DAY,
        ) -> Worker:
            requests: Counter[str] = Counter()

            def count(service: str, operation: str) -> None:
                if service == "dynamodb":
                    requests[operation] += 1

            aws = await stack.enter_async_context(
                AwsClients("us-east-1", "dynamodb", "sns", on_request=count)
            )
            store = DynamoDBFeatureStore(aws.dynamodb, tables[0], RETENTION, rescore_interval=interval)
            due = DynamoDBDueIndex(aws.dynamodb, tables[0])
            ledger = DynamoDBAlertLedger(aws.dynamodb, tables[1])
            publisher: AlertPublisher = (
                SnsAlertPublisher(aws.sns, topic_arn, clock=clock)
                if topic_arn
                else MemoryAlertPublisher(clock=clock)
            )
            pipeline = Pipeline(
                store=store,
                scorer=FeatureScorer(),
                ledger=ledger,
                publisher=publisher,
                dlq=ListDlq(),
                alerts=alerts,
                retention=RETENTION,
                due=due,
                metrics=Metrics(),
                clock=clock,
                budgets=budgets,
                explainer=FeatureScorer(),
            )
            rescorer = Rescorer(
                due=due,
                store=store,
                pipeline=pipeline,
                interval=interval,
                retention=RETENTION,
                clock=clock,
                tick=0.01,
            )
            return Worker(pipeline, rescorer, ledger, publisher, clock, requests)

        yield make
