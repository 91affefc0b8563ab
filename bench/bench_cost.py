"""Cost per event, measured, and the monthly bill it implies at 1 M, 10 M and 100 M events a day.

The stack is the real one: infra/data-plane.yaml deployed into moto's CloudFormation, simulated
customers' history preloaded into its feature table, their last days queued as a backlog, then
`churn-worker run` in a process of its own (configured from the stack's outputs alone) works through
it against moto and the local model endpoint. Measured from that run:

- AWS requests per event by operation: the worker's own counters (`/metrics.json`,
  churn_aws_requests_total{service,operation}), so retries count;
- DynamoDB read and write units per event: every DynamoDB request and response of the worker passes
  a recording proxy in front of moto, and units are computed from the exact item bytes with
  DynamoDB's rules (4 KB read units, 1 KB write units, strongly consistent reads x1, eventually
  consistent x0.5, transactional writes x2, an update on the larger of the item before and after,
  a single-item write whose condition failed as if it had gone through). moto's own
  ConsumedCapacity is a constant, not this;
- worker CPU per event (/proc, from ready to drained), event bytes, feature bytes per customer.

bench/cost_model.py turns those into dollars; the sizing rules and the dated price list are there.
The proxy keeps the worker's connections alive, as AWS does (moto's own server closes every one);
`--connections close` measures the worker reconnecting at every request instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from aiohttp import ClientSession, web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cost_model import Measured, report
from cli.commands.local import load_events, split_events, use_local_aws
from features.dynamodb import DynamoDBFeatureStore, table_name
from features.events import Event, event_to_json, validate_event
from infra.stack_env import settings_env
from jobs.training import ensure_default_bundle
from localaws import ChildServer
from localaws.moto_patch import plan_statement
from plumbing.clients import AwsClients
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Backlog:
    """Simulated customers over `days` up to now: all but the last `live_days` preloaded into the
    feature table, the last `live_days` queued for the worker."""

    name: str
    customers: int
    days: int
    live_days: int
    seed: int
    generator: str = "sim"  # "sim": model/simulator.py; "alt": model/altsim.py (a structurally different log)

    def __str__(self) -> str:
        source = "" if self.generator == "sim" else f" ({self.generator} generator)"
        return f"{self.customers} customers, last {self.live_days} days{source}"

    def events(self) -> list[Event]:
        """Every event of the backlog, in time order, up to now."""
        if self.generator == "sim":
            return load_events(self.customers, self.days, self.seed, None)
        from model.altsim import generate

        now = datetime.now(UTC)
        log = generate(self.customers, self.days, self.seed, start=now - timedelta(days=self.days))
        seen: set[str] = set()
        events = []
        for raw in log.events:  # ~1% delivered twice by the generator: the producer sends each once
            event = validate_event(raw)
            if event.event_id not in seen and event.occurred_at <= now:
                seen.add(event.event_id)
                events.append(event)
        return sorted(events, key=lambda e: e.occurred_at)


# The large backlog, the one the cost targets are measured on (docs/performance.md): ~1,400 events
# of 400 customers over 3 days; and the smaller one the Cost section was first measured on. Small
# enough for moto; per-event figures barely move with size. "alerts": the second generator's log
# (model/altsim.py, which the model was not shaped on) with the default, untuned alert rules: many
# more customers cross a threshold, so the alert path (claims, records, sent marks, publishes)
# weighs more than the events do.
BACKLOGS = {
    "large": Backlog("large", 400, 35, 3, 14),
    "small": Backlog("small", 150, 35, 2, 11),
    "alerts": Backlog("alerts", 400, 35, 3, 23, generator="alt"),
}


def value_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value by DynamoDB's item-size rules."""
    ((kind, body),) = value.items()
    if kind == "S":
        return len(body.encode())
    if kind == "N":
        digits = body.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":  # base64 text on the wire (the proxy), bytes once boto3 has decoded it (the scan)
        return len(body) if isinstance(body, bytes) else len(base64.b64decode(body))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_size({kind[0]: item}) for item in body)
    if kind == "L":
        return 3 + sum(1 + value_size(item) for item in body)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + value_size(item) for name, item in body.items())
    raise ValueError(kind)


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def item_key(table: str, item: dict[str, Any]) -> tuple[str, str, str] | None:
    """An item's identity across requests: its table and its two key attributes' values (every
    table of the stack keys on `customer_id` and one of `alert_type`, `bucket`)."""
    sort = item.get("alert_type") or item.get("bucket")
    if "customer_id" not in item or sort is None:
        return None
    return table, next(iter(item["customer_id"].values())), next(iter(sort.values()))


def claim_item_sizes(operation: str, request: dict[str, Any]) -> list[int]:
    """Bytes of the alert claim items (those with a `claim_token`) a write puts."""
    if operation == "TransactWriteItems":
        items = [a["Put"]["Item"] for a in request["TransactItems"] if "Put" in a]
    elif operation == "PutItem":
        items = [request["Item"]]
    else:
        return []
    return [item_size(item) for item in items if "claim_token" in item]


def write_units(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def capacity(
    operation: str,
    request: dict[str, Any],
    response: dict[str, Any],
    sizes: dict[tuple[str, str, str], int] | None = None,
) -> tuple[float, float]:
    """(read units, write units) of one DynamoDB call. `sizes`: the bytes of the items written so
    far, by key, which this call's puts update. An update is billed on the larger of the item
    before and after it: for an UpdateItem (a sent mark, a lease) on an item whose size the run has
    seen, that size; for one it has not (leases, the due index's claims on profiles written
    before the run), one unit. x2 in a transaction, ConditionCheck included."""
    sizes = {} if sizes is None else sizes
    read_factor = 1.0 if request.get("ConsistentRead") else 0.5
    table = table_of(request)

    def put(item: dict[str, Any], table: str = table) -> int:
        size = item_size(item)
        key = item_key(table, item)
        if key is not None:
            sizes[key] = size
        return write_units(size)

    def update(key: dict[str, Any], table: str = table) -> int:
        known = item_key(table, key)
        return write_units(sizes.get(known, 0)) if known is not None else 1

    if operation in ("Query", "Scan"):
        return max(1, math.ceil(sum(map(item_size, response.get("Items", []))) / 4096)) * read_factor, 0
    if operation == "GetItem":
        return max(1, math.ceil(item_size(response.get("Item", {})) / 4096)) * read_factor, 0
    if operation == "BatchGetItem":
        # Each key is a GetItem of its own: rounded up to 4 KB, a key not found costs 1 unit too;
        # ConsistentRead is per table; unprocessed keys cost nothing (they are asked again).
        units = 0.0
        for name, asked in request["RequestItems"].items():
            factor = 1.0 if asked.get("ConsistentRead") else 0.5
            found = response.get("Responses", {}).get(name, [])
            unprocessed = len(response.get("UnprocessedKeys", {}).get(name, {}).get("Keys", []))
            missing = len(asked["Keys"]) - len(found) - unprocessed
            units += (sum(max(1, math.ceil(item_size(i) / 4096)) for i in found) + missing) * factor
        return units, 0
    if operation == "PutItem":
        return 0, put(request["Item"])
    if operation == "UpdateItem":
        return 0, update(request["Key"])
    if operation == "DeleteItem":
        return 0, update(request["Key"])
    if operation == "BatchWriteItem":
        units = 0
        for name, writes in request["RequestItems"].items():
            for w in writes:
                if "PutRequest" in w:
                    units += put(w["PutRequest"]["Item"], name.rsplit("-", 1)[-1])
                else:
                    units += 1
        return 0, units
    if operation == "BatchExecuteStatement":
        # Each write statement is billed as the single-item write it is: an INSERT on its values; an
        # UPDATE on the larger of the item before and after (a feature-store UPDATE sets the whole
        # new profile; a sent mark sets a few attributes of a claim item of the size put before).
        units = 0
        for statement in request["Statements"]:
            named, whole = statement_item(statement)
            key = item_key(table, named)
            before = sizes.get(key, 0) if key is not None else 0
            size = item_size(named) if whole else before
            if key is not None:
                sizes[key] = size
            units += write_units(max(size, before))
        return 0, units
    if operation == "TransactWriteItems":
        units = 0
        for action in request["TransactItems"]:
            ((kind, body),) = action.items()
            name = table_of(body)
            if kind == "Put":
                units += 2 * put(body["Item"], name)
            else:
                units += 2 * update(body["Key"], name)
        return 0, units
    return 0, 0


def statement_item(statement: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """What a PartiQL write names of its item (the INSERT's values; the UPDATE's keys and SETs), and
    whether that is the whole item: an INSERT, or a feature-store UPDATE (features/layout.py
    `single_write_statement` sets every attribute of the new profile), not a sent mark of the alert
    ledger (a few attributes of a claim item)."""
    plan = plan_statement(statement)
    if plan is None:
        return {}, False
    if plan["kind"] == "insert":
        return dict(plan["item"]), True
    keys = {
        name: value
        for name, value in plan["where"].items()
        if name in ("customer_id", "bucket", "alert_type")
    }
    return {**plan["set"], **keys}, "bucket" in plan["where"]


def table_of(request: dict[str, Any]) -> str:
    """The table a DynamoDB request is about, without the deployment's prefix (the first one, for a
    request spanning several): `features`, `alerts`, ..."""
    if "TableName" in request:
        name = str(request["TableName"])
    elif "RequestItems" in request:
        name = next(iter(request["RequestItems"]))
    elif request.get("Statements") and (plan := plan_statement(request["Statements"][0])):
        name = str(plan["table"])
    elif request.get("TransactItems"):
        name = next(iter(request["TransactItems"][0].values()))["TableName"]
    else:
        return "?"
    return name.rsplit("-", 1)[-1]


class RecordingProxy:
    """HTTP proxy in front of moto for the worker's clients: forwards everything, and sums the
    capacity units of each DynamoDB call from its request and response bodies."""

    def __init__(self, upstream: str, keep_alive: bool = True) -> None:
        self.upstream = upstream
        self.keep_alive = keep_alive  # False: close every connection, as moto's own server does
        self.rru = self.wru = 0.0
        self.calls: Counter[str] = Counter()  # "<operation> <table>" -> requests, failed ones too
        self.failed: Counter[str] = Counter()  # ... of them answered with an error
        self.units: dict[str, list[float]] = {}  # operation -> [read units, write units]
        self.sizes: dict[tuple[str, str, str], int] = {}  # item key -> bytes, as last written
        self.claim_sizes: list[int] = []  # bytes of each alert claim item put
        self._session: ClientSession | None = None

    async def start(self) -> str:
        self._session = ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            target = request.headers.get("X-Amz-Target", "")
            if target.startswith("DynamoDB_"):
                operation = target.split(".", 1)[1]
                asked = json.loads(body)
                key = f"{operation} {table_of(asked)}" + (
                    f" index {asked['IndexName']}" if "IndexName" in asked else ""
                )
                self.calls[key] += 1
                if upstream.status != 200:
                    self.failed[key] += 1
                # A single-item write whose condition failed still consumes its write units (the
                # DynamoDB developer guide, "Condition expressions"); a cancelled transaction, a
                # throttled request and the rest of the failures are counted as free.
                failed_condition = b"ConditionalCheckFailed" in payload and operation in (
                    "PutItem",
                    "UpdateItem",
                    "DeleteItem",
                )
                if upstream.status == 200 or failed_condition:
                    sizes = {} if failed_condition and operation == "PutItem" else self.sizes
                    rru, wru = capacity(operation, asked, json.loads(payload or b"{}"), sizes)
                    if upstream.status == 200:
                        self.claim_sizes += claim_item_sizes(operation, asked)
                    self.rru, self.wru = self.rru + rru, self.wru + wru
                    units = self.units.setdefault(key, [0.0, 0.0])
                    units[0], units[1] = units[0] + rru, units[1] + wru
            skip = ("content-length", "transfer-encoding", "connection", "content-encoding")
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in skip}
            if "content-encoding" in upstream.headers:
                out["Content-Encoding"] = upstream.headers["content-encoding"]
            response = web.Response(status=upstream.status, headers=out, body=payload)
            if not self.keep_alive:
                response.force_close()  # "Connection: close", a new TCP connection per request
            return response


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_json(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics.json", timeout=2) as response:
            return dict(json.load(response))
    except OSError:
        return None


def aws_client(service: str) -> Any:
    return boto3.client(
        service, region_name=os.environ["AWS_REGION"]
    )  # use_local_aws sets it (botocore reads only AWS_DEFAULT_REGION)


def deploy_data_plane(prefix: str) -> dict[str, str]:
    cfn = aws_client("cloudformation")
    stack = f"{prefix}data"
    cfn.create_stack(
        StackName=stack,
        TemplateBody=(ROOT / "infra" / "data-plane.yaml").read_text(),
        Parameters=[{"ParameterKey": "TablePrefix", "ParameterValue": prefix}],
    )
    cfn.get_waiter("stack_create_complete").wait(StackName=stack, WaiterConfig={"Delay": 1})
    return {
        o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    }


async def measure(
    endpoint_url: str,
    backlog: Backlog,
    keep_alive: bool = True,
    profile: Path | None = None,
) -> tuple[Measured, RecordingProxy, dict[str, Any], float]:
    """The worker's figures on `backlog`; the proxy, with DynamoDB requests and (read, write) units
    by operation and table; the worker's last metrics snapshot; the seconds it took."""
    prefix = f"cost{int(time.time())}{backlog.name}-"
    outputs = deploy_data_plane(prefix)
    env = settings_env({"OutputKey": k, "OutputValue": v} for k, v in outputs.items())
    settings = Settings(table_prefix=prefix)
    history, live = split_events(backlog.events(), backlog.live_days)
    now = datetime.now(UTC)
    async with AwsClients(
        settings.aws_region, "dynamodb"
    ) as aws:  # history, as the worker would have left it
        store = DynamoDBFeatureStore(aws.dynamodb, table_name(prefix), settings.retention)
        recent = [e for e in history if e.occurred_at >= now - settings.retention]
        for start in range(0, len(recent), 1000):
            await store.apply(recent[start : start + 1000], now=now)
    sqs = aws_client("sqs")
    bodies = [event_to_json(e) for e in live]
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(
            QueueUrl=outputs["QueueUrl"],
            Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])],
        )
    print(
        f"{len(history):,} historical events preloaded, {len(live):,} live events queued ({backlog}); "
        f"connections {'kept alive' if keep_alive else 'closed after each request'}",
        flush=True,
    )

    proxy = RecordingProxy(os.environ["AWS_ENDPOINT_URL"], keep_alive=keep_alive)
    port = free_port()
    worker_env = {
        **os.environ,
        **env,
        "AWS_ENDPOINT_URL": await proxy.start(),
        "CHURN_HEALTH_PORT": str(port),
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": endpoint_url,
        "CHURN_SQS_WAIT_SECONDS": "1",
    }
    worker = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("churn-worker")),
        "run",
        "--json-logs",
        env=worker_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spy: asyncio.subprocess.Process | None = None
    try:
        while metrics_json(port) is None:
            if worker.returncode is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            await asyncio.sleep(0.2)
        cpu_start = cpu_seconds(worker.pid)
        if profile is not None:  # py-spy samples the worker while it works through the backlog
            spy = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(worker.pid),
                "--format",
                "raw",
                "--rate",
                "250",
                "--nonblocking",
                "--output",
                str(profile),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        last_report = started = time.monotonic()
        while not drained(outputs["QueueUrl"], metrics_json(port) or {"counters": {}}, len(live)):
            if time.monotonic() - last_report > 30:
                snapshot = metrics_json(port) or {"counters": {}}
                print(
                    f"  worker: {snapshot['counters'].get('events_in', 0):,.0f}/{len(live):,} events",
                    flush=True,
                )
                last_report = time.monotonic()
            # Polled every 2 s: answering /metrics.json (percentiles of every latency series) is the
            # benchmark's own load on the worker, a few % of its CPU at two polls a second.
            await asyncio.sleep(2.0)
        cpu = cpu_seconds(worker.pid) - cpu_start
        seconds = time.monotonic() - started
        snapshot = metrics_json(port) or {"counters": {}}
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.wait_for(spy.wait(), 60)
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 60)
        await proxy.stop()

    requests: dict[tuple[str, str], float] = {}
    for key, value in snapshot["counters"].items():
        if key.startswith("aws_requests{"):
            labels = dict(part.split("=", 1) for part in key[len("aws_requests{") : -1].split(","))
            requests[(labels["service"], labels["operation"])] = value
    ddb = aws_client("dynamodb")
    sizes: Counter[str] = Counter()
    for page in ddb.get_paginator("scan").paginate(TableName=table_name(prefix)):
        for item in page["Items"]:
            sizes[item["customer_id"]["S"]] += item_size(item)
    measured = Measured(
        events=len(live),
        requests=requests,
        rru=proxy.rru,
        wru=proxy.wru,
        cpu_seconds=cpu,
        event_bytes=sum(map(len, bodies)) / len(bodies),
        partition_bytes=sum(sizes.values()) / max(len(sizes), 1),
        events_per_customer_day=len(live) / (max(len(sizes), 1) * backlog.live_days),  # per stored customer
        producer_requests={("sqs", "SendMessageBatch"): math.ceil(len(bodies) / 10)},
        invocation_ms=snapshot.get("latency", {}).get("scoring_latency_ms", {}).get("p50", 50.0),
        rows_per_invocation=snapshot.get("latency", {}).get("batch_records", {}).get("p50", 50.0),
    )
    return measured, proxy, snapshot, seconds


def drained(queue_url: str, snapshot: dict[str, Any], events: int) -> bool:
    """Every event taken in and every message settled: the queue holds nothing, visible or not
    (moto's approximate counts are exact). Settling (the delete) is the last step of a batch."""
    if snapshot["counters"].get("events_in", 0) < events:
        return False
    attributes = aws_client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(int(value) == 0 for value in attributes.values())


def units_report(measured: Measured, proxy: RecordingProxy) -> str:
    """DynamoDB requests (of which failed: a condition, a cancelled transaction) and units per
    event, by operation and table."""
    lines = ["  DynamoDB per event, by operation and table:    requests   failed      RRU      WRU"]
    for key in sorted(proxy.calls):
        rru, wru = proxy.units.get(key, [0.0, 0.0])
        lines.append(
            f"    {key:<42} {proxy.calls[key] / measured.events:9.4f} {proxy.failed[key] / measured.events:8.4f} "
            f"{rru / measured.events:8.3f} {wru / measured.events:8.3f}"
        )
    return "\n".join(lines)


def summary(measured: Measured, proxy: RecordingProxy, snapshot: dict[str, Any], seconds: float) -> str:
    """The figures the cost targets are set for, and what they depend on: the pipeline batches' sizes,
    and the index Queries of the background loops (the re-scoring sweeper, the due gauge, the alert
    outbox sweep), which run per minute, not per event, so they weigh more the slower the run."""
    total = sum(measured.requests.values()) / measured.events
    claims = proxy.claim_sizes
    background = sum(n for key, n in proxy.calls.items() if key.startswith("Query") and " index " in key)
    batches = snapshot.get("latency", {}).get("batch_records", {})
    published = sum(
        n
        for key, n in snapshot["counters"].items()
        if key.split("{", 1)[0] in ("alerts_published", "alerts_withheld")
    )
    # The alert path's requests: claims (and the lookups and take-overs of refused ones), sent marks
    # and the SNS publishes. Not the churn path's (a churn's PutItem of its marker and Query of the
    # customer's records) nor the outbox sweep's index Queries (per minute, not per alert).
    alert_requests = sum(
        n
        for key, n in proxy.calls.items()
        if key.split(" ")[:2]
        in (
            ["TransactWriteItems", "alerts"],
            ["UpdateItem", "alerts"],
            ["GetItem", "alerts"],
            ["BatchExecuteStatement", "alerts"],
        )
    ) + sum(n for (service, _), n in measured.requests.items() if service == "sns")
    return (
        f"  worker CPU {measured.cpu_seconds / measured.events * 1000:.2f} ms per event (target <= 1.5, alert-heavy "
        f"<= 2.0); AWS requests {total:.3f} per event (target <= 0.6); DynamoDB {measured.rru / measured.events:.3f} RRU, "
        f"{measured.wru / measured.events:.3f} WRU per event (target <= 2.0)\n"
        f"  of the requests, background index Queries: {background / measured.events:.3f} per event "
        f"({background * 60 / seconds:.0f} a minute over {seconds:.0f} s); pipeline batches: "
        f"{batches.get('count', 0):.0f}, p50 {batches.get('p50', 0):.0f} records\n"
        f"  alerts published (both arms): {published:.0f}, {published / measured.events:.3f} per event; the alert "
        f"path's requests (ledger table, SNS): {alert_requests / max(published, 1):.2f} per published alert "
        "(target <= 2)\n"
        f"  alert claim items put: {len(claims)}, {statistics.fmean(claims or [0]):.0f} bytes on average, "
        f"{max(claims or [0])} at most, {sum(c > 1024 for c in claims)} over 1 KB (2 write units, 4 in a transaction)"
    )


async def main(args: argparse.Namespace, endpoint_url: str) -> None:
    for name in args.backlog:
        backlog = BACKLOGS[name]
        for keep_alive in (
            (True, False) if args.connections == "both" else (args.connections == "keep-alive",)
        ):
            profile = (
                args.profile.with_name(f"{args.profile.stem}-{name}{args.profile.suffix}")
                if args.profile
                else None
            )
            measured, proxy, snapshot, seconds = await measure(endpoint_url, backlog, keep_alive, profile)
            print(
                f"\n-- {backlog}: {measured.events:,} events, connections "
                f"{'kept alive' if keep_alive else 'closed after each request'} --"
            )
            print(summary(measured, proxy, snapshot, seconds))
            print(units_report(measured, proxy))
            if keep_alive:
                print(report(measured))
            print(flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backlog",
        nargs="+",
        choices=sorted(BACKLOGS),
        default=["large", "small"],
        help="which backlogs to measure (default: both)",
    )
    parser.add_argument(
        "--connections",
        choices=("keep-alive", "close", "both"),
        default="both",
        help="keep the worker's connections alive (as AWS does), close them after each "
        "request (as moto's server does), or measure both (default)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the worker into this raw file (collapsed stacks)"
    )
    arguments = parser.parse_args()
    bundle = ensure_default_bundle(progress=True)
    moto = ChildServer([sys.executable, "-m", "localaws", "--port", "0"], "moto")
    endpoint = ChildServer(
        [str(Path(sys.executable).with_name("churn-model")), "serve", "--bundle", str(bundle), "--port", "0"],
        "model endpoint",
    )
    try:
        use_local_aws(moto.url)
        asyncio.run(main(arguments, endpoint.url))
    finally:
        endpoint.stop()
        moto.stop()
