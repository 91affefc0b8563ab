"""The pure parts of the Kinesis source: sequence order, parent/child order, balancing decisions,
start positions and what a settlement acknowledges. No network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.ports import Record, Settlement
from worker.sources.kinesis import iterator_arguments, unsettled
from worker.sources.kinesis_batches import acknowledged_prefix, split_by_key
from worker.sources.leases import (
    SHARD_END,
    Lease,
    Observations,
    Plan,
    is_after,
    live_workers,
    parents_drained,
    plan_round,
    processable,
    sequence_key,
)

NOW = 1_800_000_000.0
# Real Kinesis sequence numbers: 56 digits, beyond a float's 15-17 and a DynamoDB Number's 38.
SEQ_A = "49590338271490256608559692538361571095921575989136588898"
SEQ_B = "49590338271490256608559692538361571095921575989136588899"


def lease(sid: str, owner: str | None = None, expires: float = NOW + 5, **kwargs: object) -> Lease:
    return Lease(sid, owner=owner, expires_at=expires if owner else 0.0, **kwargs)  # type: ignore[arg-type]


def table(*leases: Lease) -> dict[str, Lease]:
    return {item.shard_id: item for item in leases}


def expired_at_now(leases: dict[str, Lease]) -> set[str]:
    """The planning tests' shorthand for what `Observations` judges: free, or `expires` passed."""
    return {sid for sid, item in leases.items() if item.owner is None or item.expires_at <= NOW}


def planned(me: str, leases: dict[str, Lease], beating: dict[str, float], held: list[str]) -> Plan:
    alive = {worker for worker, until in beating.items() if until > NOW}
    return plan_round(me, leases, alive, held, expired_at_now(leases))


# --- sequence numbers ---------------------------------------------------------------------------


def test_56_digit_sequences_differing_in_the_last_digit_are_ordered() -> None:
    assert float(SEQ_A) == float(SEQ_B)  # why floats are forbidden
    assert is_after(SEQ_B, SEQ_A)
    assert not is_after(SEQ_A, SEQ_B)
    assert not is_after(SEQ_A, SEQ_A)


def test_shorter_sequence_numbers_come_first_even_when_they_sort_later_as_text() -> None:
    assert "9" > "10"
    assert is_after("10", "9")
    assert sorted(["100", "9", SEQ_A, "10"], key=sequence_key) == ["9", "10", "100", SEQ_A]


def test_anything_is_after_no_checkpoint_and_garbage_is_rejected() -> None:
    assert is_after("1", None)
    with pytest.raises(ValueError, match="not a Kinesis sequence number"):
        sequence_key("1.5e55")


# --- parents before children ----------------------------------------------------------------------


def test_split_child_waits_until_its_parent_reached_shard_end() -> None:
    parent = lease("shardId-0", checkpoint=SEQ_A)
    child = lease("shardId-1", parents=("shardId-0",))
    assert not parents_drained(child, table(parent, child))
    assert set(processable(table(parent, child))) == {"shardId-0"}
    done = Lease("shardId-0", checkpoint=SHARD_END)
    assert parents_drained(child, table(done, child))
    assert set(processable(table(done, child))) == {"shardId-1"}  # the finished parent needs no reader


def test_merge_child_waits_for_both_parents() -> None:
    child = lease("shardId-2", parents=("shardId-0", "shardId-1"))
    one_done = table(Lease("shardId-0", checkpoint=SHARD_END), Lease("shardId-1", checkpoint=SEQ_A), child)
    assert not parents_drained(child, one_done)
    both = table(Lease("shardId-0", checkpoint=SHARD_END), Lease("shardId-1", checkpoint=SHARD_END), child)
    assert parents_drained(child, both)


def test_parent_past_retention_without_a_lease_does_not_block_its_child() -> None:
    child = lease("shardId-5", parents=("shardId-gone",))
    assert parents_drained(child, table(child))


# --- balancing -------------------------------------------------------------------------------------


def four_shards(*owners: str | None) -> dict[str, Lease]:
    return table(*(lease(f"shardId-{i}", owner) for i, owner in enumerate(owners)))


def test_first_worker_takes_every_free_shard() -> None:
    plan = planned("a", four_shards(None, None, None, None), {}, held=[])
    assert plan.target == 4
    assert [item.shard_id for item in plan.take] == [f"shardId-{i}" for i in range(4)]
    assert plan.steal is None


def test_joining_worker_steals_one_lease_per_round_from_the_most_loaded() -> None:
    leases = four_shards("a", "a", "a", "a")
    plan = planned("b", leases, {"b": NOW + 5}, held=[])
    assert plan.target == 2 and not plan.take
    assert plan.steal is not None and plan.steal.owner == "a"
    # After one steal: a=3, b=1. b is below target and a holds two more: one more steal.
    leases = four_shards("a", "a", "a", "b")
    plan = planned("b", leases, {}, held=["shardId-3"])
    assert plan.steal is not None and plan.steal.owner == "a"
    # Balanced 2/2: nothing moves, for either worker.
    leases = four_shards("a", "a", "b", "b")
    assert planned("b", leases, {}, held=["shardId-2", "shardId-3"]) == planned(
        "a", leases, {}, held=["shardId-0", "shardId-1"]
    )
    assert planned("b", leases, {}, held=["shardId-2", "shardId-3"]).steal is None


def test_steal_takes_from_the_most_loaded_worker_only() -> None:
    leases = table(*(lease(f"shardId-{i}", "a" if i < 2 else "c") for i in range(6)))  # a=2, c=4
    plan = planned("b", leases, {}, held=[])
    assert plan.target == 2
    assert plan.steal is not None and plan.steal.owner == "c"


def test_no_steal_that_only_moves_the_imbalance() -> None:
    # 3 shards, 2 workers: 2/1 is as even as it gets; stealing would just flip it.
    leases = table(lease("shardId-0", "a"), lease("shardId-1", "a"), lease("shardId-2", "b"))
    assert planned("b", leases, {}, held=["shardId-2"]).steal is None


def test_expired_lease_of_a_dead_worker_is_taken_not_stolen() -> None:
    leases = table(lease("shardId-0", "dead", expires=NOW - 1), lease("shardId-1", "b"))
    plan = planned("b", leases, {}, held=["shardId-1"])
    assert live_workers("b", leases.values(), set(), expired_at_now(leases)) == {"b"}
    assert plan.target == 2
    assert [item.shard_id for item in plan.take] == ["shardId-0"]


def test_heartbeat_makes_an_idle_worker_count_so_others_leave_it_a_share() -> None:
    leases = four_shards(None, None, None, None)
    plan = planned("a", leases, {"b": NOW + 5, "gone": NOW - 1}, held=[])
    assert plan.target == 2
    assert len(plan.take) == 2


def test_lease_still_owned_by_me_from_before_a_restart_is_free_to_me() -> None:
    leases = four_shards("a", "a", None, None)
    plan = planned("a", leases, {}, held=[])
    assert [item.shard_id for item in plan.take] == [f"shardId-{i}" for i in range(4)]
    held = planned("a", leases, {}, held=["shardId-0", "shardId-1"])
    assert [item.shard_id for item in held.take] == ["shardId-2", "shardId-3"]  # not its own again


def test_blocked_children_and_finished_parents_do_not_count_towards_the_target() -> None:
    leases = table(
        Lease("shardId-0", checkpoint=SHARD_END),
        lease("shardId-1", checkpoint=SEQ_A),
        lease("shardId-2", parents=("shardId-0",)),
        lease("shardId-3", parents=("shardId-1",)),
    )
    plan = planned("a", leases, {"b": NOW + 5}, held=[])
    assert plan.target == 1  # shards 1 and 2 are readable; 3 waits for 1
    assert [item.shard_id for item in plan.take] == ["shardId-1"]


# --- start positions and settlements ----------------------------------------------------------------


def test_iterator_resumes_after_the_checkpoint_as_a_string() -> None:
    args = iterator_arguments(Lease("s", checkpoint=SEQ_A, start="LATEST"))
    assert args == {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": SEQ_A}


def test_iterator_without_checkpoint_uses_the_lease_start() -> None:
    assert iterator_arguments(Lease("s")) == {"ShardIteratorType": "TRIM_HORIZON"}
    assert iterator_arguments(Lease("s", start="LATEST")) == {"ShardIteratorType": "LATEST"}
    when = datetime(2026, 11, 27, 12, tzinfo=UTC)
    args = iterator_arguments(Lease("s", start="AT_TIMESTAMP", start_at=when.timestamp()))
    assert args == {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": when}


def record(seq: str) -> Record:
    return Record(body=b"{}", handle=seq, source_id=f"shardId-0:{seq}")


def test_failed_and_unmentioned_records_are_unsettled_quarantined_ones_are_not() -> None:
    records = [record(str(i)) for i in range(4)]
    settlement = Settlement(done=[records[0]], quarantined=[records[1]], failed=[records[2]])
    assert [r.handle for r in unsettled(records, settlement)] == ["2", "3"]
    assert unsettled(records, Settlement(done=records[:2], quarantined=records[2:])) == []


# --- lease expiry on the observer's own monotonic clock (the KCL's rule) -----------------------------


def test_a_renewed_lease_is_never_expired_whatever_its_owners_wall_clock_wrote() -> None:
    """Lease expiry is not a comparison of two machines' wall clocks: an owner whose clock is an
    hour behind writes `expires_at` long past, yet while its counter moves nobody may take it."""
    seen = Observations(lease_duration=10)
    stale_clock = Lease("shardId-0", counter=1, owner="a", expires_at=NOW - 3600)
    seen.update(table(stale_clock), {}, now=100.0)
    for step, now in enumerate([108.0, 116.0, 124.0, 132.0], start=2):  # renewed every 8 s
        renewed = Lease("shardId-0", counter=step, owner="a", expires_at=NOW - 3600)
        seen.update(table(renewed), {}, now=now)
        assert not seen.expired(renewed, now)
    assert seen.expired_shards(table(renewed), now=141.9) == set()
    assert seen.expired_shards(table(renewed), now=142.1) == {"shardId-0"}  # 10 s without a move


def test_a_lease_first_seen_owned_is_judged_from_when_we_first_saw_it() -> None:
    """A worker that just started cannot know how long the counter stood still before it looked:
    it waits one whole lease duration (the KCL treats it as renewed at the first scan)."""
    seen = Observations(lease_duration=10)
    dead = Lease("shardId-0", counter=7, owner="crashed", expires_at=NOW - 3600)
    seen.update(table(dead), {}, now=500.0)
    assert not seen.expired(dead, 509.0)
    seen.update(table(dead), {}, now=509.0)
    assert seen.expired(dead, 510.5)


def test_a_released_lease_is_free_at_once_and_a_counter_we_never_watched_is_live() -> None:
    seen = Observations(lease_duration=10)
    free = Lease("shardId-0", counter=3)
    seen.update(table(free), {}, now=1.0)
    assert seen.expired(free, 1.0)
    moved = Lease("shardId-1", counter=9, owner="a")
    assert not seen.expired(moved, 1_000.0)  # not in any scan yet: it has just moved, for all we know


def test_a_clock_stepped_forward_cannot_expire_a_live_lease() -> None:
    """Expiry uses only differences of one monotonic clock; wall time plays no part at all."""
    seen = Observations(lease_duration=3)
    for counter, now in enumerate([0.0, 1.0, 2.0, 3.0, 4.0], start=1):
        seen.update(table(Lease("s", counter=counter, owner="a", expires_at=-1e12)), {}, now)
    assert seen.expired_shards(table(Lease("s", counter=5, owner="a", expires_at=-1e12)), 4.5) == set()


def test_heartbeats_count_while_they_beat() -> None:
    seen = Observations(lease_duration=5)
    seen.update({}, {"a": 1, "b": 40}, now=0.0)
    seen.update({}, {"a": 2, "b": 40}, now=4.0)
    seen.update({}, {"a": 3, "b": 40}, now=6.0)
    assert seen.beating(6.0) == {"a"}  # b's beat stood still for 6 s
    assert live_workers("me", [], seen.beating(6.0), set()) == {"me", "a"}


# --- what one delivery may hold, and what a partial failure may checkpoint ----------------------------


def rec(seq: str, sub: int | None = None) -> Record:
    suffix = "" if sub is None else f"/{sub}"
    return Record(body=b"{}", handle=seq, source_id=f"shardId-0:{seq}{suffix}")


def test_one_customer_never_has_more_records_in_a_delivery_than_its_transaction_holds() -> None:
    units = [("hot", [rec(str(i))]) for i in range(150)] + [("cold", [rec("150")])]
    deliveries = split_by_key(units, max_per_key=64)
    assert [len(d) for d in deliveries] == [64, 64, 23]
    assert [r.handle for d in deliveries for r in d] == [str(i) for i in range(151)]  # order kept


def test_other_customers_share_a_delivery_and_an_aggregate_is_never_cut() -> None:
    units = [(f"c-{i}", [rec(str(i))]) for i in range(200)]
    assert [len(d) for d in split_by_key(units, max_per_key=64)] == [200]
    aggregate = ("hot", [rec("5", n) for n in range(70)])
    deliveries = split_by_key([("hot", [rec("4")]), aggregate, ("hot", [rec("6")])], max_per_key=64)
    assert [len(d) for d in deliveries] == [1, 70, 1]


def test_records_before_the_first_failure_are_checkpointed_and_the_rest_come_back() -> None:
    records = [rec("10"), rec("11", 0), rec("11", 1), rec("12"), rec("13")]
    assert acknowledged_prefix(records, [records[3]]) == "11"
    assert acknowledged_prefix(records, [records[2]]) == "10"  # an aggregate is done whole or not at all
    assert acknowledged_prefix(records, [records[0], records[4]]) is None
