"""AWS errors, what each one means for the caller, and how long to wait before trying again.

The one owner of error codes, retryable sets and back-off: every adapter (feature store, due
index, alert ledger, publisher, scorer, sources, replay) asks `classify(exc)` what a failed call
means instead of keeping its own list of codes.

What a failure is (`Failure`):
- THROTTLED: the service asks us to slow down (`ProvisionedThroughputExceededException`,
  `ThrottlingException`, HTTP 429, a transaction cancelled with `ThrottlingError`). Retry after a
  jittered back-off. Never read as a lost race: a throttled writer re-reading and re-writing at
  once only adds load.
- CONFLICT: a transaction collided with another one on the same item (`TransactionConflict`).
  Nobody's condition failed: retry shortly.
- CONDITION_FAILED: a condition we wrote did not hold (`ConditionalCheckFailedException`, a
  transaction cancelled with `ConditionalCheckFailed`). The caller decides: re-read, skip, ...
- TRANSIENT: 5xx, timeouts, dropped connections, a response lost on the way back. Retry.
- FATAL: no retry will fix it: access denied, bad credentials, a missing table, queue, stream or
  topic. The worker stops with exit code 1 and a one-line error naming the resource
  (`FatalAwsError`), so the operator (or ECS's restart loop and its alarm) sees it at once instead
  of a worker that runs and does nothing. No credentials at all (botocore's `NoCredentialsError`,
  `PartialCredentialsError`) is fatal too, and the user's to fix: `MissingCredentialsError`, a
  `FatalAwsError` that is also a `UsageError` (the command-line tools exit 2), naming the resource
  and where credentials come from.
- INVALID: the service refused the request as malformed (`ValidationException`, ...): a bug or a
  bad record, not an outage. Retrying the same request cannot help.

Back-off is "full jitter" (a uniform wait between 0 and min(cap, base * 2^attempt)), the AWS
Architecture Blog's recommendation: it spreads retries of many workers best. A loop that polls one
resource against a per-resource rate (a Kinesis shard's reads) keeps a `floor` share of that wait
instead: an immediate retry would only meet the same limit again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from plumbing.exceptions import FatalAwsError, UsageError

T = TypeVar("T")


class Failure(StrEnum):
    THROTTLED = "throttled"
    CONFLICT = "conflict"
    CONDITION_FAILED = "condition_failed"
    TRANSIENT = "transient"
    FATAL = "fatal"
    INVALID = "invalid"


THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "LimitExceededException",
        "SlowDown",
        "KMSThrottlingException",
        "AWS.SimpleQueueService.RequestThrottled",
        "TransactionInProgressException",
        # CancellationReasons codes of a cancelled transaction
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalDependencyException",
        "ModelNotReadyException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "KMSInternalException",
        "EC2ThrottledException",
    }
)
CONFLICT_CODES = frozenset({"TransactionConflictException", "TransactionConflict"})
# PartiQL's INSERT of an item that exists is a failed "does not exist yet" condition by another name
CONDITION_CODES = frozenset(
    {"ConditionalCheckFailedException", "ConditionalCheckFailed", "DuplicateItem", "DuplicateItemException"}
)
FATAL_CODES = frozenset(
    {
        # access
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "KMSAccessDeniedException",
        "KMS.AccessDeniedException",
        "KMSDisabledException",
        "KMSNotFoundException",
        "KMSInvalidStateException",
        "KMSOptInRequired",
        "OptInRequired",
        # the resource is not there
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NotFound",
        "NotFoundException",
        "TopicNotFound",
        "NoSuchBucket",
    }
)
# Reasons DynamoDB gives per item of a cancelled transaction ("None" = this item was fine).
NO_REASON = "None"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    response: Any = exc.response
    status = response.get("OriginalStatusCode") or response.get("ResponseMetadata", {}).get(
        "HTTPStatusCode", 0
    )
    try:
        return int(status)
    except (TypeError, ValueError):
        return 0


def error_text(exc: BaseException) -> str:
    """One line for logs and error messages: `Code: Message` for AWS errors, else the exception."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def cancellation_reasons(exc: ClientError, items: int | None = None) -> list[str]:
    """The per-item reason codes of a `TransactionCanceledException` ("None" for items that were
    fine), from `CancellationReasons`, or parsed from the message (`... reasons [A, None]`) when a
    server sends no list. `items`, when given, pads or trims the list to that many."""
    response: Any = exc.response
    reasons = [str(reason.get("Code", NO_REASON)) for reason in response.get("CancellationReasons") or []]
    if not reasons:
        message = str(exc.response.get("Error", {}).get("Message", ""))
        if "[" in message:
            reasons = [
                code.strip() for code in message.rsplit("[", 1)[-1].rstrip("]").split(",") if code.strip()
            ]
    if items is not None:
        reasons = (reasons + ["Unknown"] * items)[:items] if len(reasons) != items else reasons
    return reasons


def classify(exc: BaseException) -> Failure:
    """What a failed AWS call means for the caller (see the module docstring)."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code == "TransactionCanceledException":
            return classify_cancellation(cancellation_reasons(exc))
        return classify_code(code, http_status(exc))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError):
        return Failure.FATAL
    if isinstance(exc, BotoCoreError | OSError | TimeoutError | asyncio.TimeoutError):
        return Failure.TRANSIENT  # connection refused/reset, read timeouts, a response that never came
    return Failure.INVALID


def classify_code(code: str, status: int = 0) -> Failure:
    """What an error code means, with the HTTP status when there is one (0: none, or no answer).
    Also for the per-entry codes of batch calls (PutRecords' `ErrorCode`), which no exception carries."""
    if code in CONDITION_CODES:
        return Failure.CONDITION_FAILED
    if code in THROTTLING_CODES:
        return Failure.THROTTLED
    if code in CONFLICT_CODES:
        return Failure.CONFLICT
    if code in FATAL_CODES:
        return Failure.FATAL
    if code in TRANSIENT_CODES:
        return Failure.TRANSIENT
    if status == 429:
        return Failure.THROTTLED
    if status >= 500 or status == 0:
        return Failure.TRANSIENT
    if status in (401, 403):
        return Failure.FATAL
    return Failure.INVALID


def classify_cancellation(reasons: Sequence[str]) -> Failure:
    """What a cancelled transaction's reasons (or one item's share of them) mean.
    A failed condition is the caller's answer whatever else happened; throttling before conflict:
    both are retried, but a throttled transaction must back off."""
    if any(reason in CONDITION_CODES for reason in reasons):
        return Failure.CONDITION_FAILED
    if any(reason in THROTTLING_CODES for reason in reasons):
        return Failure.THROTTLED
    if any(reason in CONFLICT_CODES for reason in reasons):
        return Failure.CONFLICT
    if any(reason in ("ValidationError", "ItemCollectionSizeLimitExceeded") for reason in reasons):
        return Failure.INVALID
    return Failure.TRANSIENT


RETRYABLE = frozenset({Failure.THROTTLED, Failure.CONFLICT, Failure.TRANSIENT})


def is_retryable(exc: BaseException) -> bool:
    return classify(exc) in RETRYABLE


def is_fatal(exc: BaseException) -> bool:
    return classify(exc) is Failure.FATAL


class MissingCredentialsError(FatalAwsError, UsageError):
    """No AWS credentials (or half of them) for a call on a resource: fatal, never retried, and the
    user's to fix (exit 2 from the command-line tools). The message names the resource."""


CREDENTIALS_HINT = "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run on a role)"
CREDENTIAL_ERRORS = (NoCredentialsError, PartialCredentialsError)


def credentials_error(exc: BaseException, resource: str) -> MissingCredentialsError:
    """`RESOURCE: no AWS credentials found: set AWS_PROFILE or ...`, one line."""
    if isinstance(exc, PartialCredentialsError):
        return MissingCredentialsError(f"{resource}: incomplete AWS credentials ({exc}): {CREDENTIALS_HINT}")
    return MissingCredentialsError(f"{resource}: no AWS credentials found: {CREDENTIALS_HINT}")


@contextmanager
def credentials_for(resource: str) -> Iterator[None]:
    """Calls in the block that find no AWS credentials raise `MissingCredentialsError` naming
    `resource` (for callers that do not classify their errors with `fatal_error`)."""
    try:
        yield
    except CREDENTIAL_ERRORS as exc:
        raise credentials_error(exc, resource) from None


def fatal_error(exc: BaseException, resource: str) -> FatalAwsError:
    """The error that stops the worker: what failed on which resource, and what to check."""
    if isinstance(exc, CREDENTIAL_ERRORS):
        return credentials_error(exc, resource)
    return FatalAwsError(
        f"{resource}: {error_text(exc)}; check that it exists (`churn-worker bootstrap`) and that the "
        "task role may use it"
    )


def raise_if_fatal(exc: BaseException, resource: str) -> None:
    if is_fatal(exc):
        raise fatal_error(exc, resource) from exc


# -- back-off -------------------------------------------------------------------------------------


def backoff_delay(attempt: int, base: float, cap: float = 20.0, floor: float = 0.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)]; attempt 0 is the first retry.
    `floor` (0 to 1) raises the low end to that share of the ceiling (0.5: "equal jitter")."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    return random.uniform(floor * ceiling, ceiling)


async def backoff(attempt: int, base: float, cap: float = 20.0, floor: float = 0.0) -> None:
    await asyncio.sleep(backoff_delay(attempt, base, cap, floor))


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    resource: str,
    attempts: int = 5,
    base: float = 0.05,
    cap: float = 5.0,
    retry_on: Iterable[Failure] = RETRYABLE,
) -> T:
    """`await call()`, retried with full-jitter back-off while it fails in a `retry_on` way. A fatal
    failure becomes `FatalAwsError` at once; anything else (or the last attempt's failure) is
    raised as it is, for the caller to wrap in its own error."""
    retryable = frozenset(retry_on)
    for attempt in range(attempts):
        try:
            return await call()
        except (ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            kind = classify(exc)
            if kind is Failure.FATAL:
                raise fatal_error(exc, resource) from exc
            if kind not in retryable or attempt + 1 >= attempts:
                raise
            await backoff(attempt, base, cap)
    raise AssertionError("unreachable: the loop returns or raises")


# -- concurrency ----------------------------------------------------------------------------------


async def gather_limited(awaitables: Sequence[Awaitable[T]], limit: int = 32) -> list[T]:
    """`asyncio.gather` with at most `limit` awaitables running at once, results in order. The
    first failure is raised once every awaitable has finished (none is left running unobserved)."""
    semaphore = asyncio.Semaphore(limit)

    async def run(awaitable: Awaitable[T]) -> T:
        async with semaphore:
            return await awaitable

    results = await asyncio.gather(*(run(a) for a in awaitables), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:  # a fatal one first: it is the one that must stop the worker
        raise next((f for f in failures if isinstance(f, FatalAwsError)), failures[0])
    return results  # type: ignore[return-value]  # no exceptions left: every item is a T
