"""The operator's path, as processes: the data-plane stack in moto's CloudFormation, its outputs
turned into settings by `python infra/stack_env.py STACK`, and `churn-worker run` on those alone
(no bootstrap): an event in, an alert out."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.functional.test_infra_data_plane import spike_events

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_worker_runs_on_the_settings_stack_env_prints(stack: Stack) -> None:
    prefix = stack.env["CHURN_TABLE_PREFIX"]
    cfn = stack.client("cloudformation")
    cfn.create_stack(
        StackName=f"{prefix}data",
        TemplateBody=(ROOT / "infra" / "data-plane.yaml").read_text(),
        Parameters=[{"ParameterKey": "TablePrefix", "ParameterValue": prefix}],
    )
    cfn.get_waiter("stack_create_complete").wait(StackName=f"{prefix}data", WaiterConfig={"Delay": 1})

    printed = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stack_env.py"), f"{prefix}data"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    settings = dict(line.split("=", 1) for line in printed.stdout.splitlines())
    assert set(settings) == {
        "CHURN_SOURCE",
        "CHURN_SQS_QUEUE_URL",
        "CHURN_DLQ_URL",
        "CHURN_ALERTS_TOPIC_ARN",
        "CHURN_TABLE_PREFIX",
        "CHURN_ARCHIVE_S3_URI",
    }
    stack.env.update(settings)

    alerts = stack.subscribe_alerts()
    stack.start_worker()
    sqs = stack.client("sqs")
    for event in spike_events("c-ops", datetime.now(UTC)):
        sqs.send_message(QueueUrl=settings["CHURN_SQS_QUEUE_URL"], MessageBody=json.dumps(event))
    received: list[dict[str, object]] = []
    stack.wait_until(
        lambda: bool(received.extend(stack.drain(alerts)) or received),
        timeout=90,
        what="the IB_CALL_SPIKE alert",
    )
    assert [(a["type"], a["customer_id"]) for a in received] == [("IB_CALL_SPIKE", "c-ops")]


def test_stack_env_names_a_missing_stack(stack: Stack) -> None:
    printed = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "stack_env.py"), "no-such-stack"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 1
    assert printed.stderr.startswith("stack_env.py: cannot read stack no-such-stack:")
    assert "Traceback" not in printed.stderr
