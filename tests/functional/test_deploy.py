"""`churn-model deploy` end to end against moto's server (S3 and SageMaker over HTTP).

moto implements create/describe for models, endpoint configs and endpoints but not UpdateEndpoint,
so the blue/green update is checked with a botocore `before-call` hook that records the call and
answers it, while everything around it (upload, new model, new config) still goes to moto. (moto
also drops a model's EnableNetworkIsolation; tests/unit/test_deploy_requests.py checks every request
on a stubbed client, network isolation included.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from cli.model import main
from model.bundle import load_bundle
from model.deploy import DeployRequest, deploy, image_uri
from model.exceptions import UsageError
from model.export import build_package

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def package(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = load_bundle(tiny_bundle)
    out = tmp_path_factory.mktemp("deploy") / "model.tar.gz"
    return build_package(bundle.saved_model_dir, {**bundle.spec, "model_version": bundle.model_version}, out)


@pytest.fixture
def bucket(aws_endpoint: str, unique_prefix: str) -> str:
    name = f"{unique_prefix}models"
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_deploy_creates_model_config_and_endpoint(
    package: Path, tiny_bundle: Path, bucket: str, unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"{unique_prefix}endpoint"
    code = main(
        [
            "deploy",
            "--package",
            str(package),
            "--bucket",
            bucket,
            "--role-arn",
            ROLE,
            "--endpoint-name",
            endpoint,
            "--instance-type",
            "ml.c5.large",
            "--instance-count",
            "2",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    version = load_bundle(tiny_bundle).model_version
    assert result["action"] == "created"
    assert result["model_data_url"] == f"s3://{bucket}/churn-model/{version}/model.tar.gz"

    s3 = boto3.client("s3", region_name="us-east-1")
    assert (
        s3.head_object(Bucket=bucket, Key=f"churn-model/{version}/model.tar.gz")["ContentLength"]
        == package.stat().st_size
    )
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    model = sagemaker.describe_model(ModelName=result["model_name"])
    assert (
        model["PrimaryContainer"]["Image"]
        == "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.20-cpu-py312"
    )
    assert model["PrimaryContainer"]["ModelDataUrl"] == result["model_data_url"]
    assert model["ExecutionRoleArn"] == ROLE
    config = sagemaker.describe_endpoint_config(EndpointConfigName=result["endpoint_config_name"])
    [variant] = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        result["model_name"],
        "ml.c5.large",
        2,
    )
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    assert described["EndpointConfigName"] == result["endpoint_config_name"]


def test_deploy_serverless_creates_a_serverless_variant(
    package: Path, bucket: str, unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"{unique_prefix}serverless"
    code = main(
        [
            "deploy",
            "--package",
            str(package),
            "--bucket",
            bucket,
            "--role-arn",
            ROLE,
            "--endpoint-name",
            endpoint,
            "--serverless",
            "--memory-mb",
            "3072",
            "--max-concurrency",
            "20",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["serverless"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 20}
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=result["endpoint_config_name"])
    [variant] = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 20}
    assert "InstanceType" not in variant


def test_redeploy_is_a_blue_green_update_to_a_new_config(
    package: Path, bucket: str, unique_prefix: str
) -> None:
    endpoint = f"{unique_prefix}endpoint"
    s3 = boto3.client("s3", region_name="us-east-1")
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    request = DeployRequest(
        package=package,
        model_version="2026-11-27-aaaaaa",
        endpoint_name=endpoint,
        bucket=bucket,
        role_arn=ROLE,
    )
    first = deploy(request, s3, sagemaker, "us-east-1", lambda _: None)

    updates: list[dict[str, Any]] = []

    def answer_update_endpoint(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        updates.append(json.loads(params["body"]))
        return AWSResponse("", 200, {}, None), {
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{endpoint}"
        }

    sagemaker.meta.events.register("before-call.sagemaker.UpdateEndpoint", answer_update_endpoint)
    second = deploy(
        DeployRequest(**{**request.__dict__, "model_version": "2026-11-28-bbbbbb"}),
        s3,
        sagemaker,
        "us-east-1",
        lambda _: None,
    )

    assert first.action == "created"
    assert second.action == "updated"
    assert second.previous_endpoint_config_name == first.endpoint_config_name
    # RetainAllVariantProperties: the instance count autoscaling set stays (not the new config's)
    assert updates == [
        {
            "EndpointName": endpoint,
            "EndpointConfigName": second.endpoint_config_name,
            "RetainAllVariantProperties": True,
        }
    ]
    new_config = sagemaker.describe_endpoint_config(EndpointConfigName=second.endpoint_config_name)
    assert new_config["ProductionVariants"][0]["ModelName"] == second.model_name
    # The old config and model stay: they are the rollback target.
    assert sagemaker.describe_endpoint_config(EndpointConfigName=first.endpoint_config_name)
    assert sagemaker.describe_model(ModelName=first.model_name)
    assert "2026-11-28-bbbbbb" in second.model_name


def test_missing_bucket_fails_with_one_line(
    package: Path, aws_endpoint: str, unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["deploy", "--package", str(package), "--bucket", f"{unique_prefix}absent", "--role-arn", ROLE]
    )
    assert code == 1
    *progress, error = capsys.readouterr().err.splitlines()
    assert error.startswith("churn-model: error: upload to s3://")
    assert f"{unique_prefix}absent" in error and "NoSuchBucket" in error
    assert all("Traceback" not in line for line in progress)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role-arn", "SageMakerRole"], "not an IAM role ARN"),
        (["--role-arn", ROLE, "--endpoint-name", "bad_name!"], "endpoint name"),
        (["--role-arn", ROLE, "--package", "/nonexistent/model.tar.gz"], "no package at"),
    ],
)
def test_bad_options_exit_2(
    package: Path, aws_endpoint: str, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["deploy", "--bucket", "whatever"]
    if "--package" not in args:
        base += ["--package", str(package)]
    assert main(base + args) == 2
    assert says in capsys.readouterr().err


def test_image_uri_by_region() -> None:
    assert (
        image_uri("eu-west-1", "2.16")
        == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-inference:2.16-cpu"
    )
    # from 2.20 on, AWS publishes the TF Serving images only with the Python version in the tag
    assert image_uri("eu-west-1", "2.20").endswith("/tensorflow-inference:2.20-cpu-py312")
    assert image_uri("cn-north-1", "2.13").endswith(".amazonaws.com.cn/tensorflow-inference:2.13-cpu")
    assert image_uri("af-south-1").startswith("626614931356.")
    with pytest.raises(UsageError, match="--image-uri"):
        image_uri("xx-nowhere-1")


def recorded_updates(sagemaker: Any, endpoint: str) -> list[dict[str, Any]]:
    """Answer UpdateEndpoint (moto has none) and record what was asked."""
    updates: list[dict[str, Any]] = []

    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        updates.append(json.loads(params["body"]))
        return AWSResponse("", 200, {}, None), {
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{endpoint}"
        }

    sagemaker.meta.events.register("before-call.sagemaker.UpdateEndpoint", answer)
    return updates


def test_a_redeploy_keeps_the_live_models_vpc_key_role_and_instances(
    package: Path, bucket: str, unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The endpoint as infra/model-endpoint.yaml makes it (a VPC, the data key, its own role, an
    instance type of its own): a deploy given none of them keeps them all."""
    endpoint = f"{unique_prefix}endpoint"
    s3 = boto3.client("s3", region_name="us-east-1")
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    role = "arn:aws:iam::123456789012:role/churn-model-ExecutionRole-LIVE"
    key = "arn:aws:kms:us-east-1:123456789012:key/0b5c1f6e-0000-4000-8000-000000000001"
    vpc = {"SecurityGroupIds": ["sg-0c"], "Subnets": ["subnet-0a", "subnet-0b"]}
    sagemaker.create_model(
        ModelName=f"{endpoint}-v1",
        ExecutionRoleArn=role,
        PrimaryContainer={
            "Image": image_uri("us-east-1"),
            "ModelDataUrl": f"s3://{bucket}/churn-model/v1/model.tar.gz",
        },
        VpcConfig=vpc,
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{endpoint}-v1",
        KmsKeyId=key,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{endpoint}-v1",
                "InstanceType": "ml.c5.large",
                "InitialInstanceCount": 2,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-v1")
    updates = recorded_updates(sagemaker, endpoint)
    said: list[str] = []
    result = deploy(
        DeployRequest(package=package, model_version="v2", endpoint_name=endpoint, bucket=bucket),
        s3,
        sagemaker,
        "us-east-1",
        said.append,
    )
    model = sagemaker.describe_model(ModelName=result.model_name)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=result.endpoint_config_name)
    assert model["ExecutionRoleArn"] == role and model["VpcConfig"] == vpc
    assert config["KmsKeyId"] == key
    [variant] = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.large", 2)
    assert [u["RetainAllVariantProperties"] for u in updates] == [True]
    assert any(line.startswith(f"keeping what protects model {endpoint}-v1") for line in said), said


def test_deploy_without_a_role_and_no_live_model_is_exit_2(
    package: Path, bucket: str, unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["deploy", "--package", str(package), "--bucket", bucket, "--endpoint-name", f"{unique_prefix}new"]
    )
    assert code == 2
    assert "--role-arn is needed" in capsys.readouterr().err
