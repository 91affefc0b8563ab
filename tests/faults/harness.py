"""The scenario runner: real processes, real HTTP, faults in between.

Per session (see conftest): moto's server made AWS-like (`tests.faults.awsemu`), the local model
endpoint on a tiny bundle, and two fault proxies (`tests.faults.proxy`), one in front of each.
Per scenario: fresh resources under a random prefix (the product's own `bootstrap`, straight to
moto), `churn-worker run` processes pointed at the proxies (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`), events fed through the proxy, faults and kills injected,
then `finish()`: wait until the worker is quiet (source drained and, within the time limit, the
store and the alerts as the independent fold says), fold, compare, record a row of the suite's
table, and assert lost 0, double 0, duplicate alerts 0, missing alerts 0, DLQ exactly the injected
bad records.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from tests.e2e.conftest import BIN, Process, base_env
from tests.fakes import wait_until_blocking
from tests.faults.checker import (
    Expected,
    Figures,
    Stored,
    compare_alerts,
    compare_dlq,
    compare_store,
    fold,
    read_customer,
)
from tests.faults.events import Bad
from tests.faults.proxy import ProxyPair

# Every rule but the model-free IB_CALL_SPIKE is off, except HEALTH_SCORE_CRITICAL at 100: any
# answer from the model fires it, so "every customer gets one" proves the endpoint scored everyone
# (and only then: without a model answer that rule cannot fire). A tiny test model's scores are
# noise, so no other model rule has an outcome known in advance.
FAULTS_CONFIG = """
[alerts.high_churn_risk]
enabled = false
[alerts.health_score_critical]
max_health_score = 100
[alerts.first_session_risk]
enabled = false
[alerts.session_velocity_drop]
enabled = false
"""

# Shorter waits than production so a scenario takes seconds; the logic is the same.
WORKER_ENV = {
    "CHURN_SQS_WAIT_SECONDS": "1",
    "CHURN_SQS_VISIBILITY_TIMEOUT": "6",
    "CHURN_SQS_POLLERS": "2",
    "CHURN_HEALTH_PORT": "0",
    "CHURN_KINESIS_LEASE_SECONDS": "3",
    "CHURN_KINESIS_POLL_SECONDS": "0.2",
    "CHURN_ALERT_CLAIM_LEASE_SECONDS": "30",
    "CHURN_SHUTDOWN_GRACE_SECONDS": "5",
}


@dataclass
class Row:
    scenario: str
    source: str
    events: int
    deliveries: int
    bad: int
    faults: int
    lost: int
    double: int
    duplicate_alerts: int
    missing_alerts: int
    dlq: str
    seconds: float
    passed: bool
    note: str = ""
    known_issue: str | None = None


RESULTS: list[Row] = []
FIFO_DEDUPLICATION_SECONDS = 300


def table(rows: Iterable[Row]) -> str:
    header = (
        "| scenario | source | events | delivered | bad | faults | lost | double | dup alerts | missing alerts "
        "| DLQ (got/bad) | s | notes |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        mark = "" if r.passed else f" (known: {r.known_issue})" if r.known_issue else " **FAIL**"
        lines.append(
            f"| {r.scenario}{mark} | {r.source} | {r.events} | {r.deliveries} | {r.bad} | {r.faults} | "
            f"{r.lost} | {r.double} | {r.duplicate_alerts} | {r.missing_alerts} | {r.dlq} | {r.seconds:.0f} | {r.note} |"
        )
    return "\n".join(lines)


@dataclass
class Servers:
    moto: str  # straight to moto: setup and inspection, never faulted
    proxies: ProxyPair


@dataclass
class Scenario:
    name: str
    servers: Servers
    tmp: Path
    source: str = "sqs"
    prefix: str = field(default_factory=lambda: f"f{uuid.uuid4().hex[:8]}-")
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Process] = field(default_factory=list)
    good: list[dict[str, Any]] = field(default_factory=list)  # every good event sent (duplicates too)
    bad: list[Bad] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    alerts_queue: str = ""
    puts: dict[str, str] = field(default_factory=dict)  # Kinesis shard -> last sequence number put
    started: float = field(default_factory=time.monotonic)
    note: str = ""
    fifo_seen: dict[str, float] = field(default_factory=dict)  # MessageDeduplicationId -> first seen
    fifo_dropped: int = 0
    kills: int = 0  # processes killed on purpose (SIGKILL, kill points): counted as faults
    known_issue: str | None = None  # an xfail'd scenario: the finding it demonstrates

    # --- resources -------------------------------------------------------------------------------

    def client(self, service: str, via_proxy: bool = False) -> Any:
        url = self.servers.proxies.aws.url if via_proxy else self.servers.moto
        return boto3.client(
            service,
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="faults",
            aws_secret_access_key="faults",
        )

    def bootstrap(
        self,
        *,
        shards: int = 1,
        fifo_queue: bool = False,
        fifo_topic: bool = False,
        config: str = FAULTS_CONFIG,
    ) -> None:
        """The product's `bootstrap` against moto itself, then the subscriber queue on the topic."""
        from cli.commands.bootstrap import bootstrap
        from worker.settings import Settings

        settings = Settings(source=self.source, table_prefix=self.prefix, kinesis_shards=shards)  # type: ignore[arg-type]
        previous = os.environ.get("AWS_ENDPOINT_URL")
        os.environ["AWS_ENDPOINT_URL"] = self.servers.moto
        try:
            rows = asyncio.run(bootstrap(settings))
        finally:
            if previous is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = previous
        (self.tmp / "faults.toml").write_text(config)
        self.env = (
            base_env()
            | WORKER_ENV
            | {
                "AWS_ENDPOINT_URL": self.servers.proxies.aws.url,
                "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.servers.proxies.model.url,
                "CHURN_SOURCE": self.source,
                "CHURN_TABLE_PREFIX": self.prefix,
                "CHURN_KINESIS_SHARDS": str(shards),
            }
        )
        for row in rows:
            if row.setting and row.setting != "CHURN_TABLE_PREFIX" and row.value:
                self.env[row.setting] = row.value
        sqs = self.client("sqs")
        if fifo_queue:
            url = sqs.create_queue(
                QueueName=f"{self.prefix}events.fifo",
                Attributes={"FifoQueue": "true", "VisibilityTimeout": "6"},
            )["QueueUrl"]
            self.env["CHURN_SQS_QUEUE_URL"] = url
        if fifo_topic:
            self.env["CHURN_ALERTS_TOPIC_ARN"] = self.client("sns").create_topic(
                Name=f"{self.prefix}alerts.fifo", Attributes={"FifoTopic": "true"}
            )["TopicArn"]
        attributes = {"FifoQueue": "true"} if fifo_topic else {}
        self.alerts_queue = sqs.create_queue(
            QueueName=f"{self.prefix}subscriber" + (".fifo" if fifo_topic else ""), Attributes=attributes
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=self.alerts_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.client("sns").subscribe(
            TopicArn=self.env["CHURN_ALERTS_TOPIC_ARN"],
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )

    # --- workers ---------------------------------------------------------------------------------

    def start_worker(self, name: str = "worker", wait: bool = True, **extra_env: str) -> Process:
        env = dict(self.env, **extra_env)
        args = [str(BIN / "churn-worker"), "--config", str(self.tmp / "faults.toml"), "run", "--json-logs"]
        process = Process(args, env, f"{self.name}/{name}")
        self.workers.append(process)
        if wait:
            process.wait_for(r'"event": "worker started"', timeout=60)
        return process

    def killer(self, worker: Process) -> Callable[[str], None]:
        """An `on_hit` for a proxy fault: SIGKILL `worker` at that very request."""

        def kill(_: str) -> None:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGKILL)
                self.kills += 1

        return kill

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    # --- feeding ---------------------------------------------------------------------------------

    def send_sqs(self, bodies: list[bytes | str], group_of: Callable[[int], str] | None = None) -> None:
        """Send as producers do: batches of 10, straight to moto (the producer is not under test)."""
        sqs, queue = self.client("sqs"), self.env["CHURN_SQS_QUEUE_URL"]
        for start in range(0, len(bodies), 10):
            entries = []
            for i, body in enumerate(bodies[start : start + 10]):
                entry: dict[str, Any] = {
                    "Id": str(i),
                    "MessageBody": body.decode() if isinstance(body, bytes) else body,
                }
                if group_of is not None:
                    entry["MessageGroupId"] = group_of(start + i)
                    entry["MessageDeduplicationId"] = uuid.uuid4().hex
                entries.append(entry)
            response = sqs.send_message_batch(QueueUrl=queue, Entries=entries)
            assert not response.get("Failed"), response["Failed"]

    def put_kinesis(self, records: list[tuple[str, bytes]]) -> None:
        kinesis, stream = self.client("kinesis"), self.env["CHURN_KINESIS_STREAM"]
        for start in range(0, len(records), 100):
            chunk = records[start : start + 100]
            response = kinesis.put_records(
                StreamName=stream, Records=[{"Data": data, "PartitionKey": key} for key, data in chunk]
            )
            assert response["FailedRecordCount"] == 0
            for result in response["Records"]:
                shard, sequence = result["ShardId"], result["SequenceNumber"]
                if shard not in self.puts or int(sequence) > int(self.puts[shard]):
                    self.puts[shard] = sequence

    def feed(
        self,
        good: list[dict[str, Any]],
        bad: list[Bad] = (),
        shuffle_seed: int | None = 3,  # type: ignore[assignment]
        copies: int = 1,
    ) -> None:
        """Good events (each `copies` times) and bad records, mixed, on the scenario's source."""
        import random

        self.good += good * copies
        self.bad += list(bad)
        items: list[tuple[str, bytes]] = [(e["customer_id"], json.dumps(e).encode()) for e in good * copies]
        items += [(f"bad-{i}", b.body) for i, b in enumerate(bad)]
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(items)
        if self.source == "sqs":
            self.send_sqs([body for _, body in items])
        else:
            self.put_kinesis(items)

    # --- observing -------------------------------------------------------------------------------

    def queue_depth(self, url: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, url: str, into: list[dict[str, Any]], raw: bool = False) -> None:
        sqs = self.client("sqs")
        while True:
            got = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return
            for message in got:
                if self._fifo_duplicate(message):
                    continue
                into.append(message if raw else json.loads(message["Body"]))
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)],
            )

    def _fifo_duplicate(self, message: dict[str, Any]) -> bool:
        """A FIFO queue accepts a MessageDeduplicationId once per 5 minutes, whether or not the
        first message is still there; moto forgets it once that message is deleted. The suite
        deletes what it reads, so it applies AWS's rule itself."""
        dedup = message.get("Attributes", {}).get("MessageDeduplicationId")
        if dedup is None:
            return False
        now = time.monotonic()
        first = self.fifo_seen.setdefault(dedup, now)
        if first == now or now - first >= FIFO_DEDUPLICATION_SECONDS:
            self.fifo_seen[dedup] = now
            return False
        self.fifo_dropped += 1
        return True

    def leases(self) -> dict[str, dict[str, Any]]:
        items = self.client("dynamodb").scan(TableName=f"{self.prefix}leases", ConsistentRead=True)["Items"]
        return {i["shard_id"]["S"]: i for i in items if not i["shard_id"]["S"].startswith("worker#")}

    def source_drained(self) -> bool:
        if self.source == "sqs":
            return self.queue_depth(self.env["CHURN_SQS_QUEUE_URL"]) == 0
        leases = self.leases()
        for shard, last in self.puts.items():
            checkpoint = leases.get(shard, {}).get("checkpoint", {}).get("S")
            if checkpoint is None or (checkpoint != "SHARD_END" and int(checkpoint) < int(last)):
                return False
        return True

    def stored(self, customers: Iterable[str]) -> dict[str, Stored]:
        dynamodb, table = self.client("dynamodb"), f"{self.prefix}features"
        return {cid: read_customer(dynamodb, table, cid) for cid in customers}

    def expected(self, now: datetime, model_alerts: bool = True) -> Expected:
        return fold(self.good, now, model_alerts)

    # --- the end ---------------------------------------------------------------------------------

    def finish(
        self,
        now: datetime,
        *,
        model_alerts: bool = True,
        timeout: float = 60,
        settle: float = 1.0,
        exact_alerts: bool = True,
        workers_alive: bool = True,
        extra: Callable[[Figures], None] | None = None,
    ) -> Figures:
        """Wait for quiet (or `timeout`), `settle` seconds more for anything late (a second alert),
        then compare and record. Fails the test if any figure is off."""
        expected = self.expected(now, model_alerts)
        deadline = time.monotonic() + timeout

        def quiet() -> bool:
            self.drain(self.alerts_queue, self.alerts)
            if not self.source_drained():
                return False
            figures = Figures()
            compare_store(expected, self.stored(expected.counts), figures)
            compare_alerts(expected, self.alerts, figures, exact=False)
            return figures.lost == 0 and figures.double == 0 and figures.missing_alerts == 0

        while time.monotonic() < deadline and not quiet():
            time.sleep(0.5)
        time.sleep(settle)
        self.drain(self.alerts_queue, self.alerts)
        self.drain(self.env["CHURN_DLQ_URL"], self.dead, raw=True)
        figures = Figures()
        compare_store(expected, self.stored(expected.counts), figures)
        compare_alerts(expected, self.alerts, figures, exact=exact_alerts)
        compare_dlq(self.bad, self.dead, figures)
        if extra is not None:
            try:
                extra(figures)
            except AssertionError as exc:  # a scenario's own check: failed like the figures, recorded
                figures.failed_checks.append(
                    str(exc).splitlines()[0] if str(exc) else "a scenario check failed"
                )
        if workers_alive:
            for worker in self.workers[-1:]:
                if worker.proc.poll() is not None:
                    figures.details.append(f"{worker.name} exited with {worker.proc.returncode}")
        injected = (
            self.servers.proxies.aws.injected_total()
            + self.servers.proxies.model.injected_total()
            + self.kills
        )
        passed = (
            figures.clean and not figures.failed_checks and not any("exited" in d for d in figures.details)
        )
        RESULTS.append(
            Row(
                self.name,
                self.source,
                expected.events,
                len(self.good),
                len(self.bad),
                injected,
                figures.lost,
                figures.double,
                figures.duplicate_alerts,
                figures.missing_alerts,
                f"{figures.dlq}/{figures.dlq_expected}"
                + (f" (+{figures.dlq_copies} copy)" if figures.dlq_copies else ""),
                time.monotonic() - self.started,
                passed,
                "; ".join([self.note, *figures.failed_checks]).strip("; "),
                self.known_issue,
            )
        )
        for worker in self.workers:  # whole logs, for the post-mortem
            (self.tmp / f"{worker.name.rsplit('/', 1)[-1]}.log").write_text("\n".join(worker.lines) + "\n")
        if not passed:
            logs = f"(whole logs in {self.tmp})\n" + "\n".join(
                line for w in self.workers for line in w.lines[-25:]
            )
            problems = "\n".join(figures.failed_checks + figures.details[:40] + figures.dlq_wrong)
            raise AssertionError(
                f"{self.name}: lost {figures.lost}, double {figures.double}, duplicate alerts "
                f"{figures.duplicate_alerts}, missing alerts {figures.missing_alerts}, DLQ "
                f"{figures.dlq}/{figures.dlq_expected}\n{problems}\nworker output:\n{logs}"
            )
        return figures

    def wait_until(self, condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        wait_until_blocking(
            condition,
            timeout,
            interval=0.3,
            what=f"{what} ({self.name})",
            details=lambda: (
                "worker output:\n" + "\n".join(line for w in self.workers for line in w.lines[-20:])
            ),
        )
