"""A fault-injecting HTTP reverse proxy for the fault-injection suite.

It sits on 127.0.0.1 in front of moto's server (workers get `AWS_ENDPOINT_URL=<proxy>`) or in front
of the local model endpoint (`AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=<proxy>`), and can, per AWS
operation, do what a client cannot tell from the real thing:

- `throttle`   answer with the service's own throttling error (status and body shape botocore parses
               into the real error code): DynamoDB and Kinesis `ProvisionedThroughputExceededException`
               (400), SQS and SNS `Throttling` (400), SageMaker `ThrottlingException` (429);
- `error`      a 5xx in the service's shape (500 `InternalServerError`/`InternalFailure`,
               503 `ServiceUnavailable`);
- `latency`    wait `delay` seconds, then forward;
- `reset`      close the connection without forwarding (the request was never applied);
- `drop`       forward, then close the connection without answering: **the request was applied**
               but the client never hears so (it retries, or gives up, not knowing);
- `txn_throttle` (DynamoDB TransactWriteItems) `TransactionCanceledException` whose reason is
               `ThrottlingError`: what DynamoDB answers when a transaction is throttled;
- `respond`    answer `status` with `body` (JSON) without forwarding, e.g. a model's 4xx `ModelError`;
- `corrupt`    forward, then hand the client `rewrite(body)` instead of the answer (Python only), e.g.
               predictions outside the endpoint contract.

A fault can also require `body_contains` (bytes of the request body), e.g. only the lease table's
checkpoint writes among DynamoDB UpdateItems.

Always on, because moto does not do it and AWS does:
- DynamoDB refuses a Number of more than 38 significant digits (`ValidationException`); moto stores
  a 56-digit Kinesis sequence number as N without a word.
- DynamoDB `TransactWriteItems` with a `ClientRequestToken` is idempotent for 10 minutes: the same
  token and request again succeed without applying twice, the same token with another request is
  `IdempotentParameterMismatchException`. moto ignores the token.

An operation is named `<service>:<Operation>`: the `X-Amz-Target` header for JSON APIs
(`dynamodb:TransactWriteItems`, `kinesis:GetRecords`, `sqs:ReceiveMessage`), the `Action` form field
for query APIs (`sns:Publish`), the path for SageMaker (`sagemaker:InvokeEndpoint`). Faults match
operation globs (`dynamodb:*`, `*`).

Faults change at run time: from the test (`proxy.set_faults(...)`, thread-safe) or over HTTP
(`POST /__faults__` with a JSON list of faults, `GET /__faults__` for the counters), so a scenario
can break a service mid-run and mend it. A fault may carry an `on_hit` callback (Python only), run
when it fires and, for `drop`, after the request was applied: the suite kills a worker there
("crash after the publish, before mark-sent").

The proxy runs on its own thread and event loop; upstream calls go through one aiohttp session.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import random
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.faults.aws_shapes import TransactionTokens, dynamodb_refusal, error_response

KINDS = ("throttle", "error", "latency", "reset", "drop", "txn_throttle", "respond", "corrupt")
ADMIN_PATH = "/__faults__"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_SAGEMAKER_PATH = re.compile(r"^/endpoints/[^/]+/invocations|^/invocations")


@dataclass
class Fault:
    operation: str  # a glob over "<service>:<Operation>"
    kind: str
    probability: float = 1.0  # of each matching request
    times: int | None = None  # fire at most this many times (None: no limit)
    skip: int = 0  # let this many matching requests through first
    delay: float = 0.0  # seconds, for `latency`
    status: int = 500  # for `error`: 500 or 503; for `respond`: any
    body: Any = None  # for `respond`: the JSON body
    body_contains: bytes | None = None  # only requests whose body holds these bytes
    on_hit: Callable[[str], None] | None = None  # called with the operation when the fault fires
    rewrite: Callable[[bytes], bytes] | None = None  # for `corrupt`
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {self.kind!r}")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        known = {"operation", "kind", "probability", "times", "skip", "delay", "status", "body"}
        fault = cls(**{key: value for key, value in data.items() if key in known})
        if data.get("body_contains"):
            fault.body_contains = str(data["body_contains"]).encode()
        return fault


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return ""


def operation_of(request: _Request) -> str:
    """`<service>:<Operation>` of an AWS request, as the proxy's faults name it."""
    path = urllib.parse.urlsplit(request.target).path
    if _SAGEMAKER_PATH.match(path):
        return "sagemaker:InvokeEndpoint"
    target = request.header("x-amz-target")
    if target:  # DynamoDB_20120810.Query, Kinesis_20131202.GetRecords, AmazonSQS.ReceiveMessage
        prefix, _, operation = target.partition(".")
        service = {"amazonsqs": "sqs"}.get(prefix.lower(), prefix.split("_")[0].lower())
        return f"{service}:{operation}"
    match = _CREDENTIAL_SCOPE.search(request.header("authorization"))
    service = match.group(1) if match else "unknown"
    if request.method == "POST" and request.body:
        action = urllib.parse.parse_qs(request.body.decode("utf-8", "replace")).get("Action", [""])[0]
        if action:
            return f"{service}:{action}"
    return f"{service}:{request.method} {path}"


class FaultProxy:
    """`with FaultProxy("http://127.0.0.1:5000") as proxy: proxy.url ...`"""

    def __init__(
        self, upstream: str, seed: int = 7, rewrite: Callable[[str, bytes], bytes] | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._rewrite = rewrite  # applied to every successful upstream answer: (operation, body) -> body
        self.url = ""
        self.requests: Counter[str] = Counter()  # per operation, every request seen
        self.injected: Counter[str] = Counter()  # per "operation kind", faults fired
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tokens = TransactionTokens()

    # --- control (any thread) --------------------------------------------------------------------

    def set_faults(self, *faults: Fault) -> None:
        """Replace every fault (none: a transparent proxy)."""
        with self._lock:
            self._faults = list(faults)

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        self.set_faults()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()

    def injected_total(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(n for key, n in self.injected.items() if kind is None or key.endswith(" " + kind))

    def drop_connections(self) -> None:
        """Close every client connection (a network blip); their in-flight calls fail."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._abort_all)

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def _pick(self, operation: str, body: bytes) -> Fault | None:
        with self._lock:
            self.requests[operation] += 1
            for fault in self._faults:
                if not fnmatch.fnmatchcase(operation, fault.operation):
                    continue
                if fault.body_contains is not None and fault.body_contains not in body:
                    continue
                fault.matched += 1
                if fault.matched <= fault.skip or (fault.times is not None and fault.fired >= fault.times):
                    continue
                if self._random.random() >= fault.probability:
                    continue
                fault.fired += 1
                self.injected[f"{operation} {fault.kind}"] += 1
                return fault
        return None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._close())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _start(self) -> None:
        # Generous pool, no timeout of our own: `latency` faults decide how slow the upstream looks.
        connector = aiohttp.TCPConnector(limit=256, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
        )
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=2**24)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"

    async def _close(self) -> None:
        self._abort_all()
        if self._server is not None:
            self._server.close()
        if self._session is not None:
            await self._session.close()

    # --- serving ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if request.target.startswith(ADMIN_PATH):
                    await self._admin(request, writer)
                    continue
                operation = operation_of(request)
                refusal = dynamodb_refusal(operation, request.body)
                if refusal is not None:
                    await _write_response(writer, *refusal)
                    continue
                fault = self._pick(operation, request.body)
                if fault is not None and fault.kind == "latency":
                    await asyncio.sleep(fault.delay)
                    fault = None
                if fault is not None and fault.kind == "reset":
                    _fire(fault, operation)
                    writer.transport.abort()
                    return
                if fault is not None and fault.kind == "respond":
                    _fire(fault, operation)
                    status, headers, body = (
                        fault.status,
                        [("Content-Type", "application/json")],
                        json.dumps(fault.body).encode(),
                    )
                    if fault.status >= 400 and operation.startswith("sagemaker:"):
                        headers.append(("x-amzn-ErrorType", "ModelError"))
                elif fault is not None and fault.kind not in ("drop", "corrupt"):
                    _fire(fault, operation)
                    status, headers, body = error_response(operation, fault.kind, fault.status, request.body)
                else:
                    replay = self._tokens.replay(operation, request.body)
                    if replay is not None:
                        await _write_response(writer, *replay)
                        continue
                    status, headers, body = await self._forward(request)
                    if status == 200:
                        self._tokens.applied(operation, request.body)
                        if self._rewrite is not None:
                            body = self._rewrite(operation, body)
                    if fault is not None and fault.kind == "corrupt" and fault.rewrite is not None:
                        _fire(fault, operation)
                        body = fault.rewrite(body)
                    elif fault is not None:  # drop: applied upstream, the client never hears
                        _fire(fault, operation)
                        writer.transport.abort()
                        return
                await _write_response(writer, status, headers, body)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except aiohttp.ClientError:  # the upstream is gone: the client sees a broken connection
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _forward(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP | {"content-length"}]
        async with self._session.request(
            request.method,
            self.upstream + request.target,
            headers=headers,
            data=request.body,
            skip_auto_headers={"User-Agent", "Content-Type", "Accept", "Accept-Encoding"},
            allow_redirects=False,
        ) as response:
            body = await response.read()
            out = [
                (k, v)
                for k, v in response.headers.items()
                if k.lower() not in _HOP_BY_HOP | {"content-length"}
            ]
            return response.status, out, body

    async def _admin(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        if request.method == "POST":
            faults = [Fault.from_json(item) for item in json.loads(request.body or b"[]")]
            self.set_faults(*faults)
        with self._lock:
            state = {
                "faults": [
                    {"operation": f.operation, "kind": f.kind, "fired": f.fired} for f in self._faults
                ],
                "requests": dict(self.requests),
                "injected": dict(self.injected),
            }
        await _write_response(writer, 200, [("Content-Type", "application/json")], json.dumps(state).encode())


def _fire(fault: Fault, operation: str) -> None:
    if fault.on_hit is not None:
        fault.on_hit(operation)


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)]
    request = _Request(method, target, headers, b"")
    if request.header("transfer-encoding").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        request.body = b"".join(chunks)
    else:
        request.body = await reader.readexactly(int(request.header("content-length") or 0))
    return request


async def _write_response(
    writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    reason = {
        200: "OK",
        400: "Bad Request",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Status")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        *(f"{k}: {v}" for k, v in headers),
        f"Content-Length: {len(body)}",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


@dataclass
class ProxyPair:
    """The suite's two proxies: one in front of moto, one in front of the model endpoint."""

    aws: FaultProxy
    model: FaultProxy

    def clear(self) -> None:
        for proxy in (self.aws, self.model):
            proxy.clear()
            proxy.reset_counters()
