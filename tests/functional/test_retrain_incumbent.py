"""How `churn-model retrain` finds the model to beat, on moto's S3 and SageMaker over HTTP: the
model behind an endpoint, from the bundle retraining stored beside its package or, for a model
`churn-model deploy` put there alone, from the package (scoring exactly as the bundle does); no
endpoint, no incumbent; a package of another feature registry refused. And the job's bad usage
refused with exit 2 before any training, its defaults taken from the scheduled task's environment."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
import pytest

from cli.model import build_parser, main
from features.registry import FEATURE_NAMES
from jobs.incumbent import bundle_from_package, fetch_incumbent, find_deployed, store_bundle
from model.bundle import load_bundle, training_customers
from model.exceptions import BundleMismatchError
from model.export import build_package

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture
def models(aws_endpoint: str, unique_prefix: str) -> str:
    name = f"{unique_prefix}models"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _scores(bundle: object, rows: np.ndarray) -> np.ndarray:
    return np.asarray(bundle.serving_fn()(features=rows)["churn_risk_30d"])  # type: ignore[attr-defined]


def test_the_deployed_models_package_scores_as_its_bundle(
    tiny_bundle: Path, models: str, unique_prefix: str, tmp_path: Path
) -> None:
    endpoint = f"{unique_prefix}churn"
    assert (
        main(
            [
                "deploy",
                "--bundle",
                str(tiny_bundle),
                "--bucket",
                models,
                "--role-arn",
                ROLE,
                "--endpoint-name",
                endpoint,
            ]
        )
        == 0
    )
    s3, sagemaker = (
        boto3.client("s3", region_name="us-east-1"),
        boto3.client("sagemaker", region_name="us-east-1"),
    )
    deployed = find_deployed(sagemaker, endpoint)
    assert deployed is not None
    original = load_bundle(tiny_bundle)
    assert deployed.model_data_url == f"s3://{models}/churn-model/{original.model_version}/model.tar.gz"

    said: list[str] = []
    incumbent, whole = fetch_incumbent(s3, deployed, tmp_path, said.append)
    assert not whole and "compared from its package" in said[0]
    assert incumbent.model_version == original.model_version and training_customers(incumbent) == frozenset()
    rows = np.random.default_rng(1).gamma(2.0, 1.0, size=(16, len(FEATURE_NAMES))).astype(np.float32)
    np.testing.assert_allclose(_scores(incumbent, rows), _scores(original, rows), rtol=1e-6)

    # Once retraining stored the bundle beside the package, that is what the next gate compares with.
    url = store_bundle(s3, tiny_bundle, models, "churn-model", original.model_version, tmp_path)
    assert url == f"s3://{models}/churn-model/{original.model_version}/bundle.tar.gz"
    again, whole = fetch_incumbent(s3, deployed, tmp_path / "again", said.append)
    assert whole and again.model_version == original.model_version and (again.path / "model.keras").exists()


def test_no_endpoint_no_incumbent(aws_endpoint: str, unique_prefix: str) -> None:
    assert find_deployed(boto3.client("sagemaker", region_name="us-east-1"), f"{unique_prefix}absent") is None


def test_a_package_of_another_feature_registry_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    package = build_package(
        bundle.saved_model_dir,
        {**bundle.spec, "model_version": bundle.model_version, "feature_hash": "0000dead"},
        tmp_path / "model.tar.gz",
    )
    with pytest.raises(BundleMismatchError, match="0000dead"):
        bundle_from_package(package, tmp_path / "incumbent")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--no-deploy"], "no events: pass --events"),
        (["--events", "s3://archive/events/"], "deploying needs --bucket and --role-arn"),
        (
            ["--events", "s3://archive/events/", "--bucket", "b", "--role-arn", "SageMakerRole"],
            "not an IAM role ARN",
        ),
    ],
)
def test_bad_usage_is_refused_before_any_work(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", *args]) == 2
    [error] = capsys.readouterr().err.strip().splitlines()
    assert error.startswith("churn-model: error: ") and says in error


def test_the_scheduled_tasks_environment_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_ARCHIVE_S3_URI", "s3://archive/events/")
    monkeypatch.setenv("CHURN_ENDPOINT_NAME", "churn-live")
    monkeypatch.setenv("CHURN_MODEL_BUCKET", "models")
    monkeypatch.setenv("CHURN_SAGEMAKER_ROLE_ARN", ROLE)
    args = build_parser().parse_args(["retrain"])
    assert (args.events, args.endpoint, args.bucket, args.role_arn, args.deploy) == (
        ["s3://archive/events/"],
        "churn-live",
        "models",
        ROLE,
        True,
    )


def test_an_incumbent_of_another_registry_stops_the_job_before_it_trains(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    spec = json.loads((other / "feature_spec.json").read_text())
    (other / "feature_spec.json").write_text(json.dumps({**spec, "feature_hash": "0000dead"}))
    # The events do not exist: the incumbent is refused before anything reads them.
    assert (
        main(["retrain", "--events", str(tmp_path / "absent"), "--incumbent", str(other), "--no-deploy"]) == 2
    )
    [error] = capsys.readouterr().err.strip().splitlines()
    assert "the incumbent cannot be scored with this code's features" in error and "--force" in error


@pytest.mark.slow  # trains a one-epoch model on a small log
def test_no_model_at_the_endpoint_deploys_the_first(
    models: str, unique_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from model.altsim import generate, write_log

    log = write_log(generate(300, 70, seed=3), tmp_path / "log")
    endpoint = f"{unique_prefix}first"
    code = main(
        [
            "retrain",
            "--events",
            str(log["events"]),
            "--endpoint",
            endpoint,
            "--bucket",
            models,
            "--role-arn",
            ROLE,
            "--epochs",
            "1",
            "--max-train-rows",
            "4000",
            "--no-evaluate",
            "--no-baselines",
        ]
    )
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("retrain: DEPLOYED model ") and "nothing to compare with" in line
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    assert sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]


def test_the_gate_judges_by_the_thresholds_the_worker_runs_with(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The scheduled task gets CHURN_CONFIG (infra/service.yaml ConfigS3Uri): the gate's rules are
    judged at the thresholds `tune` wrote, CHURN_ALERTS__* over them, and the job says where from.
    The new model keeps the live one's protections unless an option says otherwise."""
    from jobs import retrain

    config = tmp_path / "tuned.toml"
    config.write_text("[alerts.ib_call_spike]\nmin_calls_14d = 4\n")
    monkeypatch.setenv("CHURN_CONFIG", str(config))
    monkeypatch.setenv("CHURN_ALERTS__SESSION_VELOCITY_DROP__ENABLED", "false")
    captured: list[retrain.RetrainRequest] = []
    monkeypatch.setattr(retrain, "run_retrain", lambda request: captured.append(request) or 0)
    assert main(["retrain", "--events", "s3://archive/events/", "--no-deploy"]) == 0
    assert main(["retrain", "--events", "s3://archive/events/", "--no-deploy", "--kms-key-id", "K"]) == 0
    first, second = captured
    assert first.gate is not None and first.gate.alerts is not None
    assert first.gate.alerts.ib_call_spike.min_calls_14d == 4
    assert not first.gate.alerts.session_velocity_drop.enabled
    assert first.alerts_source == str(config)
    assert first.target.endpoint_options == {
        "instance_type": None,
        "instance_count": None,
        "network_isolation": None,
        "kms_key_id": None,
        "vpc_subnets": (),
        "vpc_security_groups": (),
        "no_vpc": False,
        "allow_weaker": False,
    }
    assert second.target.endpoint_options["kms_key_id"] == "K"
