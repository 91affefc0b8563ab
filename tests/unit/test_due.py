"""The due index's rules, on its in-process twin: when the event path sets a due time, and how
claims, completions, releases and marks move it (the DynamoDB adapter: tests/functional/test_rescore.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from features.due import DUE_SHARDS, DueStats, MemoryDueIndex, lag_seconds, next_due_us
from features.events import validate_event
from features.state import CustomerState, apply_event, to_us
from plumbing.tables import shard_of

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
DAY = timedelta(days=1)
RETENTION = timedelta(days=35)


def state(*kinds: str, due_us: int | None = None) -> CustomerState:
    customer = CustomerState("c-1")
    for n, kind in enumerate(kinds):
        fields = {"tier": "budget"} if kind == "customer_signed_up" else {}
        apply_event(
            customer,
            validate_event(
                {
                    "event_id": f"e{n}",
                    "customer_id": "c-1",
                    "type": kind,
                    "occurred_at": (NOW - timedelta(hours=10 - n)).isoformat(),
                    **fields,
                }
            ),
        )
    customer.profile.due_us = due_us
    return customer


def test_the_event_path_keeps_a_due_time_half_an_interval_to_an_interval_away() -> None:
    now = to_us(NOW)
    assert (
        next_due_us(state("customer_signed_up", "login"), now, DAY, RETENTION) == now + to_us(NOW + DAY) - now
    )
    kept = now + to_us(NOW + timedelta(hours=13)) - now
    assert next_due_us(state("login", due_us=kept), now, DAY, RETENTION) == kept  # no index write
    soon = now + 3_600_000_000
    assert next_due_us(state("login", due_us=soon), now, DAY, RETENTION) == to_us(NOW + DAY)
    assert next_due_us(state("login", due_us=now - 1), now, DAY, RETENTION) == to_us(NOW + DAY)


def test_churned_customers_leave_the_index_and_a_same_instant_sign_up_brings_them_back() -> None:
    assert next_due_us(state("customer_signed_up", "customer_churned"), to_us(NOW), DAY, RETENTION) is None
    both = CustomerState("c-1")
    for n, kind in enumerate(("customer_churned", "customer_signed_up")):
        fields = {"tier": "budget"} if kind == "customer_signed_up" else {}
        apply_event(
            both,
            validate_event(
                {
                    "event_id": f"x{n}",
                    "customer_id": "c-1",
                    "type": kind,
                    "occurred_at": "2026-11-27T10:00:00Z",
                    **fields,
                }
            ),
        )
    assert next_due_us(both, to_us(NOW), DAY, RETENTION) is not None


async def test_claims_complete_release_and_mark_like_the_dynamodb_index() -> None:
    index = MemoryDueIndex(page_items=3)
    for n in range(10):
        index.put(f"c-{n}", to_us(NOW) - n)
        index.put(f"c-{n}", to_us(NOW) - n)  # the same Put twice (a redelivery): one entry
    assert await index.stats(NOW) == DueStats(10, to_us(NOW) - 9)
    claims, more = await index.claim_due(NOW, 4, timedelta(minutes=2))
    assert len(claims) == 4 and more
    assert (await index.stats(NOW)).due == 6  # claimed ones are leased, not due
    assert await index.complete(claims[0], to_us(NOW + DAY)) is True
    assert await index.complete(claims[0], to_us(NOW + DAY)) is False  # no longer ours
    await index.release(claims[1])  # not scored: due again when it was
    await index.complete(claims[2], None)  # not active: out of the index
    assert claims[2].customer_id not in index.entries
    rest, more = await index.claim_due(NOW, 100, timedelta(minutes=2))
    assert len(rest) == 7 and not more  # 6 never claimed + the released one; claims[3] still leased
    later, _ = await index.claim_due(NOW + timedelta(minutes=3), 100, timedelta(minutes=2))
    assert {c.customer_id for c in later} == {claims[3].customer_id} | {c.customer_id for c in rest}
    await index.mark_due(["c-0", "c-unknown"], NOW + timedelta(minutes=4))  # c-0 is due tomorrow: now
    assert index.entries["c-0"][0] == to_us(NOW + timedelta(minutes=4)) and "c-unknown" not in index.entries


def test_shards_are_stable_and_spread() -> None:
    # A customer's shard is part of the stored index: the function must never change.
    assert (shard_of("c-123", DUE_SHARDS), shard_of("customer-42", DUE_SHARDS), shard_of("c-123", 4)) == (
        "02",
        "03",
        "02",
    )
    spread = {shard_of(f"c-{n}", DUE_SHARDS) for n in range(1000)}
    assert spread == {f"{n:02d}" for n in range(DUE_SHARDS)}
    assert lag_seconds(DueStats(1, to_us(NOW)), NOW + timedelta(seconds=90)) == 90
    assert lag_seconds(DueStats(0, None), NOW) == 0
