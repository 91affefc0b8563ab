"""The local endpoint: SageMaker's invocation API in front of the bundle's SavedModel.

`POST /invocations` and `POST /endpoints/{name}/invocations` run exactly what the TensorFlow Serving
container runs: `input_handler` (model/inference.py), a TF Serving REST predict call, here served by
`LocalPredictor` from the in-process SavedModel signature, then `output_handler`. So a boto3
`sagemaker-runtime` client pointed at this server with `endpoint_url` works unchanged, and what is
tested here is what is packaged.

Errors are JSON `{"error": message}` with the handler's 4xx status (415 for another content type,
400 for a bad body) and the header `x-amzn-ErrorType: ModelError`, so boto3 raises `ModelError` as it
does for a real endpoint whose container refused a request. Nothing a client sends produces a 500.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import threading
from collections import namedtuple
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from model.bundle import Bundle
from model.inference import JSON, Handlers, RequestError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's real-time payload limit
# The fields of the TF Serving container's request context (tfs_utils.Context).
Context = namedtuple(
    "Context",
    "model_name model_version method rest_uri grpc_port channel custom_attributes request_content_type "
    "accept_header content_length",
)


@dataclass(frozen=True)
class TfsResponse:
    """What `requests.post` to TF Serving returns, as far as `output_handler` reads it: the status,
    and the body through `json()`. The body is kept as the decoded object, not re-encoded to JSON
    only for the handler to decode it again; `content` encodes it on demand."""

    status_code: int
    body: Any

    def json(self) -> Any:
        return self.body

    @property
    def content(self) -> bytes:
        return json.dumps(self.body).encode()


BLOCK_ROWS = 64  # rows per call to the signature, every call (see `LocalPredictor`)


class LocalPredictor:
    """A stand-in for TF Serving's REST `:predict` on the bundle's `serving_default` signature.

    A row's outputs depend on its own features only, not on the rows it is sent with nor on the
    process. TensorFlow's CPU kernels compute a row of a float32 matrix product differently in the
    last bits by where it sits (rows in whole blocks of the kernel's register width take one path,
    the leftover rows of a matrix whose height is not a multiple of it another, a lone row a
    matrix-vector path: up to 1e-7 in a churn probability, 1e-5 in the health score), and
    `tf.config.experimental.enable_op_determinism` (which training switches on for the rest of its
    process) selects other kernels again. So every call runs blocks of exactly BLOCK_ROWS rows, the
    last padded with zero rows whose outputs are dropped, and every process that predicts here
    switches op determinism on: the local endpoint, an in-process backtest (with or without a
    training before it) and each Dask worker of a sharded one give the same bytes."""

    def __init__(self, bundle: Bundle) -> None:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        self._tf = tf
        self.bundle = bundle
        self.fn = bundle.serving_fn()
        self.handlers = Handlers(bundle.spec)
        self.n_features = len(bundle.spec["names"])
        self.predict_array(np.zeros((1, self.n_features), np.float32))  # warm up the graph

    def predict_array(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(x), BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS]
            real = len(block)
            if real < BLOCK_ROWS:
                block = np.concatenate([block, np.zeros((BLOCK_ROWS - real, x.shape[1]), np.float32)])
            out = self.fn(features=self._tf.constant(block))
            parts.append({key: value.numpy()[:real] for key, value in out.items()})
        if len(parts) == 1:
            return parts[0]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def rest_predict(self, body: str) -> TfsResponse:
        """TF Serving's row format: `{"instances": [...]}` in, `{"predictions": [{output: value}]}` out."""
        try:
            rows = getattr(body, "instances", None)  # the input handler's rows, already validated
            x = np.asarray(json.loads(body)["instances"] if rows is None else rows, dtype=np.float32)
        except (ValueError, KeyError, TypeError) as exc:
            return TfsResponse(400, {"error": f"bad predict request: {exc}"})
        if x.ndim != 2 or x.shape[1] != self.n_features:
            message = f"features must have shape [n, {self.n_features}], got {list(x.shape)}"
            return TfsResponse(400, {"error": message})
        columns = {key: value.tolist() for key, value in self.predict_array(x).items()}
        keys = list(columns)
        rows = [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        return TfsResponse(200, {"predictions": rows})

    def invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[int, bytes, str]:
        """One invocation, as the container handles it: (status, body, content type). Never raises."""
        context = Context(
            "model",
            None,
            "predict",
            "in-process",
            None,
            None,
            None,
            content_type or JSON,
            accept or JSON,
            len(body),
        )
        try:
            processed = self.handlers.input_handler(io.BytesIO(body), context)
            result, result_type = self.handlers.output_handler(self.rest_predict(processed), context)
        except RequestError as exc:
            return exc.status, json.dumps({"error": exc.message}).encode(), JSON
        except Exception as exc:  # the endpoint must answer, whatever broke
            log.exception("invocation failed")
            return 500, json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}).encode(), JSON
        return 200, result.encode() if isinstance(result, str) else result, result_type


def _error(status: int, message: str) -> web.Response:
    body = {"error": message, "message": message, "OriginalStatusCode": status, "OriginalMessage": message}
    return web.json_response(body, status=status, headers={"x-amzn-ErrorType": "ModelError"})


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason or "error")


def make_app(predictor: LocalPredictor) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "model_version": predictor.bundle.model_version})

    async def invocations(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes: send fewer instances per request")
        loop = asyncio.get_running_loop()
        status, payload, content_type = await loop.run_in_executor(
            None, predictor.invoke, body, request.headers.get("Content-Type"), request.headers.get("Accept")
        )
        if status != 200:
            return _error(status, json.loads(payload)["error"])
        return web.Response(body=payload, status=200, content_type=content_type)

    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    app.router.add_post("/endpoints/{name}/invocations", invocations)
    return app


async def _start(predictor: LocalPredictor, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(predictor), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


async def serve(bundle: Bundle, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM or SIGINT; `on_ready(url)` once the socket accepts requests."""
    predictor = LocalPredictor(bundle)
    runner, bound = await _start(predictor, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        on_ready(f"http://{host}:{bound}")
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


class LocalEndpoint:
    """The local endpoint on a background thread, for tests, benchmarks and `churn-worker local`:

    with LocalEndpoint(load_bundle(path), port=0) as endpoint:
        boto3.client("sagemaker-runtime", endpoint_url=endpoint.url, ...)
    """

    def __init__(self, bundle: Bundle, host: str = "127.0.0.1", port: int = 0) -> None:
        self.bundle, self.host, self.port = bundle, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalEndpoint:
        predictor = LocalPredictor(self.bundle)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-endpoint", daemon=True)
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(_start(predictor, self.host, self.port), self._loop)
        self._runner, self.port = future.result(timeout=60)
        return self

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
