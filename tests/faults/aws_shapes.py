"""What AWS answers that moto does not, for the fault proxy (`tests.faults.proxy`): each service's
own throttling and 5xx error shapes (so botocore parses the real error codes), DynamoDB's refusal
of Numbers over 38 significant digits, and the idempotency of `TransactWriteItems` retried with
the same `ClientRequestToken`."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

Response = tuple[int, list[tuple[str, str]], bytes]


def error_response(operation: str, kind: str, status: int, request: bytes = b"") -> Response:
    """The service's own error for a throttled or failed call."""
    service = operation.split(":", 1)[0]
    request_id = str(uuid.uuid4())
    if kind == "txn_throttle":  # one reason per item, as DynamoDB does: the first item throttled
        items = len(json.loads(request or b"{}").get("TransactItems", [])) or 1
        reasons = [
            {
                "Code": "ThrottlingError",
                "Message": "Throughput exceeds the current capacity of your table or index.",
            }
        ] + [{"Code": "None"}] * (items - 1)
        listed = ", ".join(reason["Code"] for reason in reasons)
        body = {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "message": f"Transaction cancelled, please refer cancellation reasons for specific reasons [{listed}]",
            "CancellationReasons": reasons,
        }
        return (
            400,
            [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id)],
            json.dumps(body).encode(),
        )
    throttled = kind == "throttle"
    if service in ("dynamodb", "kinesis"):
        if throttled:
            code, status = "ProvisionedThroughputExceededException", 400
        else:
            code = "InternalServerError" if service == "dynamodb" else "InternalFailure"
            code = "ServiceUnavailable" if status == 503 else code
        namespace = "com.amazonaws.dynamodb.v20120810#" if service == "dynamodb" else ""
        version = "1.0" if service == "dynamodb" else "1.1"
        body = json.dumps({"__type": namespace + code, "message": f"injected {kind}"}).encode()
        return (
            status,
            [("Content-Type", f"application/x-amz-json-{version}"), ("x-amzn-RequestId", request_id)],
            body,
        )
    if service == "sqs":  # JSON protocol, query-compatible: the legacy code travels in a header
        code, status = (
            ("Throttling", 400)
            if throttled
            else ("InternalError" if status != 503 else "ServiceUnavailable", status)
        )
        body = json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": f"injected {kind}"}).encode()
        headers = [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-query-error", f"{code};{'Sender' if throttled else 'Receiver'}"),
        ]
        return status, headers, body
    if service == "sagemaker":  # rest-json: the code is in x-amzn-ErrorType
        code, status = (
            ("ThrottlingException", 429)
            if throttled
            else ("ServiceUnavailable" if status == 503 else "InternalFailure", status)
        )
        body = json.dumps({"message": f"injected {kind}"}).encode()
        return (
            status,
            [
                ("Content-Type", "application/json"),
                ("x-amzn-ErrorType", code),
                ("x-amzn-RequestId", request_id),
            ],
            body,
        )
    # query protocol (SNS)
    code, status = (
        ("Throttling", 400)
        if throttled
        else ("InternalError" if status != 503 else "ServiceUnavailable", status)
    )
    fault_type = "Sender" if throttled else "Receiver"
    body = (
        f"<ErrorResponse><Error><Type>{fault_type}</Type><Code>{code}</Code><Message>injected {kind}"
        f"</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


_MAX_NUMBER_DIGITS = 38


def _too_precise(value: str) -> bool:
    digits = value.lstrip("+-").lower().split("e")[0].replace(".", "").strip("0")
    return len(digits) > _MAX_NUMBER_DIGITS


def _numbers(node: Any) -> list[str]:
    """Every DynamoDB Number in a request (`{"N": "..."}` and `{"NS": [...]}`), at any depth."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "N" and isinstance(value, str):
                found.append(value)
            elif key == "NS" and isinstance(value, list):
                found += [v for v in value if isinstance(v, str)]
            else:
                found += _numbers(value)
    elif isinstance(node, list):
        for value in node:
            found += _numbers(value)
    return found


def dynamodb_refusal(operation: str, body: bytes) -> Response | None:
    """DynamoDB's answer to a Number it cannot hold (moto accepts any)."""
    if not operation.startswith("dynamodb:") or b'"N' not in body:
        return None
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not any(_too_precise(n) for n in _numbers(request)):
        return None
    error = {
        "__type": "com.amazon.coral.validate#ValidationException",
        "message": "Attempting to store more than 38 significant digits in a Number",
    }
    return 400, [("Content-Type", "application/x-amz-json-1.0")], json.dumps(error).encode()


class TransactionTokens:
    """DynamoDB's ClientRequestToken idempotency for TransactWriteItems (10 minutes; moto ignores it)."""

    def __init__(self) -> None:
        self._seen: dict[str, bytes] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _token(operation: str, body: bytes) -> str | None:
        if operation != "dynamodb:TransactWriteItems" or b"ClientRequestToken" not in body:
            return None
        token = json.loads(body).get("ClientRequestToken")
        return str(token) if token else None

    def replay(self, operation: str, body: bytes) -> Response | None:
        token = self._token(operation, body)
        with self._lock:
            if token is None or token not in self._seen:
                return None
            same = self._seen[token] == body
        headers = [("Content-Type", "application/x-amz-json-1.0")]
        if same:
            return 200, headers, b"{}"
        error = {
            "__type": "com.amazonaws.dynamodb.v20120810#IdempotentParameterMismatchException",
            "message": "The request uses the same client token as a previous, but non-identical request.",
        }
        return 400, headers, json.dumps(error).encode()

    def applied(self, operation: str, body: bytes) -> None:
        token = self._token(operation, body)
        if token is not None:
            with self._lock:
                self._seen[token] = body
