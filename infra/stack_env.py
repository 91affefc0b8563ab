"""The data-plane stack's outputs as the worker's settings.

    python infra/stack_env.py STACK_NAME [--region R] > churn.env

prints one `CHURN_*=value` line per output the worker reads (the format of `docker run --env-file`
and of `set -a; . ./churn.env; set +a`). The service stack passes the same outputs to the task
definition; this is for running the worker anywhere else (a laptop against a dev account, a test).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping
from typing import Any

# Output name of infra/data-plane.yaml -> the worker's setting (docs/contracts.md, Configuration).
OUTPUT_SETTINGS: dict[str, str] = {
    "Source": "CHURN_SOURCE",
    "QueueUrl": "CHURN_SQS_QUEUE_URL",
    "StreamName": "CHURN_KINESIS_STREAM",
    "DeadLetterQueueUrl": "CHURN_DLQ_URL",
    "AlertsTopicArn": "CHURN_ALERTS_TOPIC_ARN",
    "TablePrefix": "CHURN_TABLE_PREFIX",
    "ArchiveS3Uri": "CHURN_ARCHIVE_S3_URI",
}


def settings_env(outputs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """`describe_stacks(...)["Stacks"][0]["Outputs"]` -> {CHURN_NAME: value} for the outputs the
    worker reads; other outputs (KmsKeyArn, ...) are for the other stacks."""
    return {
        OUTPUT_SETTINGS[output["OutputKey"]]: str(output["OutputValue"])
        for output in outputs
        if output["OutputKey"] in OUTPUT_SETTINGS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack_env.py",
        description="Print the data-plane stack's outputs as CHURN_* settings (KEY=value lines).",
    )
    parser.add_argument("stack", help="the data-plane stack's name")
    parser.add_argument(
        "--region", help="AWS region (default: AWS_REGION, else AWS_DEFAULT_REGION, else the profile's)"
    )
    args = parser.parse_args(argv)

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from plumbing.awsenv import aws_region  # botocore alone reads AWS_DEFAULT_REGION, not AWS_REGION

    try:
        cloudformation = boto3.client("cloudformation", region_name=args.region or aws_region())
        stacks = cloudformation.describe_stacks(StackName=args.stack)
    except (ClientError, BotoCoreError) as exc:
        print(f"stack_env.py: cannot read stack {args.stack}: {exc}", file=sys.stderr)
        return 1
    for name, value in settings_env(stacks["Stacks"][0].get("Outputs", [])).items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
