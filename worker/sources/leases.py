"""Shard leases for the Kinesis source: which worker reads which shard, and how far it got.

Why a lease table: several worker processes read one stream, and each shard must be read by one
of them at a time, in order, resuming where the last reader stopped. One DynamoDB item per shard
(`<prefix>leases`, partition key `shard_id`, one table per stream) holds:

- `owner` (S, absent when free), `expires_at` (N, epoch ms on the owner's clock),
- `lease_counter` (N), incremented on every take, renew and release: the lease's version,
- `checkpoint` (S): the last sequence number whose effects are durable, or `SHARD_END`,
- `parents` (L of S): the shard's parent shards, read to the end before it,
- `start` (S) and `start_at` (N, epoch ms): where to begin while there is no checkpoint.

Heartbeat items (`shard_id = "worker#<id>"`, `expires_at`) tell the others a worker is alive
even while it holds no lease, so the shards are shared among every live worker.

Fencing: every write by an owner (renew, checkpoint, release) is conditional on the owner and the
counter it holds. A worker whose lease expired or was stolen can therefore never write a
checkpoint over the new owner's: it learns it lost the shard from the failed condition, and drops
it. Expiry is compared on each reader's clock; skew only makes a takeover early or late (at worst
two readers for a while, whose checkpoints the fence keeps apart), never a lost record.

Sequence numbers are ~56-digit decimal strings: stored as S, compared as Python ints. A
DynamoDB Number holds 38 digits and a float 15-17, so both would corrupt them.

The planning (who is live, what to take, what to steal) is a set of pure functions, unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from features.dynamodb import ensure_table

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
# Renewing, checkpointing, releasing: only while the lease is still ours at the counter we hold.
# This is the fence: a worker that lost its lease (expired, stolen) cannot write a checkpoint.
LEASE_HELD_BY_ME = "#owner = :me AND #counter = :held"

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
    expires_at: float = 0.0  # epoch seconds
    checkpoint: str | None = None
    parents: tuple[str, ...] = ()
    start: str = "TRIM_HORIZON"
    start_at: float | None = None  # epoch seconds, for start = AT_TIMESTAMP

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END

    def held_by(self, worker: str, now: float) -> bool:
        return self.owner == worker and self.expires_at > now

    def free(self, now: float) -> bool:
        return self.owner is None or self.expires_at <= now


def parents_drained(lease: Lease, leases: Mapping[str, Lease]) -> bool:
    """A child shard is read only after every parent was read to its end (per-key order across a
    split or merge). A parent with no lease is past retention, so there is nothing left to read."""
    return all(parent not in leases or leases[parent].finished for parent in lease.parents)


def processable(leases: Mapping[str, Lease]) -> dict[str, Lease]:
    """Leases someone should be reading now: not finished, and their parents are."""
    return {
        sid: lease for sid, lease in leases.items() if not lease.finished and parents_drained(lease, leases)
    }


def live_workers(me: str, leases: Iterable[Lease], heartbeats: Mapping[str, float], now: float) -> set[str]:
    """Workers holding an unexpired lease or an unexpired heartbeat, and always this one."""
    live = {me} | {worker for worker, expires in heartbeats.items() if expires > now}
    return live | {lease.owner for lease in leases if lease.owner is not None and lease.expires_at > now}


@dataclass(frozen=True)
class Plan:
    target: int  # leases each worker aims for: ceil(processable shards / live workers)
    take: tuple[Lease, ...] = ()  # free or expired leases, up to the target
    steal: Lease | None = None  # at most one, from the most loaded worker


def plan_round(
    me: str, leases: Mapping[str, Lease], heartbeats: Mapping[str, float], held: Iterable[str], now: float
) -> Plan:
    """One balancing round. `held` are the shards this worker is reading now.

    Take free leases up to the target; if none are free and this worker is still below it, steal
    one lease from the most loaded worker, but only if it holds at least two more than this one
    (a steal that only moves the imbalance around would make two workers trade a shard forever).
    A lease owned by `me` but not held (a restart under the same id) counts as free.
    """
    holding = set(held)
    work = processable(leases)
    live = live_workers(me, work.values(), heartbeats, now)
    target = math.ceil(len(work) / len(live)) if work else 0
    mine = len(holding & work.keys())
    free = sorted(
        (
            lease
            for sid, lease in work.items()
            if sid not in holding and (lease.free(now) or lease.owner == me)
        ),
        key=lambda lease: lease.shard_id,
    )
    take = tuple(free[: max(0, target - mine)])
    if take or mine >= target:
        return Plan(target, take)
    load: dict[str, list[Lease]] = {}
    for lease in work.values():
        if lease.owner is not None and lease.owner != me and not lease.free(now):
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
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class LeaseTable:
    """The lease table through an open aiobotocore DynamoDB client. Writes that lose a race return
    None/False; other errors propagate."""

    def __init__(self, client: Any, table: str, worker_id: str, lease_duration: float) -> None:
        self._client = client
        self.table = table
        self.worker_id = worker_id
        self.lease_duration = lease_duration

    async def scan(self) -> tuple[dict[str, Lease], dict[str, float]]:
        """Every lease and every worker heartbeat's expiry (epoch seconds)."""
        leases: dict[str, Lease] = {}
        heartbeats: dict[str, float] = {}
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            response = await self._client.scan(**kwargs)
            for item in response.get("Items", []):
                key = item["shard_id"]["S"]
                if key.startswith(HEARTBEAT_PREFIX):
                    heartbeats[key[len(HEARTBEAT_PREFIX) :]] = int(item["expires_at"]["N"]) / 1000
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
        """Take (or steal) `lease` as read in a scan. The new lease, or None if someone was faster."""
        return await self._update(
            lease, LEASE_UNCHANGED_SINCE_SCAN, {":seen": {"N": str(lease.counter)}}, now, owner=self.worker_id
        )

    async def renew(self, lease: Lease, now: float) -> Lease | None:
        """Extend a lease this worker holds. None if it is no longer ours (expired and taken, stolen)."""
        return await self._update(
            lease, LEASE_HELD_BY_ME, self._held_values(lease), now, owner=self.worker_id
        )

    async def release(self, lease: Lease) -> bool:
        """Give a lease up so another worker can take it at once (shutdown, shard finished)."""
        return (
            await self._update(lease, LEASE_HELD_BY_ME, self._held_values(lease), 0.0, owner=None) is not None
        )

    async def checkpoint(self, lease: Lease, sequence: str) -> bool:
        """Record `sequence` (or SHARD_END) as done. False if the lease is no longer ours: the fence."""
        values = self._held_values(lease) | {":checkpoint": {"S": sequence}}
        try:
            await self._client.update_item(
                TableName=self.table,
                Key={"shard_id": {"S": lease.shard_id}},
                UpdateExpression="SET #checkpoint = :checkpoint",
                ConditionExpression=LEASE_HELD_BY_ME,
                ExpressionAttributeNames=_NAMES | {"#checkpoint": "checkpoint"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    async def heartbeat(self, now: float) -> None:
        # Unconditional: each worker writes only its own heartbeat item.
        await self._client.put_item(
            TableName=self.table,
            Item={
                "shard_id": {"S": HEARTBEAT_PREFIX + self.worker_id},
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
        self, lease: Lease, condition: str, values: dict[str, Any], now: float, owner: str | None
    ) -> Lease | None:
        counter = lease.counter + 1
        expires = now + self.lease_duration if owner is not None else 0.0
        if owner is None:
            update = "SET #counter = :counter, expires_at = :expires REMOVE #owner"
        else:
            update = "SET #counter = :counter, expires_at = :expires, #owner = :owner"
            values = values | {":owner": {"S": owner}}
        try:
            await self._client.update_item(
                TableName=self.table,
                Key={"shard_id": {"S": lease.shard_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues=values
                | {":counter": {"N": str(counter)}, ":expires": _ms(expires)},
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        return replace(lease, counter=counter, owner=owner, expires_at=expires)


async def create_lease_table(client: Any, name: str) -> bool:
    """Create the lease table if missing (on-demand billing). True when it was created now."""
    return await ensure_table(client, name, "shard_id")
