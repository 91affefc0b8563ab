"""End-to-end harness: real processes. moto's server (`python -m localaws`), the local model
endpoint (`churn-model serve`) and `churn-worker run` workers, all on 127.0.0.1, talking HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.fakes import wait_until_blocking

BIN = Path(sys.executable).parent
E2E_CONFIG = """
# Only the rule that needs no model: a one-epoch test model's scores are noise, and these tests are
# about delivery (duplicates, crashes, bad input), not about the model.
[alerts.high_churn_risk]
enabled = false
[alerts.health_score_critical]
enabled = false
[alerts.first_session_risk]
enabled = false
[alerts.session_velocity_drop]
enabled = false
"""


class Process:
    """A child process whose output is collected line by line on a thread."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                match = re.search(pattern, line)
                if match:
                    return match
            seen = len(self.lines)
            if self.proc.poll() is not None and seen == len(self.lines):
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name}: no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:])
        )

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CHURN_"))}
    env.update(
        AWS_ACCESS_KEY_ID="e2e",
        AWS_SECRET_ACCESS_KEY="e2e",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def moto_process() -> Iterator[str]:
    process = Process([sys.executable, "-m", "localaws", "--port", "0"], base_env(), "moto")
    url = process.wait_for(r"listening on (http://\S+)").group(1)
    yield url
    process.stop()


@pytest.fixture(scope="session")
def model_process(tiny_bundle: Path) -> Iterator[str]:
    args = [str(BIN / "churn-model"), "serve", "--bundle", str(tiny_bundle), "--port", "0"]
    process = Process(args, base_env(), "model")
    url = process.wait_for(r"listening on (http://\S+)").group(1)
    yield url
    process.stop()


@dataclass
class Stack:
    """One test's resources on the shared servers, and helpers to drive and observe them."""

    env: dict[str, str]
    config: Path
    workers: list[Process] = field(default_factory=list)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="e2e",
            aws_secret_access_key="e2e",
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "churn-worker"), *args], env=self.env, capture_output=True, text=True, timeout=120
        )

    def start_worker(self, name: str = "worker", **extra_env: str) -> Process:
        env = dict(self.env, **extra_env)
        process = Process(
            [str(BIN / "churn-worker"), "--config", str(self.config), "run", "--json-logs"], env, name
        )
        process.wait_for(r'"event": "worker started"', timeout=60)
        self.workers.append(process)
        return process

    def subscribe_alerts(self) -> str:
        sqs, sns = self.client("sqs"), self.client("sns")
        url = sqs.create_queue(QueueName=f"alerts-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(
            TopicArn=self.env["CHURN_ALERTS_TOPIC_ARN"],
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )
        return str(url)

    def drain(self, queue_url: str, attributes: bool = False) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        out = []
        while True:
            got = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return out
            for message in got:
                out.append(message if attributes else json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def queue_depth(self, queue_url: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def wait_until(self, condition: Callable[[], bool], timeout: float = 90, what: str = "condition") -> None:
        wait_until_blocking(
            condition,
            timeout,
            interval=0.3,
            what=what,
            details=lambda: (
                "worker output:\n" + "\n".join(line for w in self.workers for line in w.lines[-15:])
            ),
        )


@pytest.fixture
def stack(moto_process: str, model_process: str, tmp_path: Path) -> Iterator[Stack]:
    config = tmp_path / "e2e.toml"
    config.write_text(E2E_CONFIG)
    env = base_env()
    env.update(
        AWS_ENDPOINT_URL=moto_process,
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=model_process,
        CHURN_TABLE_PREFIX=f"e2e{uuid.uuid4().hex[:8]}-",
        CHURN_SQS_WAIT_SECONDS="1",
        CHURN_SQS_VISIBILITY_TIMEOUT="6",
        CHURN_HEALTH_PORT="0",
        CHURN_SQS_POLLERS="2",
    )
    stack = Stack(env=env, config=config)
    yield stack
    for worker in stack.workers:
        worker.stop()
