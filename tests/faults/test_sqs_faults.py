"""Fault scenarios on SQS: crashes, lost responses, redelivery, duplicates, throttling, concurrency."""

from __future__ import annotations

import json

import pytest

from tests.faults.checker import now_utc
from tests.faults.events import good_events, poison_records
from tests.faults.harness import Scenario
from tests.faults.proxy import Fault

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def kill_at_write(scenario: Scenario, fault: Fault) -> None:
    """Feed, start a worker, SIGKILL it when `fault` (a `drop`: the write applied, its answer
    never heard) fires, then let a second worker redeliver and sweep."""
    now = now_utc()
    scenario.bootstrap()
    scenario.feed(good_events(now, customers=16), poison_records(now)[-2:])
    # The alerts the first worker had claimed but not sent wait until its claims' lease ends, then
    # the second worker's sweep sends them: a lease of 8 s rather than the suite's 30, and a sweep
    # every second, so that wait is seconds, not half a minute. Same path, shorter clock.
    # One batch in flight: with two, the kill can also land in the other batch's window between
    # publishing and marking sent, where a standard topic may see an alert twice (that crash point
    # is crash_between_publish_and_mark_sent's, on a FIFO topic), and this scenario would test two
    # crash points at once, one of them by chance.
    first = scenario.start_worker(
        "first", wait=False, CHURN_ALERT_CLAIM_LEASE_SECONDS="8", CHURN_SQS_POLLERS="1"
    )
    fault.on_hit = scenario.killer(first)
    scenario.servers.proxies.aws.set_faults(fault)
    first.proc.wait(timeout=60)
    scenario.servers.proxies.aws.clear()
    scenario.start_worker("second", CHURN_RESCORE_TICK_SECONDS="1")
    scenario.finish(now)


def test_kill_mid_batch(scenario: Scenario) -> None:
    """SIGKILL while a batch is half written: customers' writes of one item go as conditional
    PartiQL statements, 25 to a BatchExecuteStatement, each applied on its own, and the rolls in
    transactions (features/dynamodb.py), so some customers of the batch are written and others
    not. Killed as the feature store's second statement batch is applied (the first may be the
    only one holding new customers' INSERTs; how records group into batches varies from run to
    run, so the fault names the table, not a statement shape). The next worker redelivers the
    batch; nothing lost, nothing counted twice, one alert each."""
    kill_at_write(
        scenario,
        Fault("dynamodb:BatchExecuteStatement", "drop", skip=1, times=1, body_contains=b'features\\"'),
    )


def test_kill_mid_sent_marks(scenario: Scenario) -> None:
    """SIGKILL as a batch's sent marks are applied (conditional PartiQL UPDATEs on the alert ledger,
    several to a BatchExecuteStatement, worker/alerts/dynamodb_ledger.py `mark_all_sent`): its
    alerts went out and are marked, the batch is not acknowledged. The redelivered batch finds each
    window sent and publishes nothing again; the sweep finds nothing unsent."""
    kill_at_write(
        scenario, Fault("dynamodb:BatchExecuteStatement", "drop", times=1, body_contains=b'alerts\\" SET')
    )


def test_kill_mid_claim_transaction(scenario: Scenario) -> None:
    """SIGKILL as the first transaction of a batch's claims (several alerts claimed together with
    their records, worker/alerts/dynamodb_ledger.py `claim_all`) is applied: every alert of it is
    pending and unpublished. The second worker's sweep takes each over once and sends it; the
    redelivered batch finds the windows open and sends nothing more."""
    kill_at_write(scenario, Fault("dynamodb:TransactWriteItems", "drop", times=1, body_contains=b"#alert#"))


def test_response_lost_after_commit(scenario: Scenario) -> None:
    """A third of the feature-store and ledger writes are applied but their answers never arrive:
    the worker cannot tell a lost answer from a lost write, retries, and must count nothing twice."""
    now = now_utc()
    scenario.bootstrap()
    scenario.servers.proxies.aws.set_faults(
        Fault("dynamodb:TransactWriteItems", "drop", probability=0.3),
        Fault("dynamodb:UpdateItem", "drop", probability=0.3),
        Fault("dynamodb:PutItem", "drop", probability=0.3),
        Fault("dynamodb:BatchExecuteStatement", "drop", probability=0.3),
        Fault("sqs:DeleteMessageBatch", "drop", probability=0.3),
    )
    scenario.feed(good_events(now, customers=16))
    scenario.start_worker()
    scenario.finish(now, timeout=90)


def test_sqs_redelivery(scenario: Scenario) -> None:
    """Deletes fail (connection reset, never applied) until SQS hands the messages out again after
    their visibility timeout: every event is processed at least twice, counted once."""
    now = now_utc()
    scenario.bootstrap()
    scenario.servers.proxies.aws.set_faults(Fault("sqs:DeleteMessageBatch", "reset", times=15))
    scenario.feed(good_events(now, customers=12))
    scenario.start_worker()
    scenario.wait_until(
        lambda: scenario.servers.proxies.aws.injected_total("reset") >= 15,
        timeout=60,
        what="15 failed deletes",
    )
    scenario.finish(now, timeout=90)


def test_producer_duplicates(scenario: Scenario) -> None:
    """Every event sent three times (distinct SQS messages), shuffled, to two workers."""
    now = now_utc()
    scenario.bootstrap()
    scenario.feed(good_events(now, customers=12), copies=3)
    scenario.start_worker("a")
    scenario.start_worker("b")
    scenario.finish(now)


def test_dynamodb_throttling_30_percent(scenario: Scenario) -> None:
    """30 % of DynamoDB calls throttled (transactions as DynamoDB does it: cancelled with reason
    ThrottlingError): slower, never a loss, a double count or a dead-lettered good event."""
    now = now_utc()
    scenario.bootstrap()
    scenario.servers.proxies.aws.set_faults(
        Fault("dynamodb:TransactWriteItems", "txn_throttle", probability=0.15),
        Fault("dynamodb:*", "throttle", probability=0.3),
    )
    scenario.feed(good_events(now, customers=12))
    scenario.start_worker()
    scenario.finish(now, timeout=120)


def test_two_workers_on_one_hot_customer(scenario: Scenario) -> None:
    """Two workers, four pollers, one customer with 200 events: every batch races the other
    worker's for the same profile version."""
    now = now_utc()
    scenario.bootstrap()
    hot = good_events(now, customers=1, per_customer=200, prefix="hot")
    scenario.feed(hot + good_events(now, customers=6, seed=2))
    scenario.start_worker("a")
    scenario.start_worker("b")
    scenario.finish(now, timeout=120)


def test_poison_in_good_batches_sqs(scenario: Scenario) -> None:
    """Issue 10 items 1 and 2 on SQS: deep nesting, a 5,000-digit integer, a timestamp past year
    9999 in UTC, 1e400 and amount = 1e17 in the same receives as good events. The bad ones go to the
    DLQ with error_code at once; the good ones are processed in the same pass."""
    now = now_utc()
    scenario.bootstrap()
    scenario.feed(good_events(now, customers=12), poison_records(now))
    scenario.start_worker()
    scenario.finish(now)


def test_fifo_group_ordering(scenario: Scenario) -> None:
    """A FIFO input queue (group = customer) and a FIFO alert topic, with throttled publishes: one
    customer's alerts arrive in the order they were made, none twice."""
    from tests.faults.checker import alert_order_problems

    now = now_utc()
    scenario.bootstrap(fifo_queue=True, fifo_topic=True)
    events = good_events(now, customers=12)
    scenario.good += events
    scenario.send_sqs([json.dumps(e) for e in events], group_of=lambda i: events[i]["customer_id"])
    scenario.servers.proxies.aws.set_faults(Fault("sns:Publish*", "throttle", probability=0.3))
    scenario.start_worker()

    def ordered(figures: object) -> None:
        problems = alert_order_problems(scenario.alerts)
        assert not problems, problems

    scenario.finish(now, extra=ordered)
