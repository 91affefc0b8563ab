"""`churn-worker replay` into SQS and Kinesis on moto, with injected throttling and failed entries
(moto never throttles, so a proxy around the aiobotocore client does), read back from moto."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from cli.worker import main
from jobs.replay import ReplayRequest, run_replay
from worker.settings import Settings


def throttled(operation: str) -> ClientError:
    code = (
        "ThrottlingException" if operation == "SendMessageBatch" else "ProvisionedThroughputExceededException"
    )
    return ClientError(
        {"Error": {"Code": code, "Message": "Rate exceeded"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        operation,
    )


class Faulty:
    """Wraps an aiobotocore client: the first batch call is throttled whole, later calls have about a
    third of their entries 'fail' (never sent to moto) and reported failed in the response."""

    def __init__(self, client: Any, seed: int = 7) -> None:
        self._client = client
        self._rng = random.Random(seed)
        self.calls = 0
        self.failed_entries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _split(self, items: list[Any]) -> tuple[list[int], list[int]]:
        failing = [i for i in range(len(items)) if self._rng.random() < 0.3]
        self.failed_entries += len(failing)
        return [i for i in range(len(items)) if i not in failing], failing

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            raise throttled("SendMessageBatch")
        passing, failing = self._split(Entries)
        response: dict[str, Any] = {"Successful": [], "Failed": []}
        if passing:
            response = await self._client.send_message_batch(
                QueueUrl=QueueUrl, Entries=[Entries[i] for i in passing]
            )
        response.setdefault("Failed", [])
        response["Failed"] += [
            {"Id": Entries[i]["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for i in failing
        ]
        return response

    async def put_records(self, Records: list[dict[str, Any]], **stream: str) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            raise throttled("PutRecords")
        passing, failing = self._split(Records)
        results: list[dict[str, Any]] = [{}] * len(Records)
        if passing:
            sent = await self._client.put_records(Records=[Records[i] for i in passing], **stream)
            for i, result in zip(passing, sent["Records"], strict=True):
                results[i] = result
        for i in failing:
            results[i] = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "injected"}
        return {"FailedRecordCount": len(failing), "Records": results}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real back-off starts at 0.1 s; the behaviour under test is the same at a tenth of it."""
    monkeypatch.setattr("jobs.replay.BACKOFF_BASE_SECONDS", 0.01)


def write_events(path: Path, customers: int = 6, per_customer: int = 25, bad_line: int | None = None) -> Path:
    rng = random.Random(3)
    next_n = dict.fromkeys(range(customers), 0)
    order = []  # customers interleaved at random, each customer's events in sequence
    while next_n:
        c = rng.choice(sorted(next_n))
        order.append((c, next_n[c]))
        next_n[c] += 1
        if next_n[c] == per_customer:
            del next_n[c]
    lines = [
        json.dumps(
            {
                "event_id": f"c{c}-{n}",
                "customer_id": f"c{c}",
                "type": "login",
                "occurred_at": f"2026-03-01T{n // 60:02d}:{n % 60:02d}:00Z",
            }
        )
        for c, n in order
    ]
    if bad_line is not None:
        lines.insert(bad_line - 1, '{"event_id": "broken", "customer_id": "c0", "type": "login"}')
    path.write_text("\n".join(lines) + "\n")
    return path


def check_order_and_counts(received: dict[str, list[str]], customers: int, per_customer: int) -> None:
    assert sorted(received) == [f"c{c}" for c in range(customers)]
    for cid, ids in received.items():
        assert ids == [f"{cid}-{n}" for n in range(per_customer)], cid  # in order, none missing, none twice


async def test_sqs_keeps_each_customers_order_and_loses_nothing_under_throttling(
    aws_endpoint: str, unique_prefix: str, tmp_path: Path
) -> None:
    async with get_session().create_client("sqs", region_name="us-east-1") as sqs:
        url = (await sqs.create_queue(QueueName=f"{unique_prefix}events"))["QueueUrl"]
        faulty: list[Faulty] = []

        def wrap(client: Any) -> Faulty:
            faulty.append(Faulty(client))
            return faulty[-1]

        events = write_events(tmp_path / "e.jsonl")
        assert (
            await run_replay(Settings(sqs_queue_url=url), ReplayRequest(events, "sqs"), wrap_client=wrap) == 0
        )
        received: dict[str, list[str]] = defaultdict(list)
        while True:
            messages = (
                await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            ).get("Messages", [])
            if not messages:
                break
            for m in messages:
                body = json.loads(m["Body"])
                received[body["customer_id"]].append(body["event_id"])
            await sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
    assert faulty[0].failed_entries > 0
    check_order_and_counts(received, 6, 25)


async def test_kinesis_keeps_each_customers_order_and_loses_nothing_under_throttling(
    aws_endpoint: str, unique_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = f"{unique_prefix}events"
    async with get_session().create_client("kinesis", region_name="us-east-1") as kinesis:
        await kinesis.create_stream(StreamName=stream, ShardCount=2)
        await kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1})
        events = write_events(tmp_path / "e.jsonl")
        request = ReplayRequest(events, "kinesis", as_json=True)
        assert await run_replay(Settings(kinesis_stream=stream), request, wrap_client=Faulty) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["sent"] == 150 and summary["retried"] > 0 and summary["skipped"] == 0

        received: dict[str, list[str]] = defaultdict(list)
        for shard in (await kinesis.list_shards(StreamName=stream))["Shards"]:
            iterator = (
                await kinesis.get_shard_iterator(
                    StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            while iterator:
                page = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
                for record in page["Records"]:
                    body = json.loads(record["Data"])
                    assert record["PartitionKey"] == body["customer_id"]
                    received[body["customer_id"]].append(body["event_id"])
                iterator = page.get("NextShardIterator") if page["Records"] else None
    check_order_and_counts(received, 6, 25)


def test_a_bad_line_stops_the_replay_with_its_number(
    aws_endpoint: str,
    unique_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    async def make_queue() -> str:
        async with get_session().create_client("sqs", region_name="us-east-1") as sqs:
            url: str = (await sqs.create_queue(QueueName=f"{unique_prefix}bad"))["QueueUrl"]
            return url

    monkeypatch.setenv("CHURN_SQS_QUEUE_URL", asyncio.run(make_queue()))
    events = write_events(tmp_path / "e.jsonl", customers=2, per_customer=5, bad_line=4)
    assert main(["replay", str(events), "--to", "sqs"]) == 2
    captured = capsys.readouterr()
    assert "e.jsonl:4: missing_field" in captured.err and "sent 3," in captured.out

    assert main(["replay", str(events), "--to", "sqs", "--on-error", "skip", "--json"]) == 0
    captured = capsys.readouterr()
    assert "e.jsonl:4: missing_field" in captured.err
    summary = json.loads(captured.out)
    assert (summary["sent"], summary["skipped"]) == (10, 1)


def test_rate_and_window_options(
    aws_endpoint: str,
    unique_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    async def make_queue() -> str:
        async with get_session().create_client("sqs", region_name="us-east-1") as sqs:
            url: str = (await sqs.create_queue(QueueName=f"{unique_prefix}rate"))["QueueUrl"]
            return url

    monkeypatch.setenv("CHURN_SQS_QUEUE_URL", asyncio.run(make_queue()))
    events = write_events(tmp_path / "e.jsonl", customers=2, per_customer=5)
    assert (
        main(
            [
                "replay",
                str(events),
                "--to",
                "sqs",
                "--rate",
                "20",
                "--start",
                "2026-03-01T00:01:00Z",
                "--end",
                "2026-03-01T00:04:00Z",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["sent"], summary["out_of_range"]) == (6, 4)
    assert summary["seconds"] >= 5 / 20  # six events at 20/s: the last one 0.25 s after the first
