"""Churn stamps (`worker/alerts/dynamodb_ledger.py`, CHURN STAMPS), on moto: a churn and a return are
written onto the customer's claim items in the transaction that records them, so a claim refuses a
churned customer by its own condition and its transaction holds no check of the `#churned` item.

Invariants:
- after a churn is recorded, no claim of that customer opens a window until a return at or after
  it is recorded, whatever alert type, whether the claim goes in a batch or alone, and whether an
  item of that type existed before;
- a redelivered churn (not newer than the recorded one) changes nothing after a return;
- on a table written before stamps (no format item), claims keep the `#churned` check until
  `churn-worker alerts stamp-churns` stamped every recorded churn and wrote the format item; it
  copies each churn (and return) as the `#churned` item holds it, never over a newer one. A table
  the stack made just before the worker started is marked stamped at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import get_session

from cli.worker import main
from worker.alerts.config import AlertsConfig
from worker.alerts.ledger import ClaimStatus, DynamoDBAlertLedger, alert_table_name, create_alert_table
from worker.alerts.rules import Alert, AlertType, route_alerts

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
WEEK = timedelta(hours=168)
CONFIG = AlertsConfig()
FORMAT = {"customer_id": {"S": "#ledger"}, "alert_type": {"S": "format"}}


def spike(customer: str, at: datetime = T0) -> Alert:
    features = {"ib_call_count_14d": 3.0, "session_frequency_30d": 0.0, "has_first_session": 1.0}
    (alert,) = route_alerts(customer, features, None, CONFIG, at, customer_tier="premium")
    return alert


class Recording:
    """The DynamoDB client, keeping the items of every TransactWriteItems sent."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.transactions: list[list[dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **kwargs: Any) -> Any:
        self.transactions.append(list(kwargs["TransactItems"]))
        return await self._client.transact_write_items(**kwargs)

    def checks(self) -> int:
        return sum("ConditionCheck" in item for items in self.transactions for item in items)


@pytest.fixture
async def table(aws_endpoint: str, unique_prefix: str) -> AsyncIterator[tuple[Recording, str]]:
    name = alert_table_name(unique_prefix)
    async with get_session().create_client("dynamodb", region_name="us-east-1") as client:
        await create_alert_table(client, name)
        yield Recording(client), name


async def item(table: tuple[Recording, str], customer: str, sort_key: str) -> dict[str, Any] | None:
    client, name = table
    response = await client.get_item(
        TableName=name,
        Key={"customer_id": {"S": customer}, "alert_type": {"S": sort_key}},
        ConsistentRead=True,
    )
    found: dict[str, Any] | None = response.get("Item")
    return found


async def test_a_churn_refuses_every_later_claim_without_a_check(table: tuple[Recording, str]) -> None:
    client, name = table
    ledger = DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]
    sent = await ledger.claim(spike("c-1"), T0, WEEK)
    assert await ledger.mark_sent(sent.alert.published_at(T0))
    await ledger.record_churn("c-1", T0 + timedelta(hours=1))
    # One transaction: the `#churned` item and a stamp on each alert type's claim item.
    assert len(client.transactions[-1]) == 1 + len(AlertType)
    claimed = await item(table, "c-1", AlertType.IB_CALL_SPIKE.value)
    assert claimed is not None and claimed["alert_id"]["S"] == sent.alert.alert_id  # the claim kept
    assert "expires_at" not in claimed  # as long-lived as the `#churned` item
    placeholder = await item(table, "c-1", AlertType.HIGH_CHURN_RISK.value)
    assert placeholder is not None and "alert_id" not in placeholder

    client.transactions.clear()
    later = T0 + 2 * WEEK  # past the cooldown: only the churn can refuse
    other = spike("c-1", later).model_copy(update={"alert_type": AlertType.SESSION_VELOCITY_DROP})
    claims = await ledger.claim_all([spike("c-1", later), other, spike("c-2", later)], later, CONFIG)
    assert [c.status for c in claims] == [ClaimStatus.CHURNED, ClaimStatus.CHURNED, ClaimStatus.NEW]
    assert (await ledger.claim(spike("c-1", later), later, WEEK)).status is ClaimStatus.CHURNED
    assert client.checks() == 0

    # A return at or after the churn opens claims again; the churn redelivered changes nothing.
    await ledger.record_return("c-1", T0 + timedelta(hours=1), T0 + timedelta(days=3))
    await ledger.record_churn("c-1", T0 + timedelta(hours=1))
    assert (await ledger.claim(spike("c-1", later), later, WEEK)).status is ClaimStatus.NEW
    # A newer churn refuses them again, the type just claimed (the claim dropped its stamps) included.
    await ledger.record_churn("c-1", later + timedelta(hours=1))
    again = later + timedelta(hours=2)
    assert (await ledger.claim(spike("c-1", again), again + WEEK, WEEK)).status is ClaimStatus.CHURNED
    assert client.checks() == 0


async def test_a_churn_known_recorded_is_not_sent_again(table: tuple[Recording, str]) -> None:
    """A churned customer is recorded at each of its scorings (a returned one at each alert): after
    the first, this process sends nothing for that churn or an older one (DynamoDB would refuse it);
    a newer one goes out."""
    client, name = table
    ledger = DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]
    await ledger.record_churn("c-1", T0)
    await ledger.record_churn("c-1", T0)
    await ledger.record_churn("c-1", T0 - timedelta(days=1))
    assert len(client.transactions) == 1
    await ledger.record_churn("c-1", T0 + timedelta(days=1))
    assert len(client.transactions) == 2
    # Another process learns it from DynamoDB's refusal, once.
    other = DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]
    await other.record_churn("c-1", T0)
    await other.record_churn("c-1", T0)
    assert len(client.transactions) == 3
    # A return likewise, once; and not at all when a newer churn is known.
    back = T0 + timedelta(days=2)
    await ledger.record_return("c-1", T0 + timedelta(days=1), back)
    await ledger.record_return("c-1", T0 + timedelta(days=1), back)
    await ledger.record_return("c-1", T0 - timedelta(days=5), back)
    assert len(client.transactions) == 4


async def backdated(table: tuple[Recording, str]) -> None:
    """The table as an earlier version left it: no format item, a churn and a churn with a return
    recorded without stamps."""
    client, name = table
    await client.delete_item(TableName=name, Key=FORMAT)
    for customer, churned, returned in (("c-old", T0, None), ("c-back", T0, T0 + timedelta(days=1))):
        marker: dict[str, Any] = {
            "customer_id": {"S": customer},
            "alert_type": {"S": "#churned"},
            "churned_at_us": {"N": str(_us(churned))},
        }
        if returned is not None:
            marker["returned_at_us"] = {"N": str(_us(returned))}
        await client.put_item(TableName=name, Item=marker)


def started_long_after_the_table(ledger: DynamoDBAlertLedger) -> DynamoDBAlertLedger:
    ledger._started_wall = datetime.now(UTC) + timedelta(hours=1)
    return ledger


async def test_a_table_written_before_stamps_keeps_the_check_until_stamp_churns_ran(
    table: tuple[Recording, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, name = table
    await backdated(table)
    ledger = started_long_after_the_table(DynamoDBAlertLedger(client, name))  # type: ignore[arg-type]
    later = T0 + timedelta(days=2)
    assert (await ledger.claim(spike("c-old", later), later, WEEK)).status is ClaimStatus.CHURNED
    assert client.checks() == 1  # refused by the `#churned` check
    await ledger.upkeep(later)  # an older table: the worker cannot know what it holds
    assert not ledger.stamps_trusted and await item(table, "#ledger", "format") is None
    assert await item(table, "c-old", AlertType.HIGH_CHURN_RISK.value) is None

    # The operator's command (a Scan with their credentials), as documented.
    monkeypatch.setenv("CHURN_TABLE_PREFIX", name.removesuffix("alerts"))
    assert await asyncio.to_thread(main, ["alerts", "stamp-churns"]) == 0
    assert "2 churns stamped" in capsys.readouterr().out
    assert await item(table, "#ledger", "format") is not None
    stamp = await item(table, "c-old", AlertType.HIGH_CHURN_RISK.value)
    assert stamp is not None and stamp["churned_at_us"]["N"] == str(_us(T0))

    ledger._next_look = 0.0  # a minute later
    await ledger.upkeep(later)
    assert ledger.stamps_trusted
    client.transactions.clear()
    claims = await ledger.claim_all([spike("c-old", later), spike("c-back", later)], later, CONFIG)
    assert [c.status for c in claims] == [ClaimStatus.CHURNED, ClaimStatus.NEW]
    assert client.checks() == 0


async def test_a_table_the_stack_just_made_is_stamped_at_once(table: tuple[Recording, str]) -> None:
    """A table the template created (no format item) shortly before the worker started: no earlier
    version wrote to it, so the first claim (or sweeper step) writes the format item."""
    client, name = table
    await client.delete_item(TableName=name, Key=FORMAT)
    ledger = DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]
    claims = await ledger.claim_all([spike("c-1"), spike("c-2")], T0, CONFIG)
    assert [c.status for c in claims] == [ClaimStatus.NEW] * 2 and client.checks() == 0
    assert ledger.stamps_trusted and await item(table, "#ledger", "format") is not None
    swept = DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]
    await client.delete_item(TableName=name, Key=FORMAT)
    await swept.upkeep(T0)
    assert swept.stamps_trusted and await item(table, "#ledger", "format") is not None
    assert await DynamoDBAlertLedger(client, name)._needs_churn_check() is False  # type: ignore[arg-type]


async def test_a_churn_recorded_during_the_backfill_stamps_itself(table: tuple[Recording, str]) -> None:
    """The backfill read the `#churned` item, then a newer churn was recorded before its stamp
    went in: the stamp's condition (the item unchanged) refuses it, the newer stamps stay."""
    client, name = table
    await backdated(table)
    ledger = DynamoDBAlertLedger(client, name)  # type: ignore[arg-type]
    newer = T0 + timedelta(days=5)
    await ledger.record_churn("c-back", newer)
    stale = {
        "customer_id": {"S": "c-back"},
        "churned_at_us": {"N": str(_us(T0))},
        "returned_at_us": {"N": str(_us(T0 + timedelta(days=1)))},
    }
    await ledger._stamp_recorded(stale)
    stamp = await item(table, "c-back", AlertType.IB_CALL_SPIKE.value)
    assert stamp is not None and stamp["churned_at_us"]["N"] == str(_us(newer))
    assert "returned_at_us" not in stamp


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
