"""`churn-model deploy`: model.tar.gz to S3, then a SageMaker model, endpoint config and endpoint.

Every deploy creates a new model and a new endpoint config named after the model version (and the
time, so a redeploy of the same version is still a new config). A missing endpoint is created; an
existing one is moved to the new config with `update_endpoint`, which SageMaker performs blue/green:
the new fleet is provisioned and health-checked before traffic shifts, and the old config stays as
the rollback target (`update_endpoint` back to it). Nothing is deleted.

The image is AWS's TensorFlow Serving deep learning container for the region
(`<account>.dkr.ecr.<region>.amazonaws.com/tensorflow-inference:<version>-cpu|gpu[-py312]`);
`--image-uri` overrides it. The default version is the newest TF Serving image SageMaker publishes
that loads what `churn-model package` exports: training runs TensorFlow 2.21 and there is no 2.21
inference image, so 2.20 (TF Serving 2.20.0, built to serve TF 2.21-trained SavedModels);
`make serving-check` loads a packaged SavedModel with TensorFlow 2.20 and compares its outputs with
the training TensorFlow's (tests/functional/test_infra_serving.py). 2.16, the previous default, also
loaded it when tried once by hand, but logs that the graph has op attributes it does not know
(`use_unbounded_threadpool`) and ignores them: four minor versions behind the exporter, unchecked.

Clients come from boto3's standard chain, so AWS_ENDPOINT_URL (or `--endpoint-url`) points the
whole deploy at another endpoint, such as moto's server in the tests.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from model.exceptions import DeployError, UsageError
from plumbing.awsenv import aws_region

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sagemaker.client import SageMakerClient
    from mypy_boto3_sagemaker.literals import ProductionVariantInstanceTypeType
    from mypy_boto3_sagemaker.type_defs import ProductionVariantTypeDef

T = TypeVar("T")

DEFAULT_FRAMEWORK_VERSION = "2.20"
# The TensorFlow release inside that image: what `make serving-check` loads the SavedModel with.
SERVING_TENSORFLOW = {"2.20": "2.20.0"}
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
# One name everywhere: the worker's CHURN_ENDPOINT_NAME default, the IAM policy and infra/ templates.
DEFAULT_ENDPOINT_NAME = "churn-health"
VARIANT = "AllTraffic"

# The deep learning containers' registry account per region (AWS's published list; most regions use
# 763104351884). Regions not listed need --image-uri.
DLC_ACCOUNTS: dict[str, str] = {
    **{
        region: "763104351884"
        for region in (
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
            "ca-central-1",
            "sa-east-1",
            "eu-central-1",
            "eu-north-1",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-south-1",
            "ap-southeast-1",
            "ap-southeast-2",
        )
    },
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-south-2": "772153158452",
    "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322",
    "ca-west-1": "204538143572",
    "eu-central-2": "380420809688",
    "eu-south-1": "692866216735",
    "eu-south-2": "503227376785",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
}
# From 2.20 on the images are published only with the Python version in the tag (2.20.0-cpu-py312);
# 2.19 and earlier have the bare form (2.16-cpu).
PYTHON_TAG = {"2.20": "py312", "2.20.0": "py312"}
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker resource names


def image_uri(region: str, framework_version: str = DEFAULT_FRAMEWORK_VERSION, processor: str = "cpu") -> str:
    account = DLC_ACCOUNTS.get(region)
    if account is None:
        raise UsageError(f"no known TensorFlow Serving image registry for region {region}: pass --image-uri")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    python = PYTHON_TAG.get(framework_version)
    tag = f"{framework_version}-{processor}" + (f"-{python}" if python else "")
    return f"{account}.dkr.ecr.{region}.{domain}/tensorflow-inference:{tag}"


@dataclass(frozen=True)
class DeployRequest:
    package: Path
    model_version: str
    endpoint_name: str
    bucket: str
    role_arn: str
    prefix: str = "churn-model"
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    framework_version: str = DEFAULT_FRAMEWORK_VERSION
    image: str | None = None  # default: the region's TF Serving image
    wait: bool = False


@dataclass(frozen=True)
class DeployResult:
    endpoint_name: str
    action: str  # "created" | "updated"
    model_name: str
    endpoint_config_name: str
    previous_endpoint_config_name: str | None
    model_data_url: str
    image: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _resource_name(base: str, suffix: str) -> str:
    """`base-suffix` within SageMaker's 63 characters, shortening the base, never the unique suffix."""
    clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-zA-Z0-9-]+", "-", suffix)).strip("-")
    return f"{base[: 62 - len(clean)].rstrip('-')}-{clean}"


def _check(request: DeployRequest) -> None:
    if not _NAME.match(request.endpoint_name):
        raise UsageError(f"endpoint name {request.endpoint_name!r}: use 1-63 letters, digits and hyphens")
    if request.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    if not request.role_arn.startswith("arn:"):
        raise UsageError(
            f"--role-arn {request.role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )
    if not request.package.is_file():
        raise UsageError(f"no package at {request.package}: run `churn-model package` first")


def _call(what: str, call: Callable[[], T]) -> T:
    """`call()`, its AWS errors as one `DeployError` line saying what failed."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeployError(
            f"{what} failed: {error.get('Code', 'error')}: {error.get('Message', exc)}"
        ) from exc
    except (BotoCoreError, Boto3Error) as exc:  # S3UploadFailedError is boto3's, not botocore's
        raise DeployError(f"{what} failed: {exc}") from exc


def _current_config(sagemaker: SageMakerClient, endpoint_name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return str(sagemaker.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"])
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "Could not find endpoint" in error.get(
            "Message", ""
        ):
            return None
        raise DeployError(f"describe_endpoint {endpoint_name} failed: {error.get('Message', exc)}") from exc


def deploy(
    request: DeployRequest,
    s3: S3Client,
    sagemaker: SageMakerClient,
    region: str,
    say: Callable[[str], None],
) -> DeployResult:
    """Upload, register and roll out `request.package`; returns what was created or updated."""
    _check(request)
    image = request.image or image_uri(region, request.framework_version)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    key = f"{request.prefix.strip('/')}/{request.model_version}/model.tar.gz".lstrip("/")
    model_data_url = f"s3://{request.bucket}/{key}"
    say(f"uploading {request.package} to {model_data_url}")
    _call(
        f"upload to {model_data_url}",
        lambda: s3.upload_file(Filename=str(request.package), Bucket=request.bucket, Key=key),
    )

    model_name = _resource_name(request.endpoint_name, f"{request.model_version}-{stamp}")
    say(f"creating model {model_name} ({image})")
    _call(
        f"create_model {model_name}",
        lambda: sagemaker.create_model(
            ModelName=model_name,
            ExecutionRoleArn=request.role_arn,
            PrimaryContainer={"Image": image, "ModelDataUrl": model_data_url, "Environment": {}},
            Tags=[{"Key": "model_version", "Value": request.model_version}],
        ),
    )
    config_name = model_name
    say(f"creating endpoint config {config_name} ({request.instance_count} x {request.instance_type})")
    variant: ProductionVariantTypeDef = {
        "VariantName": VARIANT,
        "ModelName": model_name,
        "InitialInstanceCount": request.instance_count,
        # any name: SageMaker checks it, and it offers instance types the stubs do not list yet
        "InstanceType": cast("ProductionVariantInstanceTypeType", request.instance_type),
        "InitialVariantWeight": 1.0,
    }
    _call(
        f"create_endpoint_config {config_name}",
        lambda: sagemaker.create_endpoint_config(
            EndpointConfigName=config_name, ProductionVariants=[variant]
        ),
    )
    previous = _current_config(sagemaker, request.endpoint_name)
    if previous is None:
        say(f"creating endpoint {request.endpoint_name}")
        _call(
            f"create_endpoint {request.endpoint_name}",
            lambda: sagemaker.create_endpoint(
                EndpointName=request.endpoint_name, EndpointConfigName=config_name
            ),
        )
    else:
        say(f"updating endpoint {request.endpoint_name}: {previous} -> {config_name} (blue/green)")
        _call(
            f"update_endpoint {request.endpoint_name}",
            lambda: sagemaker.update_endpoint(
                EndpointName=request.endpoint_name, EndpointConfigName=config_name
            ),
        )
    if request.wait:
        say(f"waiting for {request.endpoint_name} to be InService")
        waiter = sagemaker.get_waiter("endpoint_in_service")
        _call(f"waiting for {request.endpoint_name}", lambda: waiter.wait(EndpointName=request.endpoint_name))
    return DeployResult(
        endpoint_name=request.endpoint_name,
        action="created" if previous is None else "updated",
        model_name=model_name,
        endpoint_config_name=config_name,
        previous_endpoint_config_name=previous,
        model_data_url=model_data_url,
        image=image,
    )


def make_clients(region: str | None, endpoint_url: str | None) -> tuple[S3Client, SageMakerClient, str]:
    """(s3, sagemaker, region) from boto3's standard chain; the region is `region`, else
    `plumbing.awsenv.aws_region()` (boto3 alone would not read AWS_REGION)."""
    import boto3

    session = boto3.session.Session(region_name=region or aws_region())
    if session.region_name is None:
        raise UsageError("no AWS region: pass --region or set AWS_REGION")
    return (
        session.client("s3", endpoint_url=endpoint_url),
        session.client("sagemaker", endpoint_url=endpoint_url),
        session.region_name,
    )
