"""Pure helpers of the Kinesis source: what one delivery may hold and what a settlement lets it
checkpoint. No I/O, unit-tested (`tests/unit/test_kinesis_leases.py`).

- `split_by_key`: one GetRecords answer becomes several deliveries when one partition key (one
  customer) has more records in it than `max_per_key`. The feature store writes a customer's new
  events in one DynamoDB transaction (its profile and every day page they touch): at most 100
  items and 4 MB. A page is at most ~60 KB (`features/STORE.md`), so 64 events of one customer,
  touching at most 64 pages plus the profile, always fit; a backfill of one customer's year would
  not (1,000 records a call, one page per day: a transaction refused forever).
- `acknowledged_prefix`: the last sequence number up to which every record of a delivery is
  acknowledged, so a record that failed costs only itself and what follows it, not the records
  before it (they are checkpointed, and not read again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NotRequired, TypedDict, cast

from worker.ports import Record, Settlement
from worker.sources.leases import SHARD_END, Lease

if TYPE_CHECKING:
    from types_aiobotocore_kinesis.literals import ShardIteratorTypeType

MAX_RECORDS_PER_KEY = 64


class IteratorPosition(TypedDict):
    """Where GetShardIterator starts: its arguments besides the stream and the shard."""

    ShardIteratorType: ShardIteratorTypeType
    StartingSequenceNumber: NotRequired[str]
    Timestamp: NotRequired[datetime]


def iterator_arguments(lease: Lease) -> IteratorPosition:
    """GetShardIterator arguments for a lease: after its checkpoint, else its start position."""
    if lease.checkpoint is not None and lease.checkpoint != SHARD_END:
        return {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": lease.checkpoint}
    if lease.start == "AT_TIMESTAMP":
        return {
            "ShardIteratorType": "AT_TIMESTAMP",
            "Timestamp": datetime.fromtimestamp(lease.start_at or 0, UTC),
        }
    # TRIM_HORIZON or LATEST: the source refuses any other start position
    return {"ShardIteratorType": cast("ShardIteratorTypeType", lease.start)}


def unsettled(records: Sequence[Record], settlement: Settlement) -> list[Record]:
    """Records not acknowledged (done or quarantined): failed, or not mentioned at all."""
    acked = {record.source_id for record in settlement.done + settlement.quarantined}
    return [record for record in records if record.source_id not in acked]


def split_by_key(units: Sequence[tuple[str, list[Record]]], max_per_key: int) -> list[list[Record]]:
    """Consecutive deliveries from (partition key, records of one Kinesis record) units, in order,
    none holding more than `max_per_key` records of one key. A unit is never split (the user
    records of a KPL aggregate share one sequence number, hence one checkpoint), so one aggregate
    larger than the cap travels alone."""
    deliveries: list[list[Record]] = []
    current: list[Record] = []
    counts: Counter[str] = Counter()
    for key, records in units:
        if current and counts[key] + len(records) > max_per_key:
            deliveries.append(current)
            current, counts = [], Counter()
        current += records
        counts[key] += len(records)
    if current:
        deliveries.append(current)
    return deliveries


def acknowledged_prefix(records: Sequence[Record], failed: Sequence[Record]) -> str | None:
    """The sequence number of the last Kinesis record before the first one with a failed record
    (None if the very first one failed). Records are in shard order; the user records of an
    aggregate share their sequence number, so the prefix ends on a whole Kinesis record."""
    bad_sequences = {str(record.handle) for record in failed}
    last: str | None = None
    for record in records:
        if str(record.handle) in bad_sequences:
            return last
        last = str(record.handle)
    return last
