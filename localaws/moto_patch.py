"""moto's `TransactWriteItems`, made fit for a shared local server (local stack, tests, benchmarks
only; the worker never imports this).

moto deep-copies every table a transaction touches, for rollback: O(table size) per request, and
not thread-safe (a concurrent write makes the copy fail with "dictionary changed size during
iteration", which the client sees as a 500). `patch_moto_transactions` swaps in an equivalent that
checks every condition first, then writes, backing up only the items it touches, under a lock. The
semantics clients see are unchanged: all-or-nothing, `TransactionCanceledException` with per-item
`CancellationReasons`.
"""

from __future__ import annotations

import copy
import re
import threading
from typing import Any

_LOCK = threading.Lock()


def patch_moto_transactions() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend.transact_write_items, "_churn_patched", False):
        return
    setattr(_transact_write_items, "_churn_patched", True)  # noqa: B010 - marks the function object
    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _LOCK:
        planned: list[tuple[str, dict[str, Any], str, dict[str, Any], Any]] = []
        seen: set[tuple[str, str]] = set()
        errors: list[tuple[str | None, str | None, Any]] = []
        for item in transact_items:
            if len(item) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            if op_type == "Put":
                table = self.get_table(table_name)
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            identity = (str(table_name), str(dict(sorted(key.items()))))
            if identity in seen:
                raise MultipleTransactionsException()
            seen.add(identity)
            current = self.get_item(table_name, key)
            condition = op.get("ConditionExpression")
            error: tuple[str | None, str | None, Any] = (None, None, None)
            if condition is not None:
                check = get_filter_expression(
                    condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                )
                if not check.expr(current):
                    old = (
                        current.to_json()["Attributes"]
                        if current and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
                        else None
                    )
                    error = ("ConditionalCheckFailed", "The conditional request failed", old)
            errors.append(error)
            planned.append((op_type, op, table_name, key, copy.deepcopy(current)))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)

        applied: list[tuple[str, dict[str, Any], Any]] = []
        try:
            for op_type, op, table_name, key, before in planned:
                applied.append((table_name, key, before))
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    self.put_item(
                        table_name,
                        op["Item"],
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
                elif op_type == "Delete":
                    self.delete_item(table_name, key)
                elif op_type == "Update":
                    self.update_item(
                        table_name,
                        key,
                        update_expression=op["UpdateExpression"],
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
        except Exception as exc:
            for table_name, key, before in reversed(applied):  # roll back what was written
                if before is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before.to_json()["Attributes"])
            failed: list[tuple[str | None, str | None, Any]] = [(None, None, None)] * len(planned)
            failed[len(applied) - 1] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(failed) from exc


# -- BatchExecuteStatement ---------------------------------------------------------------------------
#
# moto hands every PartiQL statement to a general parser that crashes on parameters in an INSERT
# (a 500) and applies an UPDATE whose WHERE does not hold as a silent no-op instead of answering
# ConditionalCheckFailed; it also copies every table for every statement. The feature store batches
# its single-item conditional writes as exactly two statement shapes (features/layout.py
# `single_write_statement`), the alert ledger its sent marks as the second (both built by
# `plumbing.tables.update_statement`), which this evaluates the way DynamoDB documents them:
#
# - INSERT INTO "t" VALUE {'a': ?, ...}: the item must not exist, else the statement's error is
#   `DuplicateItem`;
# - UPDATE "t" SET "a" = ? ... REMOVE "b" ... WHERE "k" = ? AND ...: the item must exist and every
#   equality hold (keys included), else `ConditionalCheckFailed`; then the SETs and REMOVEs apply.
#
# Each statement succeeds or fails on its own (no transaction), answered in order. Any other
# statement goes to moto's own implementation.

_INSERT = re.compile(r'^INSERT INTO "(?P<table>[^"]+)" VALUE \{(?P<body>.*)\}$', re.S)
_INSERT_FIELD = re.compile(r"^'(?P<name>[^']+)': \?$")
_UPDATE = re.compile(r'^UPDATE "(?P<table>[^"]+)" (?P<changes>.+?) WHERE (?P<where>.+)$', re.S)
_SET = re.compile(r'^SET "(?P<name>[^"]+)" = \?$')
_REMOVE = re.compile(r'^REMOVE "(?P<name>[^"]+)"$')
_EQUALS = re.compile(r'^"(?P<name>[^"]+)" = \?$')


def patch_moto_batch_statements() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.batch_execute_statement
    if getattr(original, "_churn_patched", False):
        return

    def batch_execute_statement(self: Any, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        planned = [plan_statement(stmt) for stmt in statements]
        if any(plan is None for plan in planned):
            return original(self, statements)
        with _LOCK:
            return [_run_statement(self, plan) for plan in planned if plan is not None]

    setattr(batch_execute_statement, "_churn_patched", True)  # noqa: B010 - marks the function object
    DynamoDBBackend.batch_execute_statement = batch_execute_statement  # type: ignore[method-assign]


def _split_clauses(text: str) -> list[str]:
    """'SET "a" = ? SET "b" = ? REMOVE "c"' -> ['SET "a" = ?', 'SET "b" = ?', 'REMOVE "c"']."""
    parts = re.split(r'\s+(?=(?:SET|REMOVE) ")', text.strip())
    return [part.strip() for part in parts if part.strip()]


def _names(terms: list[str], pattern: re.Pattern[str]) -> list[str] | None:
    """The `name` each term matches, or None when one does not."""
    names = []
    for term in terms:
        matched = pattern.match(term.strip())
        if not matched:
            return None
        names.append(matched["name"])
    return names


def plan_statement(stmt: dict[str, Any]) -> dict[str, Any] | None:
    """One of the two statement shapes as a plan: {"kind": "insert", "table", "item"} or
    {"kind": "update", "table", "set", "remove", "where"} (attribute name -> parameter); None for
    any other statement. The benchmark's unit count and the store's tests read statements with it.
    """
    text = " ".join(str(stmt["Statement"]).split())
    params = list(stmt.get("Parameters") or [])
    insert = _INSERT.match(text)
    if insert:
        names = _names(insert["body"].split(", "), _INSERT_FIELD)
        if names is None or len(names) != len(params):
            return None
        return {"kind": "insert", "table": insert["table"], "item": dict(zip(names, params, strict=True))}
    update = _UPDATE.match(text)
    if not update:
        return None
    sets: list[str] = []
    removes: list[str] = []
    for clause in _split_clauses(update["changes"]):
        if matched := _SET.match(clause):
            sets.append(matched["name"])
        elif matched := _REMOVE.match(clause):
            removes.append(matched["name"])
        else:
            return None
    wheres = _names(update["where"].split(" AND "), _EQUALS)
    if wheres is None or len(sets) + len(wheres) != len(params):
        return None
    return {
        "kind": "update",
        "table": update["table"],
        "set": dict(zip(sets, params[: len(sets)], strict=True)),
        "remove": removes,
        "where": dict(zip(wheres, params[len(sets) :], strict=True)),
    }


def _run_statement(backend: Any, plan: dict[str, Any]) -> dict[str, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    table_name = plan["table"]
    if table_name not in backend.tables:
        return {"Error": {"Code": "ResourceNotFound", "Message": "Requested resource not found"}}
    table = backend.tables[table_name]
    source = plan["item"] if plan["kind"] == "insert" else plan["where"]
    if table.hash_key_attr not in source or (table.range_key_attr and table.range_key_attr not in source):
        return {
            "TableName": table_name,
            "Error": {"Code": "ValidationError", "Message": "Where clause does not contain the full key"},
        }
    key = {table.hash_key_attr: source[table.hash_key_attr]}
    if table.range_key_attr:
        key[table.range_key_attr] = source[table.range_key_attr]
    current = backend.get_item(table_name, key)
    if plan["kind"] == "insert":
        if current is not None:
            return {
                "TableName": table_name,
                "Error": {"Code": "DuplicateItem", "Message": "Duplicate primary key exists in table"},
            }
        backend.put_item(table_name, plan["item"])
        return {"TableName": table_name}
    attributes = current.to_json()["Attributes"] if current is not None else None
    holds = attributes is not None and all(
        name in attributes and DynamoType(attributes[name]) == DynamoType(value)
        for name, value in plan["where"].items()
    )
    if not holds:
        return {
            "TableName": table_name,
            "Error": {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
        }
    assert attributes is not None
    for name in plan["remove"]:
        attributes.pop(name, None)
    attributes.update(plan["set"])
    backend.put_item(table_name, attributes)
    return {"TableName": table_name}
