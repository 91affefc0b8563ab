"""De-aggregation of Kinesis Producer Library (KPL) records.

A producer using the KPL (or `aws-kinesis-agg`) packs many user records into one Kinesis record:
the magic bytes F3 89 9A C2, a protobuf `AggregatedRecord`, then the MD5 digest of that protobuf.
The worker must unpack them, or every event a KPL producer sends would be quarantined as not JSON.

    message AggregatedRecord { repeated string partition_key_table = 1;
                               repeated string explicit_hash_key_table = 2;
                               repeated Record records = 3; }
    message Record { required uint64 partition_key_index = 1; optional uint64 explicit_hash_key_index = 2;
                     required bytes data = 3; repeated Tag tags = 4; }

Only `records[].data` is needed, so this reads the protobuf wire format directly (a few dozen
lines, no protobuf runtime in the worker's install). As the KCL does, a record with the magic bytes
but a wrong digest or a malformed body is not an aggregate: it is handed on as it is, and the
pipeline quarantines it with a clear error. Tests check this against the `aws-kinesis-agg` encoder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_BYTES = 16
_RECORDS, _DATA = 3, 3  # field numbers: AggregatedRecord.records, Record.data
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def deaggregate(data: bytes) -> list[bytes] | None:
    """The user records packed in a KPL aggregate, in order; None if `data` is not a valid one."""
    if len(data) < len(MAGIC) + DIGEST_BYTES or not data.startswith(MAGIC):
        return None
    message, digest = data[len(MAGIC) : -DIGEST_BYTES], data[-DIGEST_BYTES:]
    if hashlib.md5(message, usedforsecurity=False).digest() != digest:
        return None
    try:
        payloads = []
        for number, wire, value in _fields(message):
            if number == _RECORDS and wire == _LENGTH_DELIMITED:
                assert isinstance(value, bytes)
                payloads.append(_record_data(value))
        return payloads
    except ValueError:
        return None


def _record_data(record: bytes) -> bytes:
    data = None
    for number, wire, value in _fields(record):
        if number == _DATA and wire == _LENGTH_DELIMITED:
            assert isinstance(value, bytes)
            data = value
    if data is None:
        raise ValueError("a Record without data")
    return data


def _fields(buffer: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one protobuf message."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == _VARINT:
            value, position = _varint(buffer, position)
        elif wire == _LENGTH_DELIMITED:
            length, position = _varint(buffer, position)
            if position + length > len(buffer):
                raise ValueError("a field runs past the end of its message")
            value, position = buffer[position : position + length], position + length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if position + size > len(buffer):
                raise ValueError("a field runs past the end of its message")
            value, position = buffer[position : position + size], position + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(buffer) or shift > 63:
            raise ValueError("a truncated or overlong varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position
