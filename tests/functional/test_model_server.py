"""The local endpoint with a real boto3 sagemaker-runtime client, and `churn-model serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from features.registry import FEATURE_HASH, FEATURE_NAMES
from model.server import LocalEndpoint

ROOT = Path(__file__).resolve().parents[2]
ROW = [float(i % 7) for i in range(len(FEATURE_NAMES))]


@pytest.fixture
def runtime(tiny_endpoint: LocalEndpoint) -> object:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=tiny_endpoint.url,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def invoke(runtime: object, body: bytes | str, content_type: str = "application/json") -> dict:
    response = runtime.invoke_endpoint(  # type: ignore[attr-defined]
        EndpointName="churn-health",
        ContentType=content_type,
        Accept="application/json",
        Body=body,
    )
    assert response["ContentType"] == "application/json"
    return json.loads(response["Body"].read())


def check_prediction(p: dict) -> None:
    assert 0 <= p["first_session_success_prob"] <= 1
    assert 0 <= p["churn_risk_14d"] <= 1
    assert 0 <= p["churn_risk_30d"] <= 1
    assert 0 <= p["customer_health_score"] <= 100
    assert isinstance(p["predicted_session_velocity"], float)
    assert len(p["supply_demand_scores"]) == 20
    assert len(p["feature_importance"]) == 10
    assert all(item["feature"] in FEATURE_NAMES for item in p["feature_importance"])
    importances = [item["importance"] for item in p["feature_importance"]]
    assert importances == sorted(importances, reverse=True)
    assert p["feature_hash"] == FEATURE_HASH


def test_seed_form_returns_one_prediction(runtime: object) -> None:
    result = invoke(runtime, json.dumps({"features": ROW}))
    check_prediction(result)


def test_named_features_give_the_same_answer_as_the_list(runtime: object) -> None:
    named = invoke(runtime, json.dumps({"features": dict(zip(FEATURE_NAMES, ROW, strict=True))}))
    listed = invoke(runtime, json.dumps({"features": ROW}))
    assert named == listed


def test_batch_returns_predictions_in_order(runtime: object) -> None:
    rows = [ROW, [0.0] * len(FEATURE_NAMES), ROW]
    result = invoke(runtime, json.dumps({"instances": rows}))
    assert len(result["predictions"]) == 3
    for p in result["predictions"]:
        check_prediction(p)
    assert result["predictions"][0] == result["predictions"][2]
    single = invoke(runtime, json.dumps({"features": [0.0] * len(FEATURE_NAMES)}))
    assert single["churn_risk_30d"] == pytest.approx(result["predictions"][1]["churn_risk_30d"], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        ("1,2,3", "text/csv", 415, "unsupported content type"),
        ("{not json", "application/json", 400, "not valid JSON"),
        ('{"features": [NaN' + ", 0" * 149 + "]}", "application/json", 400, "NaN"),
        ('{"features": [Infinity' + ", 0" * 149 + "]}", "application/json", 400, "Infinity"),
        (json.dumps({"features": [0] * 10}), "application/json", 400, "this model takes 150"),
        (json.dumps({"features": {"session_count_7d": 1}}), "application/json", 400, "lacks features"),
        (json.dumps({"features": {"nope": 1}}), "application/json", 400, "unknown feature names: nope"),
    ],
)
def test_bad_requests_are_model_errors_with_a_4xx(
    runtime: object, body: str, content_type: str, status: int, says: str
) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(runtime, body, content_type)
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert says in error["Error"]["Message"]


def test_plain_http_routes(tiny_endpoint: LocalEndpoint) -> None:
    with urllib.request.urlopen(f"{tiny_endpoint.url}/ping") as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"
    request = urllib.request.Request(
        f"{tiny_endpoint.url}/invocations",
        data=json.dumps({"features": ROW}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        check_prediction(json.loads(response.read()))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{tiny_endpoint.url}/nowhere")
    assert caught.value.code == 404
    assert "error" in json.loads(caught.value.read())


def test_serve_command_prints_ready_line_and_stops_on_sigterm(tiny_bundle: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.model", "serve", "--bundle", str(tiny_bundle), "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "listening on http://127.0.0.1:" in line, process.stderr.read()  # type: ignore[union-attr]
        url = line.split("listening on ", 1)[1].strip()
        with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
