"""Fault scenarios on Kinesis: checkpoint replay, lease steals, a reshard, unparseable and poison
records, 56-digit sequence numbers, throttled DynamoDB, shutdown within ECS's stop timeout, and a
missing stream."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.faults.awsemu import SEQUENCE_BASE
from tests.faults.checker import Figures, now_utc
from tests.faults.events import good_events, poison_records, unparseable_kinesis_records
from tests.faults.harness import Scenario
from tests.faults.proxy import Fault

pytestmark = [pytest.mark.slow, pytest.mark.faults]

CHECKPOINT_WRITE = b"#checkpoint"  # the lease table UpdateItem that moves a checkpoint


def test_kinesis_checkpoint_replay(scenario: Scenario) -> None:
    """Records processed, then the worker dies as it writes the checkpoint (the write never lands):
    the next worker replays them from the previous checkpoint; nothing is counted twice."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=2)
    scenario.feed(good_events(now, customers=16))
    first = scenario.start_worker("first", wait=False)
    scenario.servers.proxies.aws.set_faults(
        Fault(
            "dynamodb:UpdateItem",
            "reset",
            skip=1,
            times=1,
            body_contains=CHECKPOINT_WRITE,
            on_hit=scenario.killer(first),
        )
    )
    first.proc.wait(timeout=60)
    scenario.servers.proxies.aws.clear()
    scenario.start_worker("second")
    scenario.finish(now)


def test_lease_steal(scenario: Scenario) -> None:
    """A second worker joins a four-shard stream mid-flight and steals two leases while the first
    has deliveries in flight (a slow endpoint): the old owner's checkpoints are fenced off."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=4)
    scenario.servers.proxies.model.set_faults(Fault("sagemaker:InvokeEndpoint", "latency", delay=0.4))
    first = scenario.start_worker("first")
    scenario.feed(good_events(now, customers=20))
    first.wait_for(r'"event": "alert published"', timeout=60)
    scenario.start_worker("second")
    scenario.wait_until(
        lambda: len({i.get("owner", {}).get("S") for i in scenario.leases().values()}) == 2,
        what="the leases shared by both workers",
    )
    scenario.feed(good_events(now, customers=20, seed=9, prefix="late"))
    scenario.finish(now, timeout=90)


def test_reshard(scenario: Scenario) -> None:
    """The stream's only shard is split while the worker reads it; new events go to the children,
    which are read only once the parent is read to its end."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=1)
    scenario.start_worker()
    scenario.feed(good_events(now, customers=16))
    kinesis, stream = scenario.client("kinesis"), scenario.env["CHURN_KINESIS_STREAM"]
    (parent,) = kinesis.list_shards(StreamName=stream)["Shards"]
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(2**127))
    scenario.feed(good_events(now, customers=16, seed=5, prefix="after"))
    assert len(scenario.puts) == 3  # the parent, and both children got records

    def parent_finished(figures: Figures) -> None:
        assert scenario.leases()[parent["ShardId"]]["checkpoint"]["S"] == "SHARD_END"

    scenario.finish(now, timeout=90, extra=parent_finished)


def test_unparseable_kinesis_records_and_56_digit_sequence_numbers(scenario: Scenario) -> None:
    """Binary garbage, a KPL aggregate with a wrong digest and base64 text between good records on
    one shard: each dead-lettered with error_code, the checkpoint past them all. Sequence numbers
    are 56 digits (as on AWS; the proxy refuses any DynamoDB Number over 38 digits): the checkpoint
    and the DLQ's source_id carry them exactly."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=1)
    scenario.feed(good_events(now, customers=10), unparseable_kinesis_records())
    scenario.start_worker()

    def exact_sequences(figures: Figures) -> None:
        ((shard, last),) = scenario.puts.items()
        assert len(last) == 56 and int(last) > SEQUENCE_BASE
        assert scenario.leases()[shard]["checkpoint"]["S"] == last
        source_ids = [m["MessageAttributes"]["source_id"]["StringValue"] for m in scenario.dead]
        assert all(len(sid.split(":")[1].split("/")[0]) == 56 for sid in source_ids), source_ids

    scenario.finish(now, extra=exact_sequences)


def test_poison_in_good_batches_kinesis(scenario: Scenario) -> None:
    """Issue 10 items 1 and 2 on a one-shard stream: the poison shares GetRecords calls with good
    events; the shard never stops."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=1)
    scenario.feed(good_events(now, customers=12), poison_records(now))
    scenario.start_worker()
    scenario.finish(now)


def test_kinesis_dynamodb_throttling_30_percent(scenario: Scenario) -> None:
    """30 % of DynamoDB calls throttled, the lease table's included: throttling is back-off, not a
    lost lease or a version conflict."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=2)
    scenario.servers.proxies.aws.set_faults(
        Fault("dynamodb:TransactWriteItems", "txn_throttle", probability=0.15),
        Fault("dynamodb:*", "throttle", probability=0.3),
    )
    scenario.feed(good_events(now, customers=10))
    worker = scenario.start_worker()

    def no_lease_lost(figures: Figures) -> None:
        dropped = [line for line in worker.lines if "dropping shard" in line or "not renewed in time" in line]
        assert not dropped, dropped

    scenario.finish(now, timeout=120, extra=no_lease_lost)


def test_kinesis_shutdown_within_the_ecs_stop_timeout(scenario: Scenario) -> None:
    """SIGTERM while a batch waits on a slow endpoint: the worker must be gone, leases released,
    within CHURN_SHUTDOWN_GRACE_SECONDS (here 5 s), before the SIGKILL ECS sends at its stop
    timeout (emulated at grace + 2 s). A second worker then takes the shard at once and finishes."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=1)
    scenario.feed(good_events(now, customers=8))
    scenario.servers.proxies.model.set_faults(Fault("sagemaker:InvokeEndpoint", "latency", delay=30, times=1))
    first = scenario.start_worker("first")
    scenario.wait_until(
        lambda: scenario.servers.proxies.model.injected_total("latency") == 1, what="a slow batch"
    )
    first.signal(signal.SIGTERM)
    grace = float(scenario.env["CHURN_SHUTDOWN_GRACE_SECONDS"])
    try:
        code = first.proc.wait(timeout=grace + 2)
    except subprocess.TimeoutExpired:
        first.proc.kill()  # what ECS does at its stop timeout
        first.proc.wait()
        code = -9
    scenario.note = f"first worker exit {code}"
    owners = [i.get("owner", {}).get("S") for i in scenario.leases().values()]
    scenario.start_worker("second")

    def stopped_in_time(figures: Figures) -> None:
        assert code == 0, f"SIGKILLed after {grace + 2} s: the shutdown outlasted its grace"
        assert owners == [None], f"leases not released at shutdown: {owners}"

    scenario.finish(now, timeout=90, extra=stopped_in_time)


def test_fatal_source_error_stops_the_worker(scenario: Scenario) -> None:
    """A stream that does not exist, then access denied on Kinesis: each time exit code 1 and one
    line naming what failed, not a worker that runs and does nothing."""
    scenario.source = "kinesis"
    scenario.bootstrap(shards=1)
    stream = scenario.env["CHURN_KINESIS_STREAM"]
    denied = {
        "__type": "AccessDeniedException",
        "message": "User: arn:aws:sts::123456789012:assumed-role/churn "
        "is not authorized to perform: kinesis:ListShards",
    }
    cases = [
        ("no-such-stream", f"{scenario.prefix}no-such-stream", None),
        ("AccessDeniedException", stream, Fault("kinesis:*", "respond", status=400, body=denied)),
    ]
    notes = []
    for expected, name, fault in cases:
        scenario.servers.proxies.aws.set_faults(*([fault] if fault else []))
        worker = scenario.start_worker(expected, wait=False, CHURN_KINESIS_STREAM=name)
        started = time.monotonic()
        code = worker.proc.wait(timeout=60)
        errors = [line for line in worker.lines if line.startswith("churn-worker: ")]
        notes.append(f"{expected}: exit {code} after {time.monotonic() - started:.0f} s")
        assert code == 1, "\n".join(worker.lines[-20:])
        assert len(errors) == 1 and expected in errors[0], errors
        assert not any("Traceback" in line for line in worker.lines)
    scenario.servers.proxies.aws.clear()
    scenario.note = "; ".join(notes)
    scenario.finish(now_utc(), workers_alive=False)


def test_sigterm_mid_batch_does_not_lose_a_record(scenario: Scenario) -> None:
    """A rolling deploy: SIGTERM to each worker in turn while events flow."""
    now = now_utc()
    scenario.source = "kinesis"
    scenario.bootstrap(shards=2)
    first = scenario.start_worker("first")
    scenario.feed(good_events(now, customers=12))
    first.wait_for(r'"event": "alert published"', timeout=60)
    first.signal(signal.SIGTERM)
    scenario.start_worker("second")
    scenario.feed(good_events(now, customers=12, seed=4, prefix="roll"))
    scenario.finish(now)
