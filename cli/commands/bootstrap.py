"""`churn-worker bootstrap`: create every resource the worker needs, idempotently.

Names come from the settings when they are set (the last part of CHURN_SQS_QUEUE_URL, ...), else
from CHURN_TABLE_PREFIX. Safe to run on every deploy: existing resources are left as they are.
The output lists each resource and the setting that points the worker at it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from features.dynamodb import create_feature_table, table_name
from plumbing.clients import AwsClients
from plumbing.retry import credentials_for
from worker.alerts.ledger import alert_table_name, create_alert_table
from worker.alerts.publisher import create_alert_topic
from worker.archive import ensure_bucket, parse_s3_uri
from worker.exceptions import ConfigError
from worker.settings import Settings
from worker.sources.sqs import redrive_after_seconds

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

DLQ_RETENTION_SECONDS = 1_209_600  # 14 days, SQS's longest: a dead letter outlives its source queue's copy


def check_redrive(settings: Settings) -> None:
    """The redrive policy must dead-letter a message that keeps failing well before the input
    queue's retention deletes it: otherwise it would expire unseen."""
    seconds = redrive_after_seconds(settings.sqs_max_receive_count, settings.sqs_visibility_timeout)
    if seconds > settings.sqs_retention_seconds / 2:
        raise ConfigError(
            f"CHURN_SQS_MAX_RECEIVE_COUNT={settings.sqs_max_receive_count} retries a failing message for "
            f"{seconds / 3600:.1f} h before the dead-letter queue, more than half the queue's retention "
            f"(CHURN_SQS_RETENTION_SECONDS={settings.sqs_retention_seconds}, {settings.sqs_retention_seconds / 3600:.0f} h): "
            "lower the count or raise the retention"
        )


@dataclass
class Resource:
    kind: str
    name: str
    created: bool | None  # None: the API is idempotent and does not say (SNS create_topic)
    setting: str | None = None  # the CHURN_* variable that names it, when there is one
    value: str | None = None  # ... and its value (queue URL, topic ARN)


def _name_from(value: str | None, default: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] if value else default


async def bootstrap(settings: Settings) -> list[Resource]:
    if settings.source == "sqs":
        check_redrive(settings)
    prefix = settings.table_prefix
    rows: list[Resource] = []
    services = ["dynamodb", "sqs", "sns"] + (["kinesis"] if settings.source == "kinesis" else [])
    services += ["s3"] if settings.archive_s3_uri else []
    async with AwsClients(settings.aws_region, *services) as aws:
        ddb = aws.dynamodb
        for name, create in (
            (table_name(prefix), create_feature_table),
            (alert_table_name(prefix), create_alert_table),
        ):
            with credentials_for(f"DynamoDB table {name}"):
                created_table = await create(ddb, name)
            rows.append(Resource("dynamodb_table", name, created_table, "CHURN_TABLE_PREFIX", prefix))
        if settings.source == "kinesis":
            from worker.sources.kinesis import ensure_stream
            from worker.sources.leases import create_lease_table, lease_table_name

            leases = lease_table_name(prefix)
            with credentials_for(f"DynamoDB table {leases}"):
                rows.append(Resource("dynamodb_table", leases, await create_lease_table(ddb, leases)))
            stream = _name_from(settings.kinesis_stream, f"{prefix}events")
            with credentials_for(f"Kinesis stream {stream}"):
                created = await ensure_stream(aws.kinesis, stream, settings.kinesis_shards)
            rows.append(Resource("kinesis_stream", stream, bool(created), "CHURN_KINESIS_STREAM", stream))

        dlq_name = _name_from(settings.dlq_url, f"{prefix}events-dlq")
        with credentials_for(f"SQS queue {dlq_name}"):
            dlq_url, dlq_created = await _ensure_queue(
                aws.sqs, dlq_name, {"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)}
            )
        rows.append(Resource("sqs_queue", dlq_name, dlq_created, "CHURN_DLQ_URL", dlq_url))
        if settings.source == "sqs":
            dlq_arn = (await aws.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
                "Attributes"
            ]["QueueArn"]
            # The redrive policy is a safety net for poison messages that crash the worker; bad
            # events are quarantined by the worker itself, at once, with their error attributes.
            redrive = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.sqs_max_receive_count}
            )
            queue_name = _name_from(settings.sqs_queue_url, f"{prefix}events")
            with credentials_for(f"SQS queue {queue_name}"):
                queue_url, created = await _ensure_queue(
                    aws.sqs,
                    queue_name,
                    {
                        "RedrivePolicy": redrive,
                        "VisibilityTimeout": str(settings.sqs_visibility_timeout),
                        "MessageRetentionPeriod": str(settings.sqs_retention_seconds),
                    },
                )
            rows.append(Resource("sqs_queue", queue_name, created, "CHURN_SQS_QUEUE_URL", queue_url))
        topic_name = _name_from(settings.alerts_topic_arn, f"{prefix}alerts")
        with credentials_for(f"SNS topic {topic_name}"):
            topic_arn = await create_alert_topic(aws.sns, topic_name)
        rows.append(Resource("sns_topic", topic_name, None, "CHURN_ALERTS_TOPIC_ARN", topic_arn))
        if settings.archive_s3_uri:  # only when asked for: the data-plane stack makes the production one
            bucket, _ = parse_s3_uri(settings.archive_s3_uri)
            with credentials_for(f"S3 bucket {bucket}"):
                created = await ensure_bucket(aws.s3, settings.archive_s3_uri, settings.aws_region)
            rows.append(
                Resource("s3_bucket", bucket, created, "CHURN_ARCHIVE_S3_URI", settings.archive_s3_uri)
            )
    return rows


async def _ensure_queue(client: SQSClient, name: str, attributes: dict[str, str]) -> tuple[str, bool]:
    try:
        url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in exc.response.get("Error", {}).get("Code", ""):
            raise
        url = (await client.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]  # type: ignore[arg-type]
        return url, True
    await client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]  # converge an existing queue
    return url, False


async def run_bootstrap(settings: Settings, as_json: bool) -> int:
    rows = await bootstrap(settings)
    for row in rows:
        if as_json:
            print(json.dumps(asdict(row)))
        else:
            hint = (
                f"   {row.setting}={row.value}"
                if row.setting and row.value and row.setting != "CHURN_TABLE_PREFIX"
                else ""
            )
            state = {True: "created", False: "exists ", None: "ready  "}[row.created]
            print(f"{row.kind:<15} {row.name:<32} {state}{hint}")
    return 0
