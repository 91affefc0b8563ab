"""`churn-worker alerts tail`: watch alerts as they are published, like `tail -f`.

Creates a temporary SQS queue (FIFO for a FIFO topic), lets the topic send to it, subscribes it with
raw delivery and a filter policy on `alert_type` / `severity`, prints each alert (one line, or the
JSON body with `--json`), and on exit (Ctrl-C, SIGTERM, `--timeout`) unsubscribes and deletes the
queue, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import uuid
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from plumbing.clients import AwsClients
from plumbing.retry import credentials_for
from worker.alerts.publisher import is_fifo
from worker.alerts.rules import AlertType, Severity
from worker.exceptions import UsageError
from worker.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_sns.client import SNSClient
    from types_aiobotocore_sqs.client import SQSClient


LONG_POLL_SECONDS = 20


def queue_policy(queue_arn: str, topic_arn: str) -> str:
    """Only this topic may send to the tail's queue."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                }
            ],
        }
    )


def filter_policy(alert_type: str | None, severity: str | None) -> dict[str, list[str]]:
    policy: dict[str, list[str]] = {}
    if alert_type:
        policy["alert_type"] = [alert_type]
    if severity:
        policy["severity"] = [severity]
    return policy


def format_alert(body: dict[str, Any]) -> str:
    """time, severity, type, customer, message: one line."""
    when = body.get("created_at") or body.get("as_of") or "-"
    return (
        f"{when}  {body.get('severity', '?'):<8}  {body.get('type', '?'):<21}  "
        f"{body.get('customer_id', '?')}  {body.get('message', '')}"
    )


def _check_choice(value: str | None, allowed: type[AlertType] | type[Severity], option: str) -> str | None:
    if value is None:
        return None
    upper = value.upper()
    if upper not in {member.value for member in allowed}:
        choices = ", ".join(member.value for member in allowed)
        raise UsageError(f"{option} {value!r}: expected one of {choices}")
    return upper


async def run_alerts_tail(
    settings: Settings,
    alert_type: str | None,
    severity: str | None,
    as_json: bool,
    timeout: float | None,  # noqa: ASYNC109 - the CLI option, passed through
) -> int:
    topic_arn = settings.alerts_topic_arn
    if not topic_arn:
        raise UsageError(
            "no alerts topic: set CHURN_ALERTS_TOPIC_ARN (or alerts_topic_arn in the config file)"
        )
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout {timeout}: must be a positive number of seconds")
    policy = filter_policy(
        _check_choice(alert_type, AlertType, "--type"), _check_choice(severity, Severity, "--severity")
    )
    # The first call creates the temporary queue: without credentials it fails naming the topic tailed.
    with credentials_for(f"SNS topic {topic_arn}"):
        await _tail(settings, topic_arn, policy, as_json, stop_after=timeout)
    return 0


async def _tail(
    settings: Settings,
    topic_arn: str,
    policy: dict[str, list[str]],
    as_json: bool,
    stop_after: float | None,
) -> None:
    async with AwsClients(settings.aws_region, "sns", "sqs") as aws:
        sns, sqs = aws.sns, aws.sqs
        fifo = is_fifo(topic_arn)
        name = f"churn-alerts-tail-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        queue_url: str | None = None
        queue_arn: str | None = None
        subscription_arn: str | None = None
        try:
            queue_url = (
                await sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})
            )["QueueUrl"]
            attributes = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
            queue_arn = attributes["Attributes"]["QueueArn"]
            await sqs.set_queue_attributes(
                QueueUrl=queue_url, Attributes={"Policy": queue_policy(queue_arn, topic_arn)}
            )
            sub_attributes = {"RawMessageDelivery": "true"}
            if policy:
                sub_attributes["FilterPolicy"] = json.dumps(policy)
            try:
                subscription = await sns.subscribe(
                    TopicArn=topic_arn,
                    Protocol="sqs",
                    Endpoint=queue_arn,
                    Attributes=sub_attributes,
                    ReturnSubscriptionArn=True,
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NotFound":
                    raise
                raise UsageError(
                    f"topic {topic_arn} does not exist: check CHURN_ALERTS_TOPIC_ARN or run `churn-worker bootstrap`"
                ) from None
            subscription_arn = subscription["SubscriptionArn"]
            what = " ".join(f"{key}={values[0]}" for key, values in policy.items()) or "all alerts"
            print(f"tailing {what} from {topic_arn}; Ctrl-C to stop", file=sys.stderr, flush=True)
            await _until_stopped(_print_alerts(sqs, queue_url, as_json), stop_after)
        finally:
            if subscription_arn is None and queue_arn is not None:
                # Stopped while subscribing: the subscription may exist without us knowing its ARN.
                subscription_arn = await _subscription_of(sns, topic_arn, queue_arn)
            await _clean_up(sns, sqs, subscription_arn, queue_url)


async def _until_stopped(work: Any, seconds: float | None) -> None:
    """Run `work` until it fails, `seconds` pass or SIGTERM arrives (Ctrl-C cancels us as a whole)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = False
    # No signal handlers off the main thread or on Windows: Ctrl-C and --timeout still work there.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        handled = True
    worker = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({worker, stopper}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (worker, stopper):
            task.cancel()
        await asyncio.gather(worker, stopper, return_exceptions=True)
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
    error = worker.exception() if worker.done() and not worker.cancelled() else None
    if error is not None:
        raise error


async def _print_alerts(sqs: SQSClient, queue_url: str, as_json: bool) -> None:
    while True:
        response = await sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=LONG_POLL_SECONDS,
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        for message in messages:
            try:
                body = json.loads(message["Body"])
            except json.JSONDecodeError:
                print(f"(not an alert: {message['Body'][:200]!r})", file=sys.stderr, flush=True)
                continue
            print(json.dumps(body) if as_json else format_alert(body), flush=True)
        if messages:
            await sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


async def _subscription_of(sns: SNSClient, topic_arn: str, queue_arn: str) -> str | None:
    with contextlib.suppress(Exception):
        pages = sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn)
        async for page in pages:
            for subscription in page.get("Subscriptions", []):
                if subscription.get("Endpoint") == queue_arn:
                    return subscription.get("SubscriptionArn")
    return None


async def _clean_up(
    sns: SNSClient, sqs: SQSClient, subscription_arn: str | None, queue_url: str | None
) -> None:
    """Unsubscribe, then delete the queue; say what is left behind if either fails."""
    problems: list[str] = []
    if subscription_arn:
        try:
            await sns.unsubscribe(SubscriptionArn=subscription_arn)
        except Exception as exc:
            problems.append(f"subscription {subscription_arn} ({exc})")
    if queue_url:
        try:
            await sqs.delete_queue(QueueUrl=queue_url)
        except Exception as exc:
            problems.append(f"queue {queue_url} ({exc})")
    if problems:
        print(f"could not remove {'; '.join(problems)}: delete by hand", file=sys.stderr, flush=True)
