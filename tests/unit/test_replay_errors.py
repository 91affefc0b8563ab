"""Replay's sinks classify a failed call as the worker does (`plumbing.retry`): throttling is
retried, a fatal error stops the run at once with one line naming the queue or stream."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from jobs.replay import KinesisSink, Pending, ReplayError, SqsSink
from plumbing.exceptions import FatalAwsError, UsageError

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/events"
BATCH = [Pending(1, "c1", "e1", "{}"), Pending(2, "c2", "e2", "{}")]


class Failing:
    """An SQS and Kinesis client whose batch calls raise `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def send_message_batch(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise self.error

    async def put_records(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        raise self.error


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize("make_sink", [lambda c: SqsSink(c, QUEUE), lambda c: KinesisSink(c, "events")])
async def test_missing_credentials_stop_at_once_naming_the_target(make_sink: Any) -> None:
    client = Failing(NoCredentialsError())
    sink = make_sink(client)
    with pytest.raises(FatalAwsError) as caught:
        await sink.put(BATCH)
    assert client.calls == 1
    message = str(caught.value)
    assert message.endswith(
        f"{sink.target}: no AWS credentials found: set AWS_PROFILE or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run on a role)"
    )
    assert "\n" not in message
    assert isinstance(caught.value, UsageError)  # the user's to fix: the CLIs exit 2


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (client_error("ThrottlingException"), True),
        (client_error("ProvisionedThroughputExceededException"), True),
        (client_error("InternalError", 500), True),
        (client_error("SomethingNew", 503), True),
        (ConnectionResetError(), True),
        (client_error("ValidationException"), False),
    ],
)
async def test_a_failed_call_is_retried_as_the_worker_would(error: Exception, retryable: bool) -> None:
    sink = SqsSink(Failing(error), QUEUE)  # type: ignore[arg-type]
    if not retryable:
        with pytest.raises(ReplayError, match="refused the batch"):
            await sink.put(BATCH)
        return
    failures = await sink.put(BATCH)
    assert [f.entry for f in failures] == BATCH and all(f.retryable for f in failures)


async def test_a_kinesis_record_refused_by_its_kms_key_stops_the_replay() -> None:
    class Refusing:
        async def put_records(self, **_: Any) -> dict[str, Any]:
            return {
                "FailedRecordCount": 2,
                "Records": [
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"},
                    {"ErrorCode": "KMSAccessDeniedException", "ErrorMessage": "denied"},
                ],
            }

    with pytest.raises(FatalAwsError, match="Kinesis stream events: KMSAccessDeniedException"):
        await KinesisSink(Refusing(), "events").put(BATCH)  # type: ignore[arg-type]
