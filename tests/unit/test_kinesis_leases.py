"""The pure parts of the Kinesis source: sequence order, parent/child order, balancing decisions,
start positions and what a settlement acknowledges. No network."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.ports import Record, Settlement
from worker.sources.kinesis import iterator_arguments, unsettled
from worker.sources.leases import (
    SHARD_END,
    Lease,
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
    plan = plan_round("a", four_shards(None, None, None, None), {}, held=[], now=NOW)
    assert plan.target == 4
    assert [item.shard_id for item in plan.take] == [f"shardId-{i}" for i in range(4)]
    assert plan.steal is None


def test_joining_worker_steals_one_lease_per_round_from_the_most_loaded() -> None:
    leases = four_shards("a", "a", "a", "a")
    plan = plan_round("b", leases, {"b": NOW + 5}, held=[], now=NOW)
    assert plan.target == 2 and not plan.take
    assert plan.steal is not None and plan.steal.owner == "a"
    # After one steal: a=3, b=1. b is below target and a holds two more: one more steal.
    leases = four_shards("a", "a", "a", "b")
    plan = plan_round("b", leases, {}, held=["shardId-3"], now=NOW)
    assert plan.steal is not None and plan.steal.owner == "a"
    # Balanced 2/2: nothing moves, for either worker.
    leases = four_shards("a", "a", "b", "b")
    assert plan_round("b", leases, {}, held=["shardId-2", "shardId-3"], now=NOW) == plan_round(
        "a", leases, {}, held=["shardId-0", "shardId-1"], now=NOW
    )
    assert plan_round("b", leases, {}, held=["shardId-2", "shardId-3"], now=NOW).steal is None


def test_steal_takes_from_the_most_loaded_worker_only() -> None:
    leases = table(*(lease(f"shardId-{i}", "a" if i < 2 else "c") for i in range(6)))  # a=2, c=4
    plan = plan_round("b", leases, {}, held=[], now=NOW)
    assert plan.target == 2
    assert plan.steal is not None and plan.steal.owner == "c"


def test_no_steal_that_only_moves_the_imbalance() -> None:
    # 3 shards, 2 workers: 2/1 is as even as it gets; stealing would just flip it.
    leases = table(lease("shardId-0", "a"), lease("shardId-1", "a"), lease("shardId-2", "b"))
    assert plan_round("b", leases, {}, held=["shardId-2"], now=NOW).steal is None


def test_expired_lease_of_a_dead_worker_is_taken_not_stolen() -> None:
    leases = table(lease("shardId-0", "dead", expires=NOW - 1), lease("shardId-1", "b"))
    plan = plan_round("b", leases, {}, held=["shardId-1"], now=NOW)
    assert live_workers("b", leases.values(), {}, NOW) == {"b"}
    assert plan.target == 2
    assert [item.shard_id for item in plan.take] == ["shardId-0"]


def test_heartbeat_makes_an_idle_worker_count_so_others_leave_it_a_share() -> None:
    leases = four_shards(None, None, None, None)
    plan = plan_round("a", leases, {"b": NOW + 5, "gone": NOW - 1}, held=[], now=NOW)
    assert plan.target == 2
    assert len(plan.take) == 2


def test_lease_still_owned_by_me_from_before_a_restart_is_free_to_me() -> None:
    leases = four_shards("a", "a", None, None)
    plan = plan_round("a", leases, {}, held=[], now=NOW)
    assert [item.shard_id for item in plan.take] == [f"shardId-{i}" for i in range(4)]
    held = plan_round("a", leases, {}, held=["shardId-0", "shardId-1"], now=NOW)
    assert [item.shard_id for item in held.take] == ["shardId-2", "shardId-3"]  # not its own again


def test_blocked_children_and_finished_parents_do_not_count_towards_the_target() -> None:
    leases = table(
        Lease("shardId-0", checkpoint=SHARD_END),
        lease("shardId-1", checkpoint=SEQ_A),
        lease("shardId-2", parents=("shardId-0",)),
        lease("shardId-3", parents=("shardId-1",)),
    )
    plan = plan_round("a", leases, {"b": NOW + 5}, held=[], now=NOW)
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
