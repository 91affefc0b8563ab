"""SageMaker TensorFlow Serving handlers: `input_handler` and `output_handler`.

This file is copied into model.tar.gz as `code/inference.py`. The container imports it, calls
`input_handler(data, context)` on each request, POSTs what it returns to TensorFlow Serving's REST
API, and passes the response to `output_handler(response, context)`. It therefore uses only the
standard library and reads the feature spec (`feature_spec.json`) from its own directory. The local
endpoint (`churn-model serve`) runs the very same functions around the in-process SavedModel.

Request (`application/json`, docs/contracts.md, The model endpoint), any of:
    {"features": [150 numbers]}                 in the feature spec's order
    {"features": {"name": value, ...}}          every name, no unknown names
    {"instances": [[150 numbers], ...]}         a batch
Response: per instance the seed's fields plus `model_version` and `feature_hash`; one object for a
`features` request, `{"predictions": [...]}` for `instances`.

Errors raise `RequestError` carrying an HTTP status (400 bad body, 415 other content type, 502 the
model server failed). The local endpoint answers with that status and `{"error": message}`; the
SageMaker container turns any handler exception into its own 500 with the same message, which the
caller sees as a `ModelError` either way.

Whether the request was a single instance travels from input to output handler in a thread-local:
the container calls both handlers in the same thread (or greenlet, under gevent) for one request.
"""

from __future__ import annotations

import json  # standard library only, and tuples in isinstance: the container may run an older Python
import math
import os
import threading
from typing import Any

JSON = "application/json"
SIGNATURE = "serving_default"
MAX_INSTANCES = 10_000
_NUMBER_TYPES = {int, float}  # exact types: bool, a subclass of int, is not a number here
TOP_K = 10


class RequestError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TfsRequest(str):
    """The TF Serving REST request body: JSON text, as the container POSTs it. `instances` keeps the
    validated rows, so an in-process stand-in for TF Serving need not decode the text again."""

    instances: list[list[float]]


def _reject_constant(name: str) -> float:
    raise RequestError(400, f"{name} is not a number: send finite numbers only")


def _media_type(content_type: str | None) -> str:
    return (content_type or JSON).split(";", 1)[0].strip().lower()


class Handlers:
    """The handlers bound to one feature spec (names in input order, hash, model version)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.names: list[str] = list(spec["names"])
        self.index = {name: i for i, name in enumerate(self.names)}
        self.feature_hash = str(spec.get("feature_hash", ""))
        self.model_version = str(spec.get("model_version", ""))
        self._local = threading.local()

    # -- input -------------------------------------------------------------------------------
    def input_handler(self, data: Any, context: Any) -> str:
        media_type = _media_type(getattr(context, "request_content_type", None))
        if media_type != JSON:
            raise RequestError(415, f"unsupported content type {media_type!r}: send application/json")
        raw = data.read() if hasattr(data, "read") else data
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(400, "body is not UTF-8 text") from None
        try:
            body = json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise RequestError(400, "body is nested too deeply") from None
        rows, single = self.parse_body(body)
        self._local.single = single
        request = TfsRequest(json.dumps({"signature_name": SIGNATURE, "instances": rows}))
        request.instances = rows
        return request

    def parse_body(self, body: Any) -> tuple[list[list[float]], bool]:
        """The instance rows of a request body, and whether it was a single-instance request."""
        if not isinstance(body, dict) or ("features" in body) == ("instances" in body):
            raise RequestError(400, 'send a JSON object with exactly one of "features" or "instances"')
        if "features" in body:
            features = body["features"]
            if isinstance(features, dict):
                return [self._row_from_mapping(features)], True
            return [self._row(features, "features")], True
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError(400, '"instances" must be a non-empty list of feature lists')
        if len(instances) > MAX_INSTANCES:
            raise RequestError(400, f'"instances" holds {len(instances)} rows; send at most {MAX_INSTANCES}')
        rows = []
        for i, instance in enumerate(instances):
            if isinstance(instance, dict):
                rows.append(self._row_from_mapping(instance, f"instances[{i}]"))
            else:
                rows.append(self._row(instance, f"instances[{i}]"))
        return rows, False

    def _row(self, values: Any, where: str) -> list[float]:
        if not isinstance(values, list):
            raise RequestError(400, f"{where} must be a list of {len(self.names)} numbers or an object")
        if len(values) != len(self.names):
            raise RequestError(
                400,
                f"{where} has {len(values)} values; this model takes {len(self.names)} "
                f"(feature hash {self.feature_hash})",
            )
        if set(map(type, values)) <= _NUMBER_TYPES:  # the common case, checked at C speed
            row = [float(value) for value in values]
            if all(map(math.isfinite, row)):
                return row
        return [self._number(value, where, i) for i, value in enumerate(values)]  # names the culprit

    def _row_from_mapping(self, mapping: dict[str, Any], where: str = "features") -> list[float]:
        unknown = sorted(set(mapping) - set(self.index))
        if unknown:
            raise RequestError(400, f"{where} has unknown feature names: {', '.join(unknown[:10])}")
        missing = [name for name in self.names if name not in mapping]
        if missing:
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise RequestError(400, f"{where} lacks features: {', '.join(missing[:10])}{more}")
        values = [mapping[name] for name in self.names]
        if set(map(type, values)) <= _NUMBER_TYPES:
            row = [float(value) for value in values]
            if all(map(math.isfinite, row)):
                return row
        return [self._number(mapping[name], where, name) for name in self.names]

    def _number(self, value: Any, where: str, key: int | str) -> float:
        label = f"{where}[{key!r}]" if isinstance(key, str) else f"{where}[{key}] ({self.names[key]})"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(400, f"{label} is {type(value).__name__}, not a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise RequestError(400, f"{label} is not finite")
        return number

    # -- output ------------------------------------------------------------------------------
    def output_handler(self, data: Any, context: Any) -> tuple[str, str]:
        single = getattr(self._local, "single", False)
        self._local.single = False
        status = getattr(data, "status_code", 200)
        if status != 200:
            content = data.content if hasattr(data, "content") else data
            if isinstance(content, (bytes, bytearray)):
                content = content.decode("utf-8", errors="replace")
            raise RequestError(
                502 if status >= 500 else 400, f"model server answered {status}: {content[:500]}"
            )
        # requests.Response.json() in the container; the local endpoint's stand-in answers the same way
        payload = data.json() if hasattr(data, "json") else json.loads(getattr(data, "content", data))
        predictions = payload["predictions"]
        results = [self.prediction(p) for p in predictions]
        body = results[0] if single and len(results) == 1 else {"predictions": results}
        return json.dumps(body), JSON

    def prediction(self, p: dict[str, Any]) -> dict[str, Any]:
        """One TensorFlow Serving prediction (named outputs) in the contract's shape."""
        importance = [
            {"feature": self.names[int(i)], "importance": float(v)}
            for i, v in zip(p["top_feature_indices"], p["top_feature_importance"], strict=True)
        ][:TOP_K]
        return {
            "first_session_success_prob": float(p["first_session_success"]),
            "predicted_session_velocity": float(p["session_velocity"]),
            "churn_risk_14d": float(p["churn_risk_14d"]),
            "churn_risk_30d": float(p["churn_risk_30d"]),
            "supply_demand_scores": [float(v) for v in p["supply_demand"]],
            "customer_health_score": float(p["health_score"]),
            "feature_importance": importance,
            "model_version": self.model_version,
            "feature_hash": self.feature_hash,
        }


_SPEC_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "feature_spec.json")
_default: Handlers | None = None
_default_lock = threading.Lock()


def _handlers() -> Handlers:
    global _default
    with _default_lock:
        if _default is None:
            with open(_SPEC_FILE, encoding="utf-8") as f:
                _default = Handlers(json.load(f))
        return _default


def input_handler(data: Any, context: Any) -> str:
    """SageMaker TF Serving pre-processing: the request body to a TF Serving REST predict body."""
    return _handlers().input_handler(data, context)


def output_handler(data: Any, context: Any) -> tuple[str, str]:
    """SageMaker TF Serving post-processing: TF Serving's response to the contract's response."""
    return _handlers().output_handler(data, context)
