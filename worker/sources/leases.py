"""Shard leases for the Kinesis source: which worker reads which shard, and how far it got.

Why a lease table: several worker processes read one stream, and each shard must be read by one
of them at a time, in order, resuming where the last reader stopped. One DynamoDB item per shard
(`<prefix>leases`, partition key `shard_id`, one table per stream) holds:

- `owner` (S, absent when free) and `lease_counter` (N), incremented on every take, renew and
  release: the lease's version, and its owner's pulse,
- `checkpoint` (S): the last sequence number whose effects are durable, or `SHARD_END`,
- `parents` (L of S): the shard's parent shards, read to the end before it,
- `start` (S) and `start_at` (N, epoch ms): where to begin while there is no checkpoint,
- `expires_at` (N, epoch ms on the owner's clock): for people reading the table only.

Heartbeat items (`shard_id = "worker#<id>"`, `beat` N) tell the others a worker is alive even
while it holds no lease, so the shards are shared among every live worker.

Expiry is judged as the KCL judges it (`Lease.isExpired`, `DynamoDBLeaseTaker.updateAllLeases`):
a lease is expired when its counter has not moved for `lease_duration` **on the observer's own
monotonic clock** (`Observations`), never by comparing another machine's wall clock with ours. A
clock set an hour ahead, or stepped by NTP, cannot make a live lease look expired. The price: a
worker that just started waits one lease duration before it takes a dead worker's lease (it
cannot know how long the counter stood still before it looked). A holder stops using a lease
`lease_duration` after the start of its last successful renewal on its own monotonic clock, before
anyone else can have seen the counter stand still that long.

Fencing: every write by an owner (renew, checkpoint, release) is conditional on the owner and the
counter it holds. A worker whose lease expired or was stolen can therefore never write a
checkpoint over the new owner's: it learns it lost the shard from the failed condition, and drops
it. A take returns the item as written (`ReturnValues=ALL_NEW`), so the new owner starts from the
checkpoint as it is at the take (the previous owner may have moved it after our scan; from the
take on, the fence stops it), never from an older one: a checkpoint never moves backwards.

Sequence numbers are ~56-digit decimal strings: stored as S, compared as Python ints. A
DynamoDB Number holds 38 digits and a float 15-17, so both would corrupt them.

The planning (who is live, what to take, what to steal) is a set of pure functions, unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from features.dynamodb import ensure_table
from plumbing.retry import Failure, classify

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import ScanInputTypeDef

SHARD_END = "SHARD_END"  # the checkpoint of a closed shard read to its end
HEARTBEAT_PREFIX = "worker#"  # never a Kinesis shard id ("shardId-000000000000")

# Conditions. The counter is bumped by every take/renew/release, so "counter unchanged" means
# "nobody touched this lease since I read it".
# Creating a lease: two workers may discover a new shard at once; the second must not reset the
# first's lease (and, later, a lease with a checkpoint) to an empty one.
LEASE_NOT_EXISTS = "attribute_not_exists(shard_id)"
# Taking a free or expired lease, or stealing one: only if nobody took or renewed it since our
# scan, so of two workers racing for one lease exactly one wins.
LEASE_UNCHANGED_SINCE_SCAN = "#counter = :seen"
# Renewing and checkpointing: only while the lease is still ours at the counter we hold.
# This is the fence: a worker that lost its lease (expired, stolen) cannot write a checkpoint.
LEASE_HELD_BY_ME = "#owner = :me AND #counter = :held"
LEASE_OWNED_BY_ME = "#owner = :me"  # releasing only: see LeaseTable.release

_NAMES = {"#counter": "lease_counter", "#owner": "owner"}


def lease_table_name(prefix: str) -> str:
    return f"{prefix}leases"


def sequence_key(sequence: str) -> int:
    """A sequence number as an int (exact at any length). Strings compare wrongly ("9" > "10")."""
    if not sequence.isdigit():
        raise ValueError(f"not a Kinesis sequence number: {sequence!r}")
    return int(sequence)


def is_after(sequence: str, other: str | None) -> bool:
    """True if `sequence` comes after `other` in a shard (anything is after nothing)."""
    return other is None or sequence_key(sequence) > sequence_key(other)


@dataclass(frozen=True)
class Lease:
    shard_id: str
    counter: int = 0
    owner: str | None = None
    expires_at: float = 0.0  # epoch seconds on the owner's clock: informational, never compared
    checkpoint: str | None = None
    parents: tuple[str, ...] = ()
    start: str = "TRIM_HORIZON"
    start_at: float | None = None  # epoch seconds, for start = AT_TIMESTAMP

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


def parents_drained(lease: Lease, leases: Mapping[str, Lease]) -> bool:
    """A child shard is read only after every parent was read to its end (per-key order across a
    split or merge). A parent with no lease is past retention, so there is nothing left to read."""
    return all(parent not in leases or leases[parent].finished for parent in lease.parents)


def processable(leases: Mapping[str, Lease]) -> dict[str, Lease]:
    """Leases someone should be reading now: not finished, and their parents are."""
    return {
        sid: lease for sid, lease in leases.items() if not lease.finished and parents_drained(lease, leases)
    }


class Observations:
    """When this worker last saw each lease's counter and each heartbeat's beat change, on its own
    monotonic clock: the only clock it may judge expiry by (see the module docstring)."""

    def __init__(self, lease_duration: float) -> None:
        self.lease_duration = lease_duration
        self._leases: dict[str, tuple[int, float]] = {}  # shard -> (counter, first seen at)
        self._beats: dict[str, tuple[int, float]] = {}  # worker -> (beat, first seen at)

    def update(self, leases: Mapping[str, Lease], heartbeats: Mapping[str, int], now: float) -> None:
        """Record a scan made at `now` (monotonic seconds)."""
        fresh: dict[str, tuple[int, float]] = {}
        for sid, lease in leases.items():
            seen = self._leases.get(sid)
            if seen is not None and seen[0] == lease.counter:
                fresh[sid] = seen  # unchanged since we last looked: keep when it last moved
            elif seen is None and lease.owner is None:
                fresh[sid] = (lease.counter, -math.inf)  # new to us and unowned: never renewed
            else:
                fresh[sid] = (lease.counter, now)  # moved, or new to us and owned: renewed as of now
        self._leases = fresh
        self._beats = {
            worker: self._beats[worker]
            if worker in self._beats and self._beats[worker][0] == beat
            else (beat, now)
            for worker, beat in heartbeats.items()
        }

    def expired(self, lease: Lease, now: float) -> bool:
        if lease.owner is None:
            return True
        seen = self._leases.get(lease.shard_id)
        if seen is None or seen[0] != lease.counter:
            return False  # a counter we have not watched yet has just moved
        return now - seen[1] > self.lease_duration

    def expired_shards(self, leases: Mapping[str, Lease], now: float) -> set[str]:
        return {sid for sid, lease in leases.items() if self.expired(lease, now)}

    def beating(self, now: float) -> set[str]:
        """Workers whose heartbeat moved within a lease duration."""
        return {worker for worker, (_, at) in self._beats.items() if now - at <= self.lease_duration}


def live_workers(me: str, leases: Iterable[Lease], beating: Iterable[str], expired: set[str]) -> set[str]:
    """Workers holding an unexpired lease or beating a heartbeat, and always this one."""
    live = {me} | set(beating)
    return live | {
        lease.owner for lease in leases if lease.owner is not None and lease.shard_id not in expired
    }


@dataclass(frozen=True)
class Plan:
    target: int  # leases each worker aims for: ceil(processable shards / live workers)
    take: tuple[Lease, ...] = ()  # free or expired leases, up to the target
    steal: Lease | None = None  # at most one, from the most loaded worker


def plan_round(
    me: str, leases: Mapping[str, Lease], beating: Iterable[str], held: Iterable[str], expired: set[str]
) -> Plan:
    """One balancing round. `held` are the shards this worker is reading now, `beating` the workers
    whose heartbeat moves, `expired` the shards whose lease this worker judges expired.

    Take free leases up to the target; if none are free and this worker is still below it, steal
    one lease from the most loaded worker, but only if it holds at least two more than this one
    (a steal that only moves the imbalance around would make two workers trade a shard forever).
    A lease owned by `me` but not held (a restart under the same id) counts as free.
    """
    holding = set(held)
    work = processable(leases)
    live = live_workers(me, work.values(), beating, expired)
    target = math.ceil(len(work) / len(live)) if work else 0
    mine = len(holding & work.keys())
    free = sorted(
        (
            lease
            for sid, lease in work.items()
            if sid not in holding and (sid in expired or lease.owner == me)
        ),
        key=lambda lease: lease.shard_id,
    )
    take = tuple(free[: max(0, target - mine)])
    if take or mine >= target:
        return Plan(target, take)
    load: dict[str, list[Lease]] = {}
    for lease in work.values():
        if lease.owner is not None and lease.owner != me and lease.shard_id not in expired:
            load.setdefault(lease.owner, []).append(lease)
    if not load:
        return Plan(target)
    victim = max(sorted(load), key=lambda worker: len(load[worker]))
    if len(load[victim]) < mine + 2:
        return Plan(target)
    return Plan(target, steal=max(load[victim], key=lambda lease: lease.shard_id))


def _lease_from_item(item: dict[str, Any]) -> Lease:
    return Lease(
        shard_id=item["shard_id"]["S"],
        counter=int(item.get("lease_counter", {"N": "0"})["N"]),
        owner=item["owner"]["S"] if "owner" in item else None,
        expires_at=int(item.get("expires_at", {"N": "0"})["N"]) / 1000,
        checkpoint=item["checkpoint"]["S"] if "checkpoint" in item else None,
        parents=tuple(p["S"] for p in item.get("parents", {}).get("L", [])),
        start=item.get("start", {"S": "TRIM_HORIZON"})["S"],
        start_at=int(item["start_at"]["N"]) / 1000 if "start_at" in item else None,
    )


def _ms(seconds: float) -> dict[str, str]:
    return {"N": str(int(seconds * 1000))}


def _condition_failed(exc: ClientError) -> bool:
    return classify(exc) is Failure.CONDITION_FAILED


class LeaseTable:
    """The lease table through an open aiobotocore DynamoDB client. Writes that lose a race return
    None/False; other errors propagate."""

    def __init__(self, client: DynamoDBClient, table: str, worker_id: str, lease_duration: float) -> None:
        self._client = client
        self.table = table
        self.worker_id = worker_id
        self.lease_duration = lease_duration
        self._beat = 0

    async def scan(self) -> tuple[dict[str, Lease], dict[str, int]]:
        """Every lease and every worker heartbeat's beat (a number that moves while it is alive)."""
        leases: dict[str, Lease] = {}
        heartbeats: dict[str, int] = {}
        kwargs: ScanInputTypeDef = {"TableName": self.table, "ConsistentRead": True}
        while True:
            response = await self._client.scan(**kwargs)
            for item in response.get("Items", []):
                key = item["shard_id"]["S"]
                if key.startswith(HEARTBEAT_PREFIX):
                    beat = item.get("beat", item.get("expires_at", {"N": "0"}))
                    heartbeats[key[len(HEARTBEAT_PREFIX) :]] = int(beat["N"])
                else:
                    leases[key] = _lease_from_item(item)
            if "LastEvaluatedKey" not in response:
                return leases, heartbeats
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def create(self, lease: Lease) -> bool:
        item: dict[str, Any] = {
            "shard_id": {"S": lease.shard_id},
            "lease_counter": {"N": "0"},
            "expires_at": {"N": "0"},
            "parents": {"L": [{"S": p} for p in lease.parents]},
            "start": {"S": lease.start},
        }
        if lease.start_at is not None:
            item["start_at"] = _ms(lease.start_at)
        if lease.checkpoint is not None:
            item["checkpoint"] = {"S": lease.checkpoint}
        try:
            await self._client.put_item(TableName=self.table, Item=item, ConditionExpression=LEASE_NOT_EXISTS)
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    async def take(self, lease: Lease, now: float) -> Lease | None:
        """Take (or steal) `lease` as read in a scan. The lease as written, checkpoint included
        (the previous owner may have moved it since the scan), or None if someone was faster."""
        return await self._update(
            lease,
            LEASE_UNCHANGED_SINCE_SCAN,
            {":seen": {"N": str(lease.counter)}},
            now,
            owner=self.worker_id,
            read_back=True,
        )

    async def renew(self, lease: Lease, now: float) -> Lease | None:
        """Extend a lease this worker holds. None if it is no longer ours (expired and taken, stolen)."""
        return await self._update(
            lease, LEASE_HELD_BY_ME, self._held_values(lease), now, owner=self.worker_id
        )

    async def release(self, lease: Lease) -> bool:
        """Give a lease up so another worker can take it at once (shutdown, shard finished).

        Conditioned on the owner alone, not on the counter: a renewal cancelled at shutdown may
        have reached the table after all (the counter moved, this process never heard), and the
        lease is still this worker's to give up. Anyone who took it since changed the owner, so
        the release fails for them, as it must. The counter still moves, fencing old checkpoints."""
        return await self._conditional_update(
            lease,
            "SET #counter = #counter + :one, expires_at = :expires REMOVE #owner",
            LEASE_OWNED_BY_ME,
            {":me": {"S": self.worker_id}, ":one": {"N": "1"}, ":expires": _ms(0.0)},
        )

    async def checkpoint(self, lease: Lease, sequence: str) -> bool:
        """Record `sequence` (or SHARD_END) as done. False if the lease is no longer ours: the fence."""
        return await self._conditional_update(
            lease,
            "SET #checkpoint = :checkpoint",
            LEASE_HELD_BY_ME,
            self._held_values(lease) | {":checkpoint": {"S": sequence}},
            {"#checkpoint": "checkpoint"},
        )

    async def _conditional_update(
        self,
        lease: Lease,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str] | None = None,
    ) -> bool:
        """One UpdateItem of the lease's item under `condition`: False when the condition failed."""
        try:
            await self._client.update_item(
                TableName=self.table,
                Key={"shard_id": {"S": lease.shard_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_NAMES | (names or {}),
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    async def heartbeat(self, now: float) -> None:
        # Unconditional: each worker writes only its own heartbeat item. Others watch `beat` move.
        self._beat += 1
        await self._client.put_item(
            TableName=self.table,
            Item={
                "shard_id": {"S": HEARTBEAT_PREFIX + self.worker_id},
                "beat": {"N": str(self._beat)},
                "expires_at": _ms(now + self.lease_duration),
            },
        )

    async def remove_heartbeat(self) -> None:
        await self._client.delete_item(
            TableName=self.table, Key={"shard_id": {"S": HEARTBEAT_PREFIX + self.worker_id}}
        )

    def _held_values(self, lease: Lease) -> dict[str, Any]:
        return {":me": {"S": self.worker_id}, ":held": {"N": str(lease.counter)}}

    async def _update(
        self,
        lease: Lease,
        condition: str,
        values: dict[str, Any],
        now: float,
        owner: str | None,
        read_back: bool = False,
    ) -> Lease | None:
        counter = lease.counter + 1
        expires = now + self.lease_duration if owner is not None else 0.0
        if owner is None:
            update = "SET #counter = :counter, expires_at = :expires REMOVE #owner"
        else:
            update = "SET #counter = :counter, expires_at = :expires, #owner = :owner"
            values = values | {":owner": {"S": owner}}
        try:
            response = await self._client.update_item(
                TableName=self.table,
                Key={"shard_id": {"S": lease.shard_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues=values
                | {":counter": {"N": str(counter)}, ":expires": _ms(expires)},
                ReturnValues="ALL_NEW" if read_back else "NONE",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        if read_back and "Attributes" in response:
            return _lease_from_item(response["Attributes"])
        return replace(lease, counter=counter, owner=owner, expires_at=expires)


async def create_lease_table(client: DynamoDBClient, name: str) -> bool:
    """Create the lease table if missing (on-demand billing). True when it was created now."""
    return await ensure_table(client, name, "shard_id")
