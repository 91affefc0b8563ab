"""The fault proxy itself, against moto over HTTP with boto3: each fault reads to botocore exactly as
the real service's would, a dropped response was applied, and what moto does not do (DynamoDB's
38-digit Numbers, transaction idempotency tokens) is done."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from tests.faults.proxy import Fault, FaultProxy

pytestmark = pytest.mark.faults


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server) as started:
        yield started


def client(proxy: FaultProxy, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id="t",
        aws_secret_access_key="t",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


@pytest.fixture
def table(proxy: FaultProxy) -> str:
    name = f"t{uuid.uuid4().hex[:8]}"
    client(proxy, "dynamodb").create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def code_of(call: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_throttling_and_5xx_in_each_services_own_shape(proxy: FaultProxy, table: str) -> None:
    ddb, sqs, sns = client(proxy, "dynamodb"), client(proxy, "sqs"), client(proxy, "sns")
    queue = sqs.create_queue(QueueName=f"q{uuid.uuid4().hex[:8]}")["QueueUrl"]
    topic = sns.create_topic(Name=f"t{uuid.uuid4().hex[:8]}")["TopicArn"]
    calls = {
        "dynamodb:PutItem": lambda: ddb.put_item(TableName=table, Item={"k": {"S": "a"}}),
        "sqs:SendMessage": lambda: sqs.send_message(QueueUrl=queue, MessageBody="x"),
        "sns:Publish": lambda: sns.publish(TopicArn=topic, Message="x"),
    }
    expected = {
        "dynamodb:PutItem": "ProvisionedThroughputExceededException",
        "sqs:SendMessage": "Throttling",
        "sns:Publish": "Throttling",
    }
    for operation, call in calls.items():
        proxy.set_faults(Fault(operation, "throttle"))
        assert code_of(call) == (expected[operation], 400)
        proxy.set_faults(Fault(operation, "error", status=503))
        assert code_of(call)[1] == 503
    proxy.set_faults(Fault("dynamodb:TransactWriteItems", "txn_throttle"))
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": table, "Item": {"k": {"S": k}}}} for k in "ab"]
        )
    reasons = [r["Code"] for r in caught.value.response["CancellationReasons"]]  # type: ignore[typeddict-item]
    assert reasons == ["ThrottlingError", "None"]
    assert proxy.requests["dynamodb:PutItem"] >= 2 and proxy.injected["dynamodb:PutItem throttle"] >= 1


def test_a_dropped_response_was_applied_and_a_reset_was_not(proxy: FaultProxy, table: str) -> None:
    ddb = client(proxy, "dynamodb")
    # (botocore retries a closed connection once on its own, whatever max_attempts says)
    proxy.set_faults(Fault("dynamodb:PutItem", "drop"))
    with pytest.raises(ConnectionClosedError):
        ddb.put_item(TableName=table, Item={"k": {"S": "dropped"}})
    proxy.set_faults(Fault("dynamodb:PutItem", "reset"))
    with pytest.raises(ConnectionClosedError):
        ddb.put_item(TableName=table, Item={"k": {"S": "reset"}})
    proxy.clear()
    assert "Item" in ddb.get_item(TableName=table, Key={"k": {"S": "dropped"}})
    assert "Item" not in ddb.get_item(TableName=table, Key={"k": {"S": "reset"}})


def test_on_hit_runs_after_the_request_was_applied_and_faults_change_over_http(
    proxy: FaultProxy, table: str
) -> None:
    ddb = client(proxy, "dynamodb")
    seen: list[str] = []

    def check(operation: str) -> None:  # e.g. kill a worker here: the write is already in
        seen.append(operation)
        assert "Item" in boto3.client(
            "dynamodb",
            endpoint_url=proxy.upstream,
            region_name="us-east-1",
            aws_access_key_id="t",
            aws_secret_access_key="t",
        ).get_item(TableName=table, Key={"k": {"S": "x"}})

    proxy.set_faults(Fault("dynamodb:PutItem", "drop", on_hit=check))
    with pytest.raises(ConnectionClosedError):
        ddb.put_item(TableName=table, Item={"k": {"S": "x"}})
    assert set(seen) == {"dynamodb:PutItem"}
    request = urllib.request.Request(
        proxy.url + "/__faults__",
        method="POST",
        data=json.dumps([{"operation": "dynamodb:GetItem", "kind": "throttle"}]).encode(),
    )
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer)["faults"] == [
            {"operation": "dynamodb:GetItem", "kind": "throttle", "fired": 0}
        ]
    assert code_of(lambda: ddb.get_item(TableName=table, Key={"k": {"S": "x"}}))[0] == (
        "ProvisionedThroughputExceededException"
    )


def test_dynamodb_refuses_numbers_over_38_digits_as_aws_does(proxy: FaultProxy, table: str) -> None:
    ddb = client(proxy, "dynamodb")
    sequence = "49590338271490256608559692538361571095921575989136588898"
    assert code_of(lambda: ddb.put_item(TableName=table, Item={"k": {"S": "n"}, "seq": {"N": sequence}})) == (
        "ValidationException",
        400,
    )
    ddb.put_item(TableName=table, Item={"k": {"S": "n"}, "seq": {"S": sequence}, "n": {"N": "9" * 38}})


def test_a_transaction_token_makes_a_retry_idempotent_as_on_aws(proxy: FaultProxy, table: str) -> None:
    ddb = client(proxy, "dynamodb")
    put = {
        "Put": {
            "TableName": table,
            "Item": {"k": {"S": "once"}},
            "ConditionExpression": "attribute_not_exists(k)",
        }
    }
    ddb.transact_write_items(TransactItems=[put], ClientRequestToken="token-1")
    ddb.transact_write_items(TransactItems=[put], ClientRequestToken="token-1")  # moto alone: cancelled
    other = {"Put": {"TableName": table, "Item": {"k": {"S": "other"}}}}
    assert code_of(lambda: ddb.transact_write_items(TransactItems=[other], ClientRequestToken="token-1"))[
        0
    ] == ("IdempotentParameterMismatchException")
