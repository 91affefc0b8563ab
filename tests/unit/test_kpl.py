"""KPL de-aggregation against the KPL's own encoder (`aws-kinesis-agg`), and what is not an aggregate."""

from __future__ import annotations

import hashlib

from aws_kinesis_agg.aggregator import RecordAggregator
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sources.kpl import MAGIC, deaggregate


def aggregate(payloads: list[bytes], hash_keys: bool = False) -> bytes:
    aggregator = RecordAggregator()
    for i, payload in enumerate(payloads):
        aggregator.add_user_record(
            f"c-{i % 3}", payload, explicit_hash_key=str(10**30 + i) if hash_keys else None
        )
    _, _, data = aggregator.clear_and_get().get_contents()
    assert isinstance(data, bytes) and data.startswith(MAGIC)
    return data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=40), st.booleans())
def test_user_records_come_back_in_order(payloads: list[bytes], hash_keys: bool) -> None:
    assert deaggregate(aggregate(payloads, hash_keys)) == payloads


def test_events_packed_by_a_kpl_producer_come_back_as_events() -> None:
    events = [b'{"event_id": "e-1", "customer_id": "c-1", "type": "login"}', b'{"event_id": "e-2"}']
    assert deaggregate(aggregate(events)) == events


def test_anything_else_is_handed_on_as_it_is() -> None:
    good = aggregate([b'{"a": 1}', b'{"b": 2}'])
    assert deaggregate(b'{"event_id": "e-1"}') is None  # a plain record
    assert deaggregate(MAGIC) is None  # too short for a digest
    assert deaggregate(good[:-1] + bytes([good[-1] ^ 1])) is None  # digest does not match
    truncated = good[len(MAGIC) : -16][:-3]
    assert deaggregate(MAGIC + truncated + hashlib.md5(truncated).digest()) is None  # malformed protobuf
    empty = b""
    assert deaggregate(MAGIC + empty + hashlib.md5(empty).digest()) == []  # an aggregate of nothing
