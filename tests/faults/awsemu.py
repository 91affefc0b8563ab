"""moto's server, made to behave like AWS where the fault suite depends on it.

`python -m tests.faults.awsemu [--port N]` prints `listening on URL` like `python -m localaws`, with its
transaction patch, plus what moto does differently from Kinesis (the suite must not pass because
moto is kinder than AWS):

- **Sequence numbers** are 56-digit decimal strings on AWS (`4959033827149025660855969253836157...`),
  more than a DynamoDB Number (38 digits), an int64 or a float can hold. moto counts 1, 2, 3 per shard.
  Here they are 56 digits, increasing per shard, distinct across shards.
- **A split keeps the parent's records**: AWS closes the parent, which keeps its records until they
  expire; the children start empty. moto re-puts the parent's records into the children (so a
  consumer would read them twice and out of order).
- **Writes go to open shards only**: moto routes a partition key to the first shard whose hash
  range holds it, closed parents included.
- **A closed shard ends**: once its records are read, AWS's GetRecords returns no
  `NextShardIterator` (and the `ChildShards`); moto hands out iterators forever, so a consumer could
  never move on to the children.

What AWS does that no server here emulates (throttling, 5xx, lost responses, DynamoDB's 38-digit
Number limit, `ClientRequestToken` idempotency) is done by `tests.faults.proxy`.
"""

from __future__ import annotations

import argparse
from operator import attrgetter
from typing import Any

SEQUENCE_BASE = 49590338271490256608559692538361571095921575989136588898  # 56 digits, as AWS's look
SEQUENCE_STEP = 2**64 + 2**32  # consecutive records differ beyond what an int64 or a float tells apart


def patch_moto_kinesis() -> None:
    from moto.kinesis import models
    from moto.kinesis.exceptions import InvalidArgumentError

    if getattr(models.Shard.put_record, "_faults_patched", False):
        return

    def put_record(self: Any, partition_key: str, data: str, explicit_hash_key: str) -> str:
        last = self.get_max_sequence_number() if self.records else SEQUENCE_BASE + self._shard_id
        sequence = last + SEQUENCE_STEP
        self.records[sequence] = models.Record(partition_key, data, sequence, explicit_hash_key)
        return str(sequence)

    def get_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
        if not isinstance(partition_key, str) or len(partition_key) > 256:
            raise InvalidArgumentError("partition_key")
        if explicit_hash_key:
            key = int(explicit_hash_key)
            if key >= 2**128:
                raise InvalidArgumentError("explicit_hash_key")
        else:
            key = int(models.md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
        for shard in self.shards.values():
            if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
                return shard
        return None

    def split_shard(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
        new_start = int(new_starting_hash_key)
        shard = self.shards[shard_to_split]
        if not shard.starting_hash < new_start < shard.ending_hash:
            raise InvalidArgumentError(
                message=f"NewStartingHashKey {new_start} is outside shard {shard_to_split}"
            )
        if not shard.is_open:
            raise InvalidArgumentError(message=f"Shard {shard.shard_id} has already been merged or split")
        last_id = sorted(self.shards.values(), key=attrgetter("_shard_id"))[-1]._shard_id
        for index, (start, end) in enumerate(
            ((shard.starting_hash, new_start - 1), (new_start, shard.ending_hash))
        ):
            child = models.Shard(
                last_id + 1 + index, starting_hash=start, ending_hash=end, parent=shard.shard_id
            )
            self.shards[child.shard_id] = child
        shard.is_open = False  # keeps its records, as on AWS

    original_get_records = models.KinesisBackend.get_records

    def get_records(self: Any, stream_arn: str | None, shard_iterator: str, limit: int | None) -> Any:
        next_iterator, records, behind = original_get_records(self, stream_arn, shard_iterator, limit)
        stream_name, shard_id, _ = models.decompose_shard_iterator(next_iterator)
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        shard = stream.get_shard(shard_id)
        _, _, position = models.decompose_shard_iterator(next_iterator)
        if not shard.is_open and int(position) >= shard.get_max_sequence_number():
            next_iterator = None  # read to its end: AWS says so by returning no iterator
        return next_iterator, records, behind

    setattr(put_record, "_faults_patched", True)  # noqa: B010 - marks the function object
    models.Shard.put_record = put_record  # type: ignore[method-assign]
    models.Stream.get_shard_for_key = get_shard_for_key  # type: ignore[method-assign]
    models.Stream.split_shard = split_shard  # type: ignore[method-assign]
    models.KinesisBackend.get_records = get_records  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.awsemu", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    args = parser.parse_args()
    from localaws.server import serve_moto_until_stopped

    patch_moto_kinesis()
    serve_moto_until_stopped(args.port)


if __name__ == "__main__":
    main()
