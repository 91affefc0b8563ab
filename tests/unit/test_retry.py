"""plumbing.retry: one classification of AWS failures (throttling is never a lost race), full-jitter
back-off, retries that stop at what cannot get better, and a gather that leaves nothing running."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from plumbing.retry import (
    Failure,
    backoff_delay,
    cancellation_reasons,
    classify,
    gather_limited,
    with_retries,
)
from worker.exceptions import FatalAwsError


def client_error(
    code: str, status: int = 400, message: str = "", reasons: list[str] | None = None
) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    if reasons is not None:
        response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
    return ClientError(response, "TransactWriteItems")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error("ProvisionedThroughputExceededException"), Failure.THROTTLED),
        (client_error("ThrottlingException"), Failure.THROTTLED),
        (client_error("SomethingNew", 429), Failure.THROTTLED),
        (
            client_error("TransactionCanceledException", reasons=["None", "ThrottlingError"]),
            Failure.THROTTLED,
        ),
        (
            client_error("TransactionCanceledException", reasons=["TransactionConflict", "None"]),
            Failure.CONFLICT,
        ),
        (client_error("TransactionConflictException"), Failure.CONFLICT),
        (
            client_error(
                "TransactionCanceledException", reasons=["ConditionalCheckFailed", "ThrottlingError"]
            ),
            Failure.CONDITION_FAILED,
        ),
        (client_error("ConditionalCheckFailedException"), Failure.CONDITION_FAILED),
        (client_error("InternalServerError", 500), Failure.TRANSIENT),
        (client_error("Whatever", 503), Failure.TRANSIENT),
        (client_error("AccessDeniedException"), Failure.FATAL),
        (client_error("AccessDenied", 403), Failure.FATAL),
        (client_error("ResourceNotFoundException"), Failure.FATAL),
        (client_error("AWS.SimpleQueueService.NonExistentQueue"), Failure.FATAL),
        (client_error("ValidationException"), Failure.INVALID),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), Failure.TRANSIENT),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), Failure.TRANSIENT),
        (ConnectionResetError(), Failure.TRANSIENT),
        (NoCredentialsError(), Failure.FATAL),
    ],
)
def test_throttling_is_classified_apart_from_a_version_conflict(error: BaseException, kind: Failure) -> None:
    assert classify(error) is kind


def test_cancellation_reasons_read_from_the_message_when_the_response_has_no_list() -> None:
    message = "Transaction cancelled, please refer cancellation reasons for specific reasons [None, ConditionalCheckFailed]"
    error = client_error("TransactionCanceledException", message=message)
    assert cancellation_reasons(error) == ["None", "ConditionalCheckFailed"]
    assert classify(error) is Failure.CONDITION_FAILED
    assert cancellation_reasons(client_error("TransactionCanceledException", message="throttled"), 2) == [
        "Unknown",
        "Unknown",
    ]


def test_full_jitter_stays_between_zero_and_the_capped_exponential() -> None:
    delays = [backoff_delay(attempt, 0.1, cap=1.0) for attempt in range(12) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 1.0
    assert max(backoff_delay(0, 0.1) for _ in range(200)) <= 0.1
    assert max(backoff_delay(100, 0.1, cap=3.0) for _ in range(200)) <= 3.0  # no overflow, capped


async def test_retries_stop_at_a_fatal_error_with_a_one_line_message() -> None:
    calls = 0

    async def denied() -> None:
        nonlocal calls
        calls += 1
        raise client_error("AccessDeniedException", message="no sqs:ReceiveMessage")

    with pytest.raises(FatalAwsError) as caught:
        await with_retries(denied, resource="queue q")
    assert calls == 1
    assert "queue q" in str(caught.value) and "AccessDeniedException" in str(caught.value)
    assert "\n" not in str(caught.value)


async def test_retries_go_on_while_throttled_and_give_up_on_an_invalid_request() -> None:
    answers: list[BaseException | str] = [
        client_error("ThrottlingException"),
        client_error("Boom", 500),
        "ok",
    ]

    async def flaky() -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert await with_retries(flaky, resource="r", base=0.001) == "ok"

    async def invalid() -> None:
        raise client_error("ValidationException")

    with pytest.raises(ClientError):
        await with_retries(invalid, resource="r", base=0.001)


async def test_gather_limited_keeps_order_and_raises_a_fatal_error_first() -> None:
    running = 0
    peak = 0

    async def job(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return n

    assert await gather_limited([job(n) for n in range(20)], limit=3) == list(range(20))
    assert peak <= 3

    async def fails(error: BaseException) -> None:
        raise error

    with pytest.raises(FatalAwsError):
        await gather_limited([fails(ValueError("x")), fails(FatalAwsError("table t: AccessDenied")), job(1)])
