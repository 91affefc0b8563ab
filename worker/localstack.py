"""The embedded stand-in for AWS: moto's server on 127.0.0.1, used by `churn-worker local`, the
tests and the benchmarks.

moto's `TransactWriteItems` deep-copies every table a transaction touches, for rollback: O(table
size) per request, and not thread-safe (a concurrent write makes the copy fail with "dictionary
changed size during iteration", which the client sees as a 500). `patch_moto_transactions` swaps in
an equivalent that checks every condition first, then writes, backing up only the items it touches,
under a lock. The semantics clients see are unchanged: all-or-nothing, `TransactionCanceledException`
with per-item `CancellationReasons`.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Any

_LOCK = threading.Lock()


def start_moto() -> tuple[Any, str]:
    """Start moto's server on a free loopback port; returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    patch_moto_transactions()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per AWS call is noise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


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
                    old = current.to_json()["Attributes"] if current and op.get(
                        "ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None  # fmt: skip
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
                    self.put_item(table_name, op["Item"], expression_attribute_names=names,
                                  expression_attribute_values=values)  # fmt: skip
                elif op_type == "Delete":
                    self.delete_item(table_name, key)
                elif op_type == "Update":
                    self.update_item(table_name, key, update_expression=op["UpdateExpression"],
                                     expression_attribute_names=names, expression_attribute_values=values)  # fmt: skip
        except Exception as exc:
            for table_name, key, before in reversed(applied):  # roll back what was written
                if before is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before.to_json()["Attributes"])
            failed: list[tuple[str | None, str | None, Any]] = [(None, None, None)] * len(planned)
            failed[len(applied) - 1] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(failed) from exc


def main() -> None:
    """`python -m worker.localstack [--port N]`: moto's server (patched) as a process of its own,
    for end-to-end tests that kill and restart workers around it."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m worker.localstack", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    args = parser.parse_args()
    from moto.server import ThreadedMotoServer

    patch_moto_transactions()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"listening on http://{host}:{port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()


class ChildServer:
    """A server in a process of its own (moto, the model endpoint) that prints 'listening on URL'
    when ready; stopped with SIGTERM, killed if it does not go."""

    def __init__(self, args: list[str], name: str, timeout: float = 120) -> None:
        import re
        import subprocess
        import time

        self.name = name
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + timeout
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
            if time.monotonic() > deadline:
                break
        else:
            self.stop()
            raise RuntimeError(f"{name} did not start (exit code {self._proc.poll()})")
        threading.Thread(target=self._proc.stdout.read, daemon=True).start()  # keep the pipe drained

    def stop(self) -> None:
        import subprocess

        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
