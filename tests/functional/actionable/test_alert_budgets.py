"""Capacity budgets (worker/alerts/budgets.py) through the live pipeline on moto, and the ledger's
rules on both adapters.

What must hold:
- a budget's day never lets out more than `max_per_day` alerts, across two workers claiming at
  once, a redelivery and a restart (a new worker, nothing in memory);
- what does not fit is deferred: not published, opening no window, counted once per customer, type
  and day (a redelivery defers nothing twice), visible in the stats;
- inside a batch the highest expected value goes first;
- a deferred alert is published the next day: its customer is due at the next UTC day's start and
  the sweeper routes it again, without any event, against that day's budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiobotocore.session import get_session

from tests.fakes import Clock
from tests.functional.actionable.alert_workers import (
    DAY,
    T0,
    MakeWorker,
    calls,
    customer,
)
from worker.alerts.budgets import BudgetsConfig, BudgetSlot, next_day_start
from worker.alerts.claims import ClaimStatus
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import (
    AlertLedger,
    DynamoDBAlertLedger,
    MemoryAlertLedger,
    alert_table_name,
    create_alert_table,
)
from worker.alerts.rules import Alert, route_alerts

CALLCENTER = BudgetsConfig({"callcenter": {"types": ["IB_CALL_SPIKE"], "max_per_day": 3}})
WEEK = timedelta(hours=168)


def paid(i: int) -> float:
    """Customer i's 30-day revenue: distinct, so their expected values are ordered."""
    return 10.0 * (i + 1)


@pytest.fixture(params=["dynamodb", "memory"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[AlertLedger]:
    if request.param == "memory":
        yield MemoryAlertLedger()
        return
    request.getfixturevalue("aws_endpoint")
    name = alert_table_name(request.getfixturevalue("unique_prefix"))
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_alert_table(client, name)
        yield DynamoDBAlertLedger(client, name)


def spike(cid: str, value: float, tier: str = "premium") -> Alert:
    features = {"ib_call_count_14d": 2.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts(cid, features, None, AlertsConfig(), T0, customer_tier=tier)
    return alert.model_copy(update={"expected_value": value})


async def test_a_budget_lets_out_its_cap_and_defers_the_rest_once(ledger: AlertLedger) -> None:
    slot = BudgetSlot("callcenter", T0.date().isoformat(), 2)
    got = [await ledger.claim(spike(f"c-{i}", i), T0, WEEK, budget=slot) for i in range(4)]
    assert [c.status for c in got] == [
        ClaimStatus.NEW,
        ClaimStatus.NEW,
        ClaimStatus.DEFERRED,
        ClaimStatus.DEFERRED,
    ]
    # A redelivery: the new windows are open (no unit taken), the deferred ones are deferred again, once.
    again = [
        await ledger.claim(spike(f"c-{i}", i), T0 + timedelta(minutes=1), WEEK, budget=slot) for i in range(4)
    ]
    assert [c.status for c in again][2:] == [ClaimStatus.DEFERRED, ClaimStatus.DEFERRED]
    assert {c.status for c in again[:2]} == {ClaimStatus.IN_FLIGHT}
    stats = await ledger.outcome_stats(T0.date(), T0.date())
    day = stats.budgets[(T0.date().isoformat(), "callcenter")]
    assert (day.sent, day.max_per_day, day.deferred) == (2, 2, {"IB_CALL_SPIKE": 2})
    # The next day has a budget of its own.
    tomorrow = next_day_start(T0) + timedelta(minutes=1)
    later = BudgetSlot("callcenter", tomorrow.date().isoformat(), 2)
    assert (await ledger.claim(spike("c-2", 2), tomorrow, WEEK, budget=later)).status is ClaimStatus.NEW


async def test_claim_all_gives_the_units_to_the_highest_expected_values(ledger: AlertLedger) -> None:
    budgets = BudgetsConfig({"callcenter": {"types": ["IB_CALL_SPIKE"], "max_per_day": 2}})
    alerts = [spike(f"c-{i}", value) for i, value in enumerate([5.0, 50.0, 1.0, 20.0, 7.0])]
    claims = await ledger.claim_all(alerts, T0, AlertsConfig(), budgets)
    assert [c.alert.customer_id for c in claims] == [a.customer_id for a in alerts]  # in order
    new = {c.alert.customer_id for c in claims if c.status is ClaimStatus.NEW}
    assert new == {"c-1", "c-3"}
    tags = {c.alert.customer_id: c.alert.budget for c in claims}
    assert tags["c-1"] is not None and tags["c-1"].name == "callcenter" and tags["c-1"].expected_value == 50.0


async def test_tiers_and_types_outside_a_budget_are_not_counted(ledger: AlertLedger) -> None:
    budgets = BudgetsConfig({"vip": {"types": ["IB_CALL_SPIKE"], "tiers": ["premium"], "max_per_day": 0}})
    claims = await ledger.claim_all(
        [spike("c-1", 1.0, "premium"), spike("c-2", 1.0, "budget")], T0, AlertsConfig(), budgets
    )
    assert [c.status for c in claims] == [ClaimStatus.DEFERRED, ClaimStatus.NEW]
    assert claims[1].alert.budget is None


async def test_two_workers_a_redelivery_and_a_restart_never_pass_the_budget_and_the_rest_goes_out_tomorrow(
    make_worker: MakeWorker,
) -> None:
    clock = Clock(T0)
    first, second = await make_worker(clock, budgets=CALLCENTER), await make_worker(clock, budgets=CALLCENTER)
    history = [r for i in range(10) for r in customer(f"c-{i}", T0 - timedelta(hours=2), paid(i))]
    await first.pipeline.process(history)
    clock.advance(timedelta(hours=1))
    batch_a = [r for i in range(0, 4) for r in calls(f"c-{i}", clock(), 2)]
    batch_b = [r for i in range(4, 8) for r in calls(f"c-{i}", clock(), 2)]
    # Two workers at once, on their own clients.
    await asyncio.gather(first.pipeline.process(batch_a), second.pipeline.process(batch_b))
    # A redelivery of both batches, and a restart: a third worker, nothing in memory, more customers.
    await first.pipeline.process(batch_b)
    await second.pipeline.process(batch_a)
    restarted = await make_worker(clock, budgets=CALLCENTER)
    await restarted.pipeline.process([r for i in range(8, 10) for r in calls(f"c-{i}", clock(), 2)])

    sent = [b for w in (first, second, restarted) for b in w.bodies if b["type"] == "IB_CALL_SPIKE"]
    assert len(sent) == 3, [b["customer_id"] for b in sent]
    assert len({b["alert_id"] for b in sent}) == 3
    for body in sent:
        assert body["budget"]["name"] == "callcenter" and body["budget"]["day"] == "2026-11-27"
        assert body["budget"]["max_per_day"] == 3
    stats = await restarted.ledger.outcome_stats(T0.date(), T0.date())
    day = stats.budgets[("2026-11-27", "callcenter")]
    assert day.sent == 3 and day.deferred == {"IB_CALL_SPIKE": 7}
    deferred = await restarted.ledger.deferred_alerts(T0.date(), T0.date(), 100)
    assert len(deferred) == 7
    assert {b["customer_id"] for b in deferred} | {b["customer_id"] for b in sent} == {
        f"c-{i}" for i in range(10)
    }
    # Each batch gave its units to its highest values: no deferred customer of a batch outranks a sent one of it.
    for batch in (range(0, 4), range(4, 8)):
        mine = {f"c-{i}" for i in batch}
        won = [paid(int(b["customer_id"][2:])) for b in sent if b["customer_id"] in mine]
        lost = [paid(int(b["customer_id"][2:])) for b in deferred if b["customer_id"] in mine]
        if won and lost and len(won) + len(lost) == len(mine):
            assert min(won) > max(lost)

    # The next day: no event at all, the sweeper routes the deferred customers at the day's start.
    clock.now = next_day_start(T0) + timedelta(seconds=1)
    before = len(restarted.bodies)
    while await restarted.rescorer.step():
        pass
    tomorrow = [b for b in restarted.bodies[before:] if b["type"] == "IB_CALL_SPIKE"]
    assert len(tomorrow) == 3
    assert {b["trigger"] for b in tomorrow} == {"rescore"}
    assert {b["budget"]["day"] for b in tomorrow} == {"2026-11-28"}
    deferred_values = sorted((b["budget"]["expected_value"], b["customer_id"]) for b in deferred)
    assert {b["customer_id"] for b in tomorrow} == {cid for _, cid in deferred_values[-3:]}  # highest first
    again = await restarted.ledger.outcome_stats(T0.date(), T0.date() + DAY)
    assert again.budgets[("2026-11-28", "callcenter")].sent == 3
    assert again.budgets[("2026-11-28", "callcenter")].deferred == {"IB_CALL_SPIKE": 4}
