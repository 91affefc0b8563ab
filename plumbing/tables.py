"""Helpers shared by every DynamoDB table the worker owns: creating a table (and its indexes)
idempotently, and sharding the partition key of a sparse index."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        AttributeDefinitionTypeDef,
        GlobalSecondaryIndexTypeDef,
        KeySchemaElementTypeDef,
    )


@dataclass(frozen=True)
class IndexSpec:
    """A global secondary index projecting only keys: (name, hash key, its type, range key, its type)."""

    name: str
    hash_key: str
    hash_type: Literal["S", "N"]
    range_key: str
    range_type: Literal["S", "N"]


def shard_of(key: str, shards: int) -> str:
    """A key's shard of a sharded index partition key, stable across processes and versions (a
    digest, not Python's salted `hash`): "00" .. "<shards - 1>"."""
    number = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % shards
    return f"{number:02d}"


def shard_names(shards: int) -> list[str]:
    return [f"{number:02d}" for number in range(shards)]


async def ensure_table(
    client: DynamoDBClient,
    table: str,
    hash_key: str,
    range_key: str | None = None,
    ttl_attribute: str | None = None,
    indexes: Sequence[IndexSpec] = (),
) -> bool:
    """Create an on-demand table with string keys (TTL on `ttl_attribute`, keys-only global
    secondary `indexes`) if it is missing, and wait until it is usable; an existing table gets the
    indexes it lacks. True when the table was created now. Shared by every table the worker owns."""
    key_schema: list[KeySchemaElementTypeDef] = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if range_key:
        key_schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
    definitions: dict[str, Literal["S", "N"]] = {element["AttributeName"]: "S" for element in key_schema}
    for index in indexes:
        definitions[index.hash_key] = index.hash_type
        definitions[index.range_key] = index.range_type
    attribute_definitions: list[AttributeDefinitionTypeDef] = [
        {"AttributeName": name, "AttributeType": kind} for name, kind in definitions.items()
    ]
    created = True
    try:
        if indexes:
            await client.create_table(
                TableName=table,
                AttributeDefinitions=attribute_definitions,
                KeySchema=key_schema,
                GlobalSecondaryIndexes=[_index(index) for index in indexes],
                BillingMode="PAY_PER_REQUEST",
            )
        else:
            await client.create_table(
                TableName=table,
                AttributeDefinitions=attribute_definitions,
                KeySchema=key_schema,
                BillingMode="PAY_PER_REQUEST",
            )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
        created = False
    await client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    if not created and indexes:
        await _add_missing_indexes(client, table, indexes, attribute_definitions)
    if ttl_attribute is not None:
        ttl = await client.describe_time_to_live(TableName=table)
        if ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            await client.update_time_to_live(
                TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute}
            )
    return created


def _index(index: IndexSpec) -> GlobalSecondaryIndexTypeDef:
    return {
        "IndexName": index.name,
        "KeySchema": [
            {"AttributeName": index.hash_key, "KeyType": "HASH"},
            {"AttributeName": index.range_key, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    }


async def _add_missing_indexes(
    client: DynamoDBClient,
    table: str,
    indexes: Sequence[IndexSpec],
    definitions: list[AttributeDefinitionTypeDef],
) -> None:
    """A table made before an index existed gets it (one index per UpdateTable, as DynamoDB wants)."""
    described = (await client.describe_table(TableName=table))["Table"]
    present = {index["IndexName"] for index in described.get("GlobalSecondaryIndexes", [])}
    for index in indexes:
        if index.name in present:
            continue
        await client.update_table(
            TableName=table,
            AttributeDefinitions=definitions,
            GlobalSecondaryIndexUpdates=[{"Create": _index(index)}],
        )
        await client.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )


def update_statement(
    table: str,
    sets: Sequence[tuple[str, dict[str, Any]]],
    removes: Sequence[str],
    where: Sequence[tuple[str, dict[str, Any]]],
) -> tuple[str, list[dict[str, Any]]]:
    """A conditional single-item PartiQL UPDATE for `BatchExecuteStatement`, and its parameters:
    `UPDATE "t" SET "a" = ? ... REMOVE "b" ... WHERE "k" = ? AND ...` (the keys and every other
    equality in `where`). Identifiers are double-quoted (no reserved-word trouble); every value is a
    parameter. The one shape the feature store and the alert ledger send, and the one
    `localaws.moto_patch.plan_statement` reads back."""
    clauses = " ".join(
        [*(f'SET "{name}" = ?' for name, _ in sets), *(f'REMOVE "{name}"' for name in removes)]
    )
    condition = " AND ".join(f'"{name}" = ?' for name, _ in where)
    return (
        f'UPDATE "{table}" {clauses} WHERE {condition}',
        [value for _, value in sets] + [value for _, value in where],
    )
