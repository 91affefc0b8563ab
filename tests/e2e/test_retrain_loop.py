"""The improvement loop's offline half as whole processes on moto's server over HTTP: a log from the
second generator archived to S3 by the worker's archive writer (a redelivered batch written twice),
`churn-worker outcomes` over the archive, `churn-model train --events s3://...`, then `churn-model
retrain`: outcomes, training, the promotion gate against the incumbent and a deploy to moto's
SageMaker when the candidate passes; and, run with nothing but the scheduled task's environment, the
refusal: a candidate worse than the deployed model is stored with its failed gate, not deployed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiobotocore.session import get_session

from features.churn_outcomes import load_outcomes
from features.events import validate_event
from model.altsim import generate, write_log
from tests.e2e.conftest import BIN, base_env
from worker.archive import S3EventArchive

# Trains three small models and runs five commands in subprocesses: about 1.5 minutes alone, 2.5 in
# the full suite, and over 5 (the default timeout) once on a slowed machine: the same allowance as
# the journey's, so a slow neighbour costs time, not a failed run.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
BATCH = 2_000  # events per archive write, as a worker's batches would land
# Small and quick, and the same for the incumbent and the passing candidate: same seed, same data,
# same weights, so the gate's verdict on them is certain (every difference 0).
TRAINING = ["--epochs", "4", "--max-train-rows", "6000", "--no-evaluate", "--no-baselines"]


def run(command: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(BIN / command), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), (
        f"{command} {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    )
    return done


def last_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def archive(events: list[dict[str, Any]], uri: str, endpoint: str) -> int:
    valid = [validate_event(body) for body in events]
    session = get_session()
    async with session.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="e2e",
        aws_secret_access_key="e2e",
    ) as client:
        writer = S3EventArchive(client, uri, writer="worker-1")
        batches = [valid[i : i + BATCH] for i in range(0, len(valid), BATCH)]
        for batch in batches:
            await writer.write(batch)
        await writer.write(batches[3])  # a redelivered batch: archived a second time
    return len(valid)


def test_outcomes_train_and_retrain_deploy_only_what_passes_the_gate(
    moto_process: str, tmp_path: Path
) -> None:
    env = {**base_env(), "AWS_ENDPOINT_URL": moto_process}
    name = f"e2e{uuid.uuid4().hex[:8]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_process,
        region_name="us-east-1",
        aws_access_key_id="e2e",
        aws_secret_access_key="e2e",
    )
    sagemaker = boto3.client(
        "sagemaker",
        endpoint_url=moto_process,
        region_name="us-east-1",
        aws_access_key_id="e2e",
        aws_secret_access_key="e2e",
    )
    for bucket in (f"{name}-archive", f"{name}-models"):
        s3.create_bucket(Bucket=bucket)
    archive_uri, endpoint, models = f"s3://{name}-archive/events/", f"{name}-churn", f"{name}-models"
    log = generate(300, 70, seed=3)
    truth = write_log(log, tmp_path / "truth")["outcomes"]
    archived = asyncio.run(archive(log.events, archive_uri, moto_process))

    # 1. Who churned, from the archive alone: the generator's own outcomes, duplicates counted once.
    outcomes = tmp_path / "outcomes.jsonl"
    summary = last_json(
        run("churn-worker", "outcomes", "--events", archive_uri, "--out", str(outcomes), "--json", env=env)
    )
    assert summary["events"] == archived + BATCH and summary["customers"] == 300
    derived, expected = load_outcomes(outcomes), load_outcomes(truth)
    assert derived.churned_at_us == expected.churned_at_us and summary["churned"] > 0

    # 2. The incumbent: trained on the archive with those outcomes.
    incumbent = tmp_path / "incumbent"
    trained = last_json(
        run(
            "churn-model",
            "train",
            "--events",
            archive_uri,
            "--outcomes",
            str(outcomes),
            "--out",
            str(incumbent),
            *TRAINING,
            "--quiet",
            "--json",
            env=env,
        )
    )
    version = trained["model_version"]

    # 3. Retrain against it: the same model, so not worse; no endpoint yet, so it is created.
    passed = run(
        "churn-model",
        "retrain",
        "--events",
        archive_uri,
        "--incumbent",
        str(incumbent),
        "--endpoint",
        endpoint,
        "--bucket",
        models,
        "--role-arn",
        ROLE,
        *TRAINING,
        "--rounds",
        "50",
        # A test-sized log: 9 churners among the gate's customers; the defaults (20) would not judge.
        "--min-positives",
        "5",
        "--min-negatives",
        "5",
        "--json",
        env=env,
    )
    result = last_json(passed)
    assert passed.returncode == 0, passed.stderr[-3000:]
    assert result["deployed"] is True
    assert result["gate"] == {"passed": True, "failed": [], "cannot_judge": {}}
    assert result["model_version"] == result["incumbent_version"] == version
    assert "PASS: the candidate is not worse" in passed.stderr
    deployed_config = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    model_name = sagemaker.describe_endpoint_config(EndpointConfigName=deployed_config)["ProductionVariants"][
        0
    ]["ModelName"]
    model_data = sagemaker.describe_model(ModelName=model_name)["PrimaryContainer"]["ModelDataUrl"]
    assert model_data == f"s3://{models}/churn-model/{version}/model.tar.gz"
    stored = tmp_path / "stored.tar.gz"
    s3.download_file(Bucket=models, Key=f"churn-model/{version}/bundle.tar.gz", Filename=str(stored))
    with tarfile.open(stored) as tar:
        gate = json.load(tar.extractfile("gate.json"))  # type: ignore[arg-type]
        assert {"model.keras", "metadata.json", "training_customers.txt.gz"} <= set(tar.getnames())
    assert gate["passed"] and gate["candidate_version"] == version

    # 4. The scheduled task: no options, only its environment. A barely trained candidate is worse
    # than the model it finds behind the endpoint: stored with its failed gate, not deployed.
    task_env = {
        **env,
        "CHURN_ARCHIVE_S3_URI": archive_uri,
        "CHURN_ENDPOINT_NAME": endpoint,
        "CHURN_MODEL_BUCKET": models,
        "CHURN_SAGEMAKER_ROLE_ARN": ROLE,
    }
    refused = run(
        "churn-model",
        "retrain",
        "--epochs",
        "1",
        "--learning-rate",
        "1e-7",
        "--max-train-rows",
        "6000",
        "--no-evaluate",
        "--no-baselines",
        "--rounds",
        "50",
        env=task_env,
    )
    assert refused.returncode == 1, refused.stderr[-3000:]
    summary_line = refused.stdout.strip().splitlines()[-1]
    assert summary_line.startswith("retrain: NOT DEPLOYED: model ") and f"against {version}" in summary_line
    assert f"endpoint {endpoint} unchanged" in summary_line
    assert f"incumbent: s3://{models}/churn-model/{version}/bundle.tar.gz" in refused.stderr
    assert sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"] == deployed_config
    worse = summary_line.split("model ", 1)[1].split(" ", 1)[0]
    assert worse != version
    keys = {
        o["Key"]
        for o in s3.list_objects_v2(Bucket=models, Prefix=f"churn-model/{worse}/").get("Contents", [])
    }
    assert keys == {f"churn-model/{worse}/bundle.tar.gz"}  # kept for a look, never packaged for the endpoint
