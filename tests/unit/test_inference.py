"""The SageMaker handlers (model/inference.py) against the endpoint contract, without TensorFlow."""

from __future__ import annotations

import io
import json
from collections import namedtuple
from typing import Any

import pytest

from features.registry import FEATURE_HASH, FEATURE_NAMES
from model.inference import Handlers, RequestError

Context = namedtuple("Context", "request_content_type accept_header")
JSON_CONTEXT = Context("application/json", "application/json")
SPEC = {"names": list(FEATURE_NAMES), "feature_hash": FEATURE_HASH, "model_version": "2026-11-27-abc123"}


@pytest.fixture
def handlers() -> Handlers:
    return Handlers(SPEC)


def tfs_body(handlers: Handlers, body: Any, context: Any = JSON_CONTEXT) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return json.loads(handlers.input_handler(io.BytesIO(raw), context))


class FakeTfsResponse:
    def __init__(self, status_code: int, payload: Any) -> None:
        self.status_code = status_code
        self.content = json.dumps(payload).encode()


def tfs_prediction(churn: float) -> dict[str, Any]:
    return {
        "first_session_success": 0.7,
        "session_velocity": 1.8,
        "churn_risk_14d": 0.6,
        "churn_risk_30d": churn,
        "supply_demand": [0.1 * i for i in range(20)],
        "health_score": 42.5,
        "top_feature_indices": [8, 14, 1, 0, 2, 3, 4, 5, 6, 7],
        "top_feature_importance": [0.45, 0.38, 0.32, 0.1, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04],
    }


def test_features_list_becomes_one_tfs_instance(handlers: Handlers) -> None:
    row = [float(i) for i in range(len(FEATURE_NAMES))]
    assert tfs_body(handlers, {"features": row}) == {"signature_name": "serving_default", "instances": [row]}


def test_features_mapping_is_put_in_registry_order(handlers: Handlers) -> None:
    mapping = {name: float(i) for i, name in reversed(list(enumerate(FEATURE_NAMES)))}
    assert tfs_body(handlers, {"features": mapping})["instances"] == [
        [float(i) for i in range(len(FEATURE_NAMES))]
    ]


def test_instances_pass_through_as_a_batch(handlers: Handlers) -> None:
    rows = [[1.0] * len(FEATURE_NAMES), [2] * len(FEATURE_NAMES)]
    assert tfs_body(handlers, {"instances": rows})["instances"] == [[1.0] * 150, [2.0] * 150]


def test_charset_parameter_is_accepted(handlers: Handlers) -> None:
    context = Context("application/json; charset=utf-8", "application/json")
    assert len(tfs_body(handlers, {"features": [0] * 150}, context)["instances"]) == 1


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-npy", "text/plain"])
def test_other_content_types_are_415(handlers: Handlers, content_type: str) -> None:
    with pytest.raises(RequestError) as caught:
        tfs_body(handlers, {"features": [0] * 150}, Context(content_type, "application/json"))
    assert caught.value.status == 415
    assert content_type in caught.value.message


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"features": [NaN' + b", 0" * 149 + b"]}", "NaN"),
        (b'{"features": [Infinity' + b", 0" * 149 + b"]}", "Infinity"),
        (b'{"features": [1e999' + b", 0" * 149 + b"]}", "not finite"),
        (b"\xff\xfe", "UTF-8"),
        ({"features": [0] * 149}, "has 149 values; this model takes 150"),
        ({"features": [0] * 151}, "has 151 values"),
        ({"features": ["1"] + [0] * 149}, "session_count_7d"),
        ({"features": [True] + [0] * 149}, "not a number"),
        ({"features": [None] + [0] * 149}, "not a number"),
        ({"features": 3}, "must be a list"),
        ({"instances": []}, "non-empty"),
        ({"instances": [[0] * 150, [0] * 3]}, "instances[1] has 3 values"),
        ({"features": [0] * 150, "instances": [[0] * 150]}, "exactly one"),
        ({}, "exactly one"),
        ([1, 2, 3], "exactly one"),
    ],
)
def test_bad_bodies_are_400_with_a_reason(handlers: Handlers, body: Any, says: str) -> None:
    with pytest.raises(RequestError) as caught:
        tfs_body(handlers, body)
    assert caught.value.status == 400
    assert says in caught.value.message


def test_missing_feature_names_are_listed(handlers: Handlers) -> None:
    mapping = {name: 0.0 for name in FEATURE_NAMES if name not in {"ib_call_count_14d", "avg_rating_7d"}}
    with pytest.raises(RequestError) as caught:
        tfs_body(handlers, {"features": mapping})
    assert caught.value.status == 400
    assert "lacks features: avg_rating_7d, ib_call_count_14d" in caught.value.message


def test_unknown_feature_names_are_refused(handlers: Handlers) -> None:
    mapping = {name: 0.0 for name in FEATURE_NAMES} | {"shoe_size": 42}
    with pytest.raises(RequestError) as caught:
        tfs_body(handlers, {"features": mapping})
    assert caught.value.status == 400
    assert "unknown feature names: shoe_size" in caught.value.message


def test_single_request_answers_one_object_with_real_feature_names(handlers: Handlers) -> None:
    tfs_body(handlers, {"features": [0] * 150})
    body, content_type = handlers.output_handler(
        FakeTfsResponse(200, {"predictions": [tfs_prediction(0.82)]}), JSON_CONTEXT
    )
    result = json.loads(body)
    assert content_type == "application/json"
    assert result["churn_risk_30d"] == pytest.approx(0.82)
    assert result["customer_health_score"] == pytest.approx(42.5)
    assert result["first_session_success_prob"] == pytest.approx(0.7)
    assert result["predicted_session_velocity"] == pytest.approx(1.8)
    assert len(result["supply_demand_scores"]) == 20
    assert result["feature_importance"][:2] == [
        {"feature": "ib_call_count_14d", "importance": 0.45},
        {"feature": "days_since_last_session", "importance": 0.38},
    ]
    assert len(result["feature_importance"]) == 10
    assert result["model_version"] == "2026-11-27-abc123"
    assert result["feature_hash"] == FEATURE_HASH


def test_instances_request_answers_predictions_even_for_one(handlers: Handlers) -> None:
    tfs_body(handlers, {"instances": [[0] * 150]})
    body, _ = handlers.output_handler(
        FakeTfsResponse(200, {"predictions": [tfs_prediction(0.1)]}), JSON_CONTEXT
    )
    result = json.loads(body)
    assert list(result) == ["predictions"]
    assert result["predictions"][0]["churn_risk_30d"] == pytest.approx(0.1)


def test_batch_keeps_order(handlers: Handlers) -> None:
    tfs_body(handlers, {"instances": [[0] * 150] * 3})
    tfs = {"predictions": [tfs_prediction(0.1), tfs_prediction(0.2), tfs_prediction(0.3)]}
    result = json.loads(handlers.output_handler(FakeTfsResponse(200, tfs), JSON_CONTEXT)[0])
    assert [p["churn_risk_30d"] for p in result["predictions"]] == pytest.approx([0.1, 0.2, 0.3])


def test_model_server_failure_is_reported_not_passed_on(handlers: Handlers) -> None:
    tfs_body(handlers, {"features": [0] * 150})
    with pytest.raises(RequestError) as caught:
        handlers.output_handler(FakeTfsResponse(500, {"error": "OOM"}), JSON_CONTEXT)
    assert caught.value.status == 502
    assert "OOM" in caught.value.message
