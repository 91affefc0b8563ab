"""The exact SageMaker requests `churn-model deploy` (and retrain's deploy) sends, on a stubbed client
(botocore's Stubber): moto has no UpdateEndpoint and drops a model's network isolation, so what a
blue/green update asks of SageMaker is checked here, request by request.

Invariants: the live model is described before anything is uploaded or created; the new model and
config carry its network isolation, VPC config, KMS key, data capture, execution role, instance type
and desired instance count; the update keeps the variant's properties (RetainAllVariantProperties:
autoscaling's instance count is not reset to the config's); a deploy that would protect the endpoint
less is refused before any change, and said loudly when allowed; with no endpoint yet, the options
say, with network isolation on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from model.deploy import DeployRequest, deploy, image_uri, make_clients
from model.exceptions import UsageError

ROLE = "arn:aws:iam::123456789012:role/churn-model-ExecutionRole-1A2B3C"
KEY = "arn:aws:kms:us-east-1:123456789012:key/0b5c1f6e-0000-4000-8000-000000000001"
VPC = {"Subnets": ["subnet-0a", "subnet-0b"], "SecurityGroupIds": ["sg-0c"]}
CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 10,
    "DestinationS3Uri": "s3://capture-bucket/churn-health/",
    "KmsKeyId": KEY,
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
}
WHEN = datetime(2026, 11, 27, tzinfo=UTC)


@dataclass
class LiveEndpoint:
    """What SageMaker describes for an endpoint infra/model-endpoint.yaml made (and autoscaling grew)."""

    endpoint: str = "churn-health"
    config: str = "churn-health-2026-11-01-aaaaaa"
    model: str = "churn-health-2026-11-01-aaaaaa"
    model_data_url: str = "s3://models/churn-model/2026-11-01-aaaaaa/model.tar.gz"
    role: str = ROLE
    instance_type: str = "ml.c5.large"
    config_count: int = 1
    desired_count: int = 3  # autoscaling's, above the config's InitialInstanceCount
    isolation: bool = True
    vpc: dict[str, list[str]] | None = field(default_factory=lambda: dict(VPC))
    kms: str | None = KEY
    capture: dict[str, Any] | None = field(default_factory=lambda: dict(CAPTURE))
    serverless: dict[str, int] | None = None  # a serverless variant's ServerlessConfig


def stub_live(stub: Stubber, live: LiveEndpoint) -> None:
    """The three describes of the live model, in the order deploy and find_deployed make them."""
    arn = "arn:aws:sagemaker:us-east-1:123456789012"
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": live.endpoint,
            "EndpointArn": f"{arn}:endpoint/{live.endpoint}",
            "EndpointConfigName": live.config,
            "EndpointStatus": "InService",
            "CreationTime": WHEN,
            "LastModifiedTime": WHEN,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "CurrentInstanceCount": live.desired_count,
                    "DesiredInstanceCount": live.desired_count,
                    "CurrentWeight": 1.0,
                    "DesiredWeight": 1.0,
                }
            ],
        },
        {"EndpointName": live.endpoint},
    )
    config: dict[str, Any] = {
        "EndpointConfigName": live.config,
        "EndpointConfigArn": f"{arn}:endpoint-config/{live.config}",
        "CreationTime": WHEN,
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": live.model,
                "InstanceType": live.instance_type,
                "InitialInstanceCount": live.config_count,
                "InitialVariantWeight": 1.0,
            }
        ],
    }
    if live.serverless:
        config["ProductionVariants"][0] = {
            "VariantName": "AllTraffic",
            "ModelName": live.model,
            "ServerlessConfig": live.serverless,
        }
    if live.kms:
        config["KmsKeyId"] = live.kms
    if live.capture:
        config["DataCaptureConfig"] = live.capture
    stub.add_response("describe_endpoint_config", config, {"EndpointConfigName": live.config})
    model: dict[str, Any] = {
        "ModelName": live.model,
        "ModelArn": f"{arn}:model/{live.model}",
        "CreationTime": WHEN,
        "ExecutionRoleArn": live.role,
        "PrimaryContainer": {"Image": image_uri("us-east-1"), "ModelDataUrl": live.model_data_url},
        "EnableNetworkIsolation": live.isolation,
    }
    if live.vpc:
        model["VpcConfig"] = live.vpc
    stub.add_response("describe_model", model, {"ModelName": live.model})


def stub_no_endpoint(stub: Stubber, endpoint: str) -> None:
    stub.add_client_error(
        "describe_endpoint",
        service_error_code="ValidationException",
        service_message=f'Could not find endpoint "arn:aws:sagemaker:us-east-1:123456789012:endpoint/{endpoint}".',
        expected_params={"EndpointName": endpoint},
    )


class RecordingS3:
    def __init__(self) -> None:
        self.uploads: list[dict[str, str]] = []

    def upload_file(self, **kwargs: str) -> None:
        self.uploads.append(kwargs)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "model.tar.gz"
    path.write_bytes(b"not read: the upload is recorded")
    return path


@pytest.fixture
def sagemaker() -> Any:
    return boto3.client("sagemaker", region_name="us-east-1")


def request(package: Path, **fields: Any) -> DeployRequest:
    return DeployRequest(
        package=package,
        model_version="2026-12-01-bbbbbb",
        endpoint_name="churn-health",
        bucket="models",
        **fields,
    )


def expect_create(
    stub: Stubber,
    *,
    role: str,
    isolation: bool,
    vpc: dict[str, list[str]] | None,
    instance_type: str,
    count: int,
    kms: str | None,
    capture: dict[str, Any] | None,
) -> None:
    model: dict[str, Any] = {
        "ModelName": ANY,
        "ExecutionRoleArn": role,
        "PrimaryContainer": {
            "Image": image_uri("us-east-1"),
            "ModelDataUrl": "s3://models/churn-model/2026-12-01-bbbbbb/model.tar.gz",
            "Environment": {},
        },
        "EnableNetworkIsolation": isolation,
        "Tags": [{"Key": "model_version", "Value": "2026-12-01-bbbbbb"}],
    }
    if vpc:
        model["VpcConfig"] = vpc
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/x"}, model)
    config: dict[str, Any] = {
        "EndpointConfigName": ANY,
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": ANY,
                "InitialInstanceCount": count,
                "InstanceType": instance_type,
                "InitialVariantWeight": 1.0,
            }
        ],
    }
    if kms:
        config["KmsKeyId"] = kms
    if capture:
        config["DataCaptureConfig"] = capture
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x"},
        config,
    )


ENDPOINT_ARN = {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/churn-health"}


def test_an_update_keeps_what_protects_the_live_model_and_its_instance_count(
    package: Path, sagemaker: Any
) -> None:
    live = LiveEndpoint()
    said: list[str] = []
    s3 = RecordingS3()
    with Stubber(sagemaker) as stub:
        stub_live(stub, live)
        expect_create(
            stub,
            role=ROLE,
            isolation=True,
            vpc=VPC,
            instance_type="ml.c5.large",
            count=3,
            kms=KEY,
            capture=CAPTURE,
        )
        stub.add_response(
            "update_endpoint",
            ENDPOINT_ARN,
            {"EndpointName": "churn-health", "EndpointConfigName": ANY, "RetainAllVariantProperties": True},
        )
        # The role is the live model's too: passing it changes nothing (and the code before the fix needed it).
        result = deploy(request(package, role_arn=ROLE), s3, sagemaker, "us-east-1", said.append)
        stub.assert_no_pending_responses()
    assert result.action == "updated" and result.previous_endpoint_config_name == live.config
    assert (result.instance_type, result.instance_count) == ("ml.c5.large", 3)
    assert result.protections == result.previous_protections
    assert result.model_name.startswith("churn-health-2026-12-01-bbbbbb-")
    assert any(
        line.startswith(f"keeping what protects model {live.model}") and "network isolation" in line
        for line in said
    ), said
    assert s3.uploads == [
        {
            "Filename": str(package),
            "Bucket": "models",
            "Key": "churn-model/2026-12-01-bbbbbb/model.tar.gz",
        }
    ]


def test_the_role_is_the_live_models_unless_given(package: Path, sagemaker: Any) -> None:
    with Stubber(sagemaker) as stub:
        stub_live(stub, LiveEndpoint(vpc=None, capture=None))
        expect_create(
            stub,
            role=ROLE,
            isolation=True,
            vpc=None,
            instance_type="ml.c5.large",
            count=3,
            kms=KEY,
            capture=None,
        )
        stub.add_response("update_endpoint", ENDPOINT_ARN, None)
        deploy(request(package), RecordingS3(), sagemaker, "us-east-1", lambda _: None)
        stub.assert_no_pending_responses()


def test_the_first_deploy_takes_the_options_with_network_isolation_on(package: Path, sagemaker: Any) -> None:
    said: list[str] = []
    with Stubber(sagemaker) as stub:
        stub_no_endpoint(stub, "churn-health")
        expect_create(
            stub,
            role=ROLE,
            isolation=True,
            vpc=VPC,
            instance_type="ml.m5.xlarge",
            count=1,
            kms=KEY,
            capture=None,
        )
        stub.add_response(
            "create_endpoint",
            ENDPOINT_ARN,
            {"EndpointName": "churn-health", "EndpointConfigName": ANY},
        )
        result = deploy(
            request(
                package,
                role_arn=ROLE,
                kms_key_id=KEY,
                vpc_subnets=tuple(VPC["Subnets"]),
                vpc_security_groups=tuple(VPC["SecurityGroupIds"]),
            ),
            RecordingS3(),
            sagemaker,
            "us-east-1",
            said.append,
        )
        stub.assert_no_pending_responses()
    assert result.action == "created" and result.previous_protections is None
    assert any(line.startswith("no model at endpoint churn-health yet: network isolation") for line in said)


def test_a_first_deploy_without_a_key_says_so(package: Path, sagemaker: Any) -> None:
    said: list[str] = []
    with Stubber(sagemaker) as stub:
        stub_no_endpoint(stub, "churn-health")
        expect_create(
            stub,
            role=ROLE,
            isolation=True,
            vpc=None,
            instance_type="ml.m5.xlarge",
            count=1,
            kms=None,
            capture=None,
        )
        stub.add_response("create_endpoint", ENDPOINT_ARN, None)
        deploy(request(package, role_arn=ROLE), RecordingS3(), sagemaker, "us-east-1", said.append)
    assert any(line.startswith("WARNING: no --kms-key-id") for line in said), said


@pytest.mark.parametrize(
    ("change", "lost"),
    [
        ({"network_isolation": False}, "network isolation off"),
        ({"no_vpc": True}, "out of the VPC"),
    ],
)
def test_a_weaker_deploy_is_refused_before_anything_changes(
    package: Path, sagemaker: Any, change: dict[str, Any], lost: str
) -> None:
    s3 = RecordingS3()
    with Stubber(sagemaker) as stub:
        stub_live(stub, LiveEndpoint())
        with pytest.raises(UsageError, match="--allow-weaker-protections") as refused:
            deploy(request(package, **change), s3, sagemaker, "us-east-1", lambda _: None)
        stub.assert_no_pending_responses()  # described, nothing created
    assert lost in str(refused.value) and "churn-health-2026-11-01-aaaaaa" in str(refused.value)
    assert s3.uploads == []


def test_a_weaker_deploy_when_allowed_is_said_loudly(package: Path, sagemaker: Any) -> None:
    said: list[str] = []
    with Stubber(sagemaker) as stub:
        stub_live(stub, LiveEndpoint())
        expect_create(
            stub,
            role=ROLE,
            isolation=False,
            vpc=VPC,
            instance_type="ml.c5.large",
            count=3,
            kms=KEY,
            capture=CAPTURE,
        )
        stub.add_response("update_endpoint", ENDPOINT_ARN, None)
        deploy(
            request(package, network_isolation=False, allow_weaker=True),
            RecordingS3(),
            sagemaker,
            "us-east-1",
            said.append,
        )
        stub.assert_no_pending_responses()
    assert any(line.startswith("WARNING:") and "network isolation off" in line for line in said), said


def test_another_instance_type_warns_of_autoscaling(package: Path, sagemaker: Any) -> None:
    said: list[str] = []
    live = LiveEndpoint()
    with Stubber(sagemaker) as stub:
        stub_live(stub, live)
        expect_create(
            stub,
            role=ROLE,
            isolation=True,
            vpc=VPC,
            instance_type="ml.m5.xlarge",
            count=3,
            kms=KEY,
            capture=CAPTURE,
        )
        stub.add_response("update_endpoint", ENDPOINT_ARN, None)
        deploy(
            request(package, instance_type="ml.m5.xlarge"),
            RecordingS3(),
            sagemaker,
            "us-east-1",
            said.append,
        )
    [warning] = [line for line in said if "instance type" in line]
    assert (
        warning.startswith("WARNING: instance type ml.c5.large -> ml.m5.xlarge") and "autoscaling" in warning
    )


def test_an_explicit_count_is_the_configs_while_the_endpoint_keeps_its_own(
    package: Path, sagemaker: Any
) -> None:
    said: list[str] = []
    with Stubber(sagemaker) as stub:
        stub_live(stub, replace(LiveEndpoint(), desired_count=4))
        expect_create(
            stub,
            role=ROLE,
            isolation=True,
            vpc=VPC,
            instance_type="ml.c5.large",
            count=2,
            kms=KEY,
            capture=CAPTURE,
        )
        stub.add_response(
            "update_endpoint",
            ENDPOINT_ARN,
            {"EndpointName": "churn-health", "EndpointConfigName": ANY, "RetainAllVariantProperties": True},
        )
        deploy(request(package, instance_count=2), RecordingS3(), sagemaker, "us-east-1", said.append)
        stub.assert_no_pending_responses()
    assert any("the endpoint keeps its 4" in line for line in said), said


def test_no_role_and_no_live_model_is_bad_usage(package: Path, sagemaker: Any) -> None:
    with Stubber(sagemaker) as stub:
        stub_no_endpoint(stub, "churn-health")
        with pytest.raises(UsageError, match="--role-arn is needed"):
            deploy(request(package), RecordingS3(), sagemaker, "us-east-1", lambda _: None)


def test_aws_region_alone_names_the_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ECS sets (the retraining task definition sets only AWS_REGION)."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    _, sagemaker, region = make_clients(None, None)
    assert region == "eu-west-1" == sagemaker.meta.region_name


SERVERLESS_LIVE = LiveEndpoint(isolation=False, vpc=None, kms=None, capture=None)


def expect_serverless_create(stub: Stubber, memory: int, concurrency: int) -> None:
    """A serverless model and config: no network isolation, VPC, volume key or capture (SageMaker
    Serverless Inference has none), a ServerlessConfig instead of an instance type and count."""
    stub.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/x"},
        {
            "ModelName": ANY,
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": image_uri("us-east-1"),
                "ModelDataUrl": "s3://models/churn-model/2026-12-01-bbbbbb/model.tar.gz",
                "Environment": {},
            },
            "EnableNetworkIsolation": False,
            "Tags": [{"Key": "model_version", "Value": "2026-12-01-bbbbbb"}],
        },
    )
    stub.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/x"},
        {
            "EndpointConfigName": ANY,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": ANY,
                    "ServerlessConfig": {"MemorySizeInMB": memory, "MaxConcurrency": concurrency},
                }
            ],
        },
    )


def test_a_first_serverless_deploy_sizes_the_variant_and_says_what_it_lacks(
    package: Path, sagemaker: Any
) -> None:
    said: list[str] = []
    with Stubber(sagemaker) as stub:
        stub_no_endpoint(stub, "churn-health")
        expect_serverless_create(stub, 3072, 20)
        stub.add_response(
            "create_endpoint", ENDPOINT_ARN, {"EndpointName": "churn-health", "EndpointConfigName": ANY}
        )
        result = deploy(
            request(package, role_arn=ROLE, serverless=True, memory_mb=3072, max_concurrency=20),
            RecordingS3(),
            sagemaker,
            "us-east-1",
            said.append,
        )
        stub.assert_no_pending_responses()
    assert result.serverless == {"MemorySizeInMB": 3072, "MaxConcurrency": 20}
    assert (result.instance_type, result.instance_count) == ("serverless", 0)
    assert any(line.startswith("serverless: 3072 MB") and "no network isolation" in line for line in said)
    assert not any("--kms-key-id" in line for line in said), said  # no volume to encrypt


def test_a_live_instance_endpoint_is_not_turned_serverless(package: Path, sagemaker: Any) -> None:
    s3 = RecordingS3()
    with Stubber(sagemaker) as stub:
        stub_live(stub, LiveEndpoint())
        with pytest.raises(UsageError, match="cannot turn an instance-based endpoint serverless"):
            deploy(request(package, serverless=True), s3, sagemaker, "us-east-1", lambda _: None)
        stub.assert_no_pending_responses()  # described, nothing created
    assert s3.uploads == []


def test_a_serverless_endpoint_stays_serverless_with_its_sizes_unless_given(
    package: Path, sagemaker: Any
) -> None:
    live = replace(SERVERLESS_LIVE, serverless={"MemorySizeInMB": 4096, "MaxConcurrency": 8})
    with Stubber(sagemaker) as stub:
        stub_live(stub, live)
        expect_serverless_create(stub, 4096, 30)
        # no instance count to keep: the new ServerlessConfig is the one to take
        stub.add_response(
            "update_endpoint",
            ENDPOINT_ARN,
            {"EndpointName": "churn-health", "EndpointConfigName": ANY, "RetainAllVariantProperties": False},
        )
        result = deploy(
            request(package, max_concurrency=30), RecordingS3(), sagemaker, "us-east-1", lambda _: None
        )
        stub.assert_no_pending_responses()
    assert result.serverless == {"MemorySizeInMB": 4096, "MaxConcurrency": 30}


def test_a_serverless_endpoint_moved_to_instances_is_said_loudly(package: Path, sagemaker: Any) -> None:
    said: list[str] = []
    live = replace(SERVERLESS_LIVE, serverless={"MemorySizeInMB": 2048, "MaxConcurrency": 10})
    with Stubber(sagemaker) as stub:
        stub_live(stub, live)
        expect_create(
            stub,
            role=ROLE,
            isolation=False,
            vpc=None,
            instance_type="ml.m5.xlarge",
            count=3,
            kms=None,
            capture=None,
        )
        stub.add_response("update_endpoint", ENDPOINT_ARN, None)
        deploy(
            request(package, serverless=False, instance_type="ml.m5.xlarge"),
            RecordingS3(),
            sagemaker,
            "us-east-1",
            said.append,
        )
        stub.assert_no_pending_responses()
    assert any(line.startswith("WARNING:") and "cannot move it back" in line for line in said), said


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"serverless": True, "memory_mb": 1500}, "--memory-mb 1500"),
        ({"serverless": True, "max_concurrency": 201}, "--max-concurrency"),
        ({"serverless": True, "instance_type": "ml.c5.large"}, "no --instance-type"),
        ({"serverless": True, "network_isolation": True}, "no network isolation"),
        ({"serverless": False, "memory_mb": 2048}, "are for a serverless endpoint"),
    ],
)
def test_serverless_options_that_cannot_hold_are_bad_usage(
    package: Path, sagemaker: Any, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        deploy(
            request(package, role_arn=ROLE, **fields), RecordingS3(), sagemaker, "us-east-1", lambda _: None
        )
