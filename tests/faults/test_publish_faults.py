"""Fault scenario: SNS hangs longer than the claim lease.

One PublishBatch answers after 12 s, three times the 4 s claim lease (a hung request: botocore waits
up to its 30 s read timeout on each attempt, then the publisher retries). The worker holds its
claims' leases while it waits (`worker.alerts.lease_guard`), so the outbox sweeper, which runs
every ~1 s here and takes over any claim whose lease ended unsent, never takes them over: each
alert_id is published once, though nothing crashed and the topic is a standard one."""

from __future__ import annotations

import pytest

from tests.faults.checker import Figures, now_utc
from tests.faults.events import good_events
from tests.faults.harness import Scenario
from tests.faults.proxy import Fault

pytestmark = [pytest.mark.slow, pytest.mark.faults]

HANG_SECONDS = 12
LEASE_SECONDS = 4


def test_sns_hangs_longer_than_the_claim_lease(scenario: Scenario) -> None:
    now = now_utc()
    scenario.bootstrap()
    scenario.feed(good_events(now, customers=6))
    hang = Fault("sns:PublishBatch", "latency", delay=HANG_SECONDS, times=1)
    scenario.servers.proxies.aws.set_faults(hang)
    # A short re-scoring interval keeps the sweeper's pause under 2 s (it is a tenth of the interval).
    scenario.start_worker(
        CHURN_ALERT_CLAIM_LEASE_SECONDS=str(LEASE_SECONDS),
        CHURN_RESCORE_TICK_SECONDS="1",
        CHURN_RESCORE_INTERVAL_HOURS="0.005",
        CHURN_SQS_POLLERS="1",
    )

    def the_hang_happened(figures: Figures) -> None:
        assert hang.fired == 1, "the slow publish never happened: the scenario proved nothing"

    scenario.finish(now, settle=LEASE_SECONDS + 2, timeout=90, extra=the_hang_happened)
