"""`churn-model deploy`: model.tar.gz to S3, then a SageMaker model, endpoint config and endpoint.

Every deploy creates a new model and a new endpoint config named after the endpoint and the model
version (and the time, so a redeploy of the same version is still a new config): `ENDPOINT-*`, the
names the retraining task's role may create and describe (infra/service.yaml). A missing endpoint is
created; an existing one is moved to the new config with `update_endpoint`, which SageMaker performs
blue/green: the new fleet is provisioned and health-checked before traffic shifts, and the old config
stays as the rollback target (`update_endpoint` back to it). Nothing is deleted.

What protects the live endpoint is carried into the new model and config, from the model and config
it runs now (infra/model-endpoint.yaml's, or the previous deploy's): network isolation, the VPC
config, the KMS key of the instances' volumes, data capture, the execution role, the instance type
and the instance count. A deploy that would protect less (an option turning isolation off, leaving
the VPC) is refused unless `allow_weaker`, and then said loudly. The update keeps the variant's
instance count and weight (`RetainAllVariantProperties`): infra/model-scaling.yaml's autoscaling owns
the count, which the new config's InitialInstanceCount would otherwise reset. With no endpoint yet,
the options say, and network isolation is on unless turned off.

The image is AWS's TensorFlow Serving deep learning container for the region
(`<account>.dkr.ecr.<region>.amazonaws.com/tensorflow-inference:<version>-cpu|gpu[-py312]`);
`--image-uri` overrides it. The default version is the newest TF Serving image SageMaker publishes
that loads what `churn-model package` exports: training runs TensorFlow 2.21 and there is no 2.21
inference image, so 2.20 (TF Serving 2.20.0, built to serve TF 2.21-trained SavedModels);
`make serving-check` loads a packaged SavedModel with TensorFlow 2.20 and compares its outputs with
the training TensorFlow's (tests/functional/test_infra_serving.py). 2.16, the previous default, also
loaded it when tried once by hand, but logs that the graph has op attributes it does not know
(`use_unbounded_threadpool`) and ignores them: four minor versions behind the exporter, unchecked.

Serverless (`serverless=True`, `churn-model deploy --serverless [--memory-mb N --max-concurrency N]`):
the variant gets a `ServerlessConfig` (memory 1024..6144 MB in 1 GB steps, at most 200 concurrent
invocations) instead of an instance type and count; the endpoint contract (name, request, answer)
is the same, and no instance runs while nothing is asked (billed per GB-second of inference, each
cold start a few seconds: the worker's scoring timeouts and circuit breaker allow for it,
worker/scoring.py). SageMaker Serverless Inference has no network isolation, VPC, volume KMS key
or data capture, so a serverless deploy has none of them: refused where the live model has them
(unless `allow_weaker`), and refused for a live instance-based endpoint, which SageMaker cannot
turn serverless (deploy to a new endpoint name and point CHURN_ENDPOINT_NAME at it). A serverless
endpoint may be moved to instances (said loudly: SageMaker cannot move it back). Unset, a deploy
keeps the live variant's kind and sizes.

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
    from mypy_boto3_sagemaker.type_defs import (
        CreateEndpointConfigInputTypeDef,
        CreateModelInputTypeDef,
        DataCaptureConfigTypeDef,
        DescribeEndpointOutputTypeDef,
        ProductionVariantTypeDef,
        VpcConfigTypeDef,
    )

T = TypeVar("T")

DEFAULT_FRAMEWORK_VERSION = "2.20"
# The TensorFlow release inside that image: what `make serving-check` loads the SavedModel with.
SERVING_TENSORFLOW = {"2.20": "2.20.0"}
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
# Serverless Inference: infra/model-endpoint.yaml's defaults. SageMaker's limits: memory 1024..6144 MB
# in 1 GB steps, max concurrency 1..200 per endpoint.
DEFAULT_SERVERLESS_MEMORY_MB = 2048
DEFAULT_SERVERLESS_MAX_CONCURRENCY = 10
SERVERLESS_MEMORY_SIZES = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_SERVERLESS_CONCURRENCY = 200
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
    """What to deploy where. Every field left None is taken from the model live at the endpoint (the
    one infra/model-endpoint.yaml or the previous deploy made), else from the safe default: a
    deploy keeps what protects the endpoint unless told otherwise."""

    package: Path
    model_version: str
    endpoint_name: str
    bucket: str
    role_arn: str | None = None  # None: the live model's execution role
    prefix: str = "churn-model"
    instance_type: str | None = None  # None: the live variant's, else DEFAULT_INSTANCE_TYPE
    instance_count: int | None = None  # None: the live variant's desired count, else 1
    framework_version: str = DEFAULT_FRAMEWORK_VERSION
    image: str | None = None  # default: the region's TF Serving image
    wait: bool = False
    network_isolation: bool | None = None  # None: the live model's, else on
    kms_key_id: str | None = None  # None: the live config's key
    vpc_subnets: tuple[str, ...] = ()  # with vpc_security_groups; empty: the live model's VPC
    vpc_security_groups: tuple[str, ...] = ()
    no_vpc: bool = False  # take the new model out of the live model's VPC (weaker: refused unless allowed)
    allow_weaker: bool = False  # deploy even if the new model or config protects less than the live ones
    serverless: bool | None = None  # None: as the live variant (else instances)
    memory_mb: int | None = None  # serverless: None: the live variant's, else DEFAULT_SERVERLESS_MEMORY_MB
    max_concurrency: int | None = None  # serverless: None: the live variant's, else the default


@dataclass(frozen=True)
class Protections:
    """What locks a model and its endpoint down: the container's network isolation, its VPC, the KMS
    key of the instances' storage volumes, the endpoint's data capture (with its own key and bucket).
    A deploy carries the live model's and config's into the new ones."""

    network_isolation: bool = True
    vpc_config: dict[str, list[str]] | None = None  # {"Subnets": [...], "SecurityGroupIds": [...]}
    kms_key_id: str | None = None
    data_capture: dict[str, Any] | None = None

    def summary(self) -> str:
        vpc = self.vpc_config
        return ", ".join(
            [
                "network isolation" if self.network_isolation else "NO network isolation",
                f"VPC subnets {','.join(vpc['Subnets'])} / security groups {','.join(vpc['SecurityGroupIds'])}"
                if vpc
                else "no VPC",
                f"KMS key {self.kms_key_id}" if self.kms_key_id else "no KMS key (an AWS managed key)",
                *(
                    [f"data capture to {self.data_capture.get('DestinationS3Uri')}"]
                    if self.data_capture
                    else []
                ),
            ]
        )

    def weaker_than(self, live: Protections) -> list[str]:
        """What `live` has that this lacks."""
        lost = []
        if live.network_isolation and not self.network_isolation:
            lost.append("network isolation off")
        if live.vpc_config and not self.vpc_config:
            lost.append("out of the VPC")
        if live.kms_key_id and not self.kms_key_id:
            lost.append("no KMS key")
        if live.data_capture and not self.data_capture:
            lost.append("no data capture")
        return lost

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Live:
    """The endpoint as it runs: its config, the model behind its variant, and what they protect."""

    endpoint_name: str
    config_name: str
    model_name: str
    model_data_url: str | None
    role_arn: str | None
    instance_type: str | None
    instance_count: int | None  # the variant's desired count now (autoscaling's), else the config's
    protections: Protections
    serverless: dict[str, int] | None = None  # the variant's ServerlessConfig (None: instances)


@dataclass(frozen=True)
class DeployResult:
    endpoint_name: str
    action: str  # "created" | "updated"
    model_name: str
    endpoint_config_name: str
    previous_endpoint_config_name: str | None
    model_data_url: str
    image: str
    role_arn: str
    instance_type: str  # "serverless" for a serverless variant
    instance_count: int  # 0 for a serverless variant
    protections: Protections
    previous_protections: Protections | None
    serverless: dict[str, int] | None = None  # {"MemorySizeInMB", "MaxConcurrency"}

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["protections"] = self.protections.as_dict()
        out["previous_protections"] = self.previous_protections and self.previous_protections.as_dict()
        return out


def _resource_name(base: str, suffix: str) -> str:
    """`base-suffix` within SageMaker's 63 characters, shortening the base, never the unique suffix."""
    clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-zA-Z0-9-]+", "-", suffix)).strip("-")
    return f"{base[: 62 - len(clean)].rstrip('-')}-{clean}"


def _check(request: DeployRequest) -> None:
    if not _NAME.match(request.endpoint_name):
        raise UsageError(f"endpoint name {request.endpoint_name!r}: use 1-63 letters, digits and hyphens")
    if request.instance_count is not None and request.instance_count < 1:
        raise UsageError("--instance-count must be at least 1")
    if request.role_arn is not None and not request.role_arn.startswith("arn:"):
        raise UsageError(
            f"--role-arn {request.role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )
    if bool(request.vpc_subnets) != bool(request.vpc_security_groups):
        raise UsageError("--vpc-subnets and --vpc-security-groups go together (the model's VpcConfig)")
    if request.no_vpc and request.vpc_subnets:
        raise UsageError("--no-vpc and --vpc-subnets contradict each other")
    if request.memory_mb is not None and request.memory_mb not in SERVERLESS_MEMORY_SIZES:
        raise UsageError(
            f"--memory-mb {request.memory_mb}: one of {', '.join(map(str, SERVERLESS_MEMORY_SIZES))}"
        )
    if request.max_concurrency is not None and not 1 <= request.max_concurrency <= MAX_SERVERLESS_CONCURRENCY:
        raise UsageError(f"--max-concurrency must be 1..{MAX_SERVERLESS_CONCURRENCY}")
    if request.serverless is False and (request.memory_mb is not None or request.max_concurrency is not None):
        raise UsageError("--memory-mb and --max-concurrency are for a serverless endpoint (--serverless)")
    if request.serverless and (request.instance_type is not None or request.instance_count is not None):
        raise UsageError(
            "--serverless has no --instance-type or --instance-count (its ServerlessConfig sizes it)"
        )
    if request.serverless and (request.network_isolation or request.vpc_subnets or request.kms_key_id):
        raise UsageError(
            "SageMaker Serverless Inference has no network isolation, VPC or volume KMS key: "
            "leave out --network-isolation, --vpc-subnets and --kms-key-id with --serverless"
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


def _describe_endpoint(
    sagemaker: SageMakerClient, endpoint_name: str
) -> DescribeEndpointOutputTypeDef | None:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return sagemaker.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "Could not find endpoint" in error.get(
            "Message", ""
        ):
            return None
        raise DeployError(f"describe_endpoint {endpoint_name} failed: {error.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise DeployError(f"describe_endpoint {endpoint_name} failed: {exc}") from exc


def describe_live(sagemaker: SageMakerClient, endpoint_name: str) -> Live | None:
    """The model live at `endpoint_name`, None if there is no such endpoint. Three calls, the ones the
    retraining task's role may make (infra/service.yaml TrainerRole): DescribeEndpoint on
    `endpoint/NAME`, DescribeEndpointConfig and DescribeModel on the `NAME-*` names that
    infra/model-endpoint.yaml and every deploy give them."""
    endpoint = _describe_endpoint(sagemaker, endpoint_name)
    if endpoint is None:
        return None
    config_name = endpoint["EndpointConfigName"]
    config = _call(
        f"describe_endpoint_config {config_name} (endpoint {endpoint_name})",
        lambda: sagemaker.describe_endpoint_config(EndpointConfigName=config_name),
    )
    variants = config.get("ProductionVariants") or []
    if not variants:
        raise DeployError(
            f"endpoint config {config_name} of endpoint {endpoint_name} has no production variant"
        )
    variant = next((v for v in variants if v.get("VariantName") == VARIANT), variants[0])
    model_name = variant["ModelName"]
    model = _call(
        f"describe_model {model_name} (endpoint {endpoint_name})",
        lambda: sagemaker.describe_model(ModelName=model_name),
    )
    running = next(
        (
            v
            for v in endpoint.get("ProductionVariants") or []
            if v.get("VariantName") == variant["VariantName"]
        ),
        None,
    )
    count = variant.get("InitialInstanceCount")
    if running is not None:
        count = running.get("DesiredInstanceCount") or running.get("CurrentInstanceCount") or count
    vpc = model.get("VpcConfig")
    capture = dict(config.get("DataCaptureConfig") or {})
    serverless = variant.get("ServerlessConfig")
    return Live(
        endpoint_name=endpoint_name,
        config_name=config_name,
        model_name=model_name,
        model_data_url=(model.get("PrimaryContainer") or {}).get("ModelDataUrl"),
        role_arn=model.get("ExecutionRoleArn"),
        instance_type=variant.get("InstanceType"),
        instance_count=int(count) if count else None,
        protections=Protections(
            network_isolation=bool(model.get("EnableNetworkIsolation", False)),
            vpc_config={"Subnets": list(vpc["Subnets"]), "SecurityGroupIds": list(vpc["SecurityGroupIds"])}
            if vpc and vpc.get("Subnets")
            else None,
            kms_key_id=config.get("KmsKeyId") or None,
            data_capture=capture if capture.get("DestinationS3Uri") else None,
        ),
        serverless={
            "MemorySizeInMB": int(serverless["MemorySizeInMB"]),
            "MaxConcurrency": int(serverless["MaxConcurrency"]),
        }
        if serverless
        else None,
    )


def _protections(request: DeployRequest, live: Live | None, serverless: bool) -> Protections:
    """The live model's protections with the request's changes; without a live model, the request's
    with network isolation on unless it says otherwise. Serverless: none (SageMaker has none of them
    for a serverless variant)."""
    if serverless:
        return Protections(network_isolation=False)
    base = live.protections if live is not None else Protections()
    vpc = base.vpc_config
    if request.no_vpc:
        vpc = None
    elif request.vpc_subnets:
        vpc = {"Subnets": list(request.vpc_subnets), "SecurityGroupIds": list(request.vpc_security_groups)}
    return Protections(
        network_isolation=base.network_isolation
        if request.network_isolation is None
        else request.network_isolation,
        vpc_config=vpc,
        kms_key_id=request.kms_key_id or base.kms_key_id,
        data_capture=base.data_capture,
    )


@dataclass(frozen=True)
class _Plan:
    role_arn: str
    instance_type: str
    instance_count: int
    protections: Protections
    serverless: dict[str, int] | None = None


def _serverless_config(request: DeployRequest, live: Live | None) -> dict[str, int] | None:
    """The new variant's ServerlessConfig, None for instances: the request's kind, else the live
    variant's; sizes the request's, else the live serverless variant's, else the defaults."""
    serverless = request.serverless
    if serverless is None:
        serverless = live is not None and live.serverless is not None
    if not serverless:
        return None
    before = (live.serverless if live is not None else None) or {}
    return {
        "MemorySizeInMB": request.memory_mb or before.get("MemorySizeInMB", DEFAULT_SERVERLESS_MEMORY_MB),
        "MaxConcurrency": request.max_concurrency
        or before.get("MaxConcurrency", DEFAULT_SERVERLESS_MAX_CONCURRENCY),
    }


def _plan(request: DeployRequest, live: Live | None, say: Callable[[str], None]) -> _Plan:
    """What the new model and config will be, said line by line; refuses (UsageError) a deploy that
    would protect the endpoint less than its live model does, unless `allow_weaker`."""
    name = request.endpoint_name
    role = request.role_arn or (live.role_arn if live is not None else None)
    if not role:
        raise UsageError(f"--role-arn is needed: no model at endpoint {name} to take the execution role from")
    serverless = _serverless_config(request, live)
    if serverless is not None and live is not None and live.serverless is None:
        raise UsageError(
            f"endpoint {name} runs on instances ({live.instance_type}): SageMaker cannot turn an instance-based "
            "endpoint serverless. Deploy to a new --endpoint-name (infra/model-endpoint.yaml Serverless=true "
            "makes one) and point the worker's CHURN_ENDPOINT_NAME at it"
        )
    if serverless is not None:
        say(
            f"serverless: {serverless['MemorySizeInMB']} MB, at most {serverless['MaxConcurrency']} concurrent "
            "invocations (no network isolation, VPC, volume KMS key or data capture: SageMaker Serverless "
            "Inference has none of them)"
        )
    elif live is not None and live.serverless is not None:
        say(
            f"WARNING: endpoint {name} moves from serverless to instances: SageMaker cannot move it back "
            "(a serverless endpoint again needs a new endpoint name)"
        )
    protections = _protections(request, live, serverless is not None)
    if live is None:
        say(f"no model at endpoint {name} yet: {protections.summary()}")
        if not protections.kms_key_id and serverless is None:
            say(
                "WARNING: no --kms-key-id: the instances' volumes get an AWS managed key, not the data "
                "plane's (infra/data-plane.yaml KmsKeyArn)"
            )
    else:
        weaker = protections.weaker_than(live.protections)
        if weaker and not request.allow_weaker:
            raise UsageError(
                f"this deploy would protect endpoint {name} less than its live model {live.model_name} does "
                f"({', '.join(weaker)}): leave out the option that asks for it, or pass --allow-weaker-protections"
            )
        if weaker:
            say(
                f"WARNING: endpoint {name} will be protected less than by its live model {live.model_name}: "
                f"{', '.join(weaker)} (--allow-weaker-protections)"
            )
        if protections == live.protections:
            say(
                f"keeping what protects model {live.model_name} and config {live.config_name}: {protections.summary()}"
            )
        else:
            say(
                f"protections: {protections.summary()} (model {live.model_name}: {live.protections.summary()})"
            )
        if live.role_arn and role != live.role_arn:
            say(f"execution role {role} (model {live.model_name} runs as {live.role_arn})")
    if serverless is not None:
        return _Plan(role, "serverless", 0, protections, serverless)
    instance_type = request.instance_type or (live and live.instance_type) or DEFAULT_INSTANCE_TYPE
    instance_count = request.instance_count or (live and live.instance_count) or 1
    if live is not None and live.instance_type and instance_type != live.instance_type:
        say(
            f"WARNING: instance type {live.instance_type} -> {instance_type}: SageMaker refuses to change the "
            f"instance type of a variant registered for autoscaling (infra/model-scaling.yaml): deregister its "
            "scalable target first and register it again after"
        )
    if live is not None and live.instance_count and instance_count != live.instance_count:
        say(
            f"the new config asks for {instance_count} instances; the endpoint keeps its {live.instance_count} "
            "(RetainAllVariantProperties: autoscaling owns the count; change its bounds to change it)"
        )
    return _Plan(role, instance_type, instance_count, protections)


def deploy(
    request: DeployRequest,
    s3: S3Client,
    sagemaker: SageMakerClient,
    region: str,
    say: Callable[[str], None],
) -> DeployResult:
    """Upload, register and roll out `request.package`; returns what was created or updated. The live
    model is described first: what it protects is carried over, and a weaker deploy refused, before
    anything is uploaded or created."""
    _check(request)
    image = request.image or image_uri(region, request.framework_version)
    live = describe_live(sagemaker, request.endpoint_name)
    plan = _plan(request, live, say)
    protections = plan.protections
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
    model: CreateModelInputTypeDef = {
        "ModelName": model_name,
        "ExecutionRoleArn": plan.role_arn,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data_url, "Environment": {}},
        "EnableNetworkIsolation": protections.network_isolation,
        "Tags": [{"Key": "model_version", "Value": request.model_version}],
    }
    if protections.vpc_config:
        model["VpcConfig"] = cast("VpcConfigTypeDef", protections.vpc_config)
    _call(f"create_model {model_name}", lambda: sagemaker.create_model(**model))
    config_name = model_name
    variant: ProductionVariantTypeDef
    if plan.serverless is not None:
        say(f"creating endpoint config {config_name} (serverless, {plan.serverless['MemorySizeInMB']} MB)")
        variant = {
            "VariantName": VARIANT,
            "ModelName": model_name,
            "ServerlessConfig": {
                "MemorySizeInMB": plan.serverless["MemorySizeInMB"],
                "MaxConcurrency": plan.serverless["MaxConcurrency"],
            },
        }
    else:
        say(f"creating endpoint config {config_name} ({plan.instance_count} x {plan.instance_type})")
        variant = {
            "VariantName": VARIANT,
            "ModelName": model_name,
            "InitialInstanceCount": plan.instance_count,
            # any name: SageMaker checks it, and it offers instance types the stubs do not list yet
            "InstanceType": cast("ProductionVariantInstanceTypeType", plan.instance_type),
            "InitialVariantWeight": 1.0,
        }
    config: CreateEndpointConfigInputTypeDef = {
        "EndpointConfigName": config_name,
        "ProductionVariants": [variant],
    }
    if protections.kms_key_id:
        config["KmsKeyId"] = protections.kms_key_id
    if protections.data_capture:
        config["DataCaptureConfig"] = cast("DataCaptureConfigTypeDef", protections.data_capture)
    _call(f"create_endpoint_config {config_name}", lambda: sagemaker.create_endpoint_config(**config))
    if live is None:
        say(f"creating endpoint {request.endpoint_name}")
        _call(
            f"create_endpoint {request.endpoint_name}",
            lambda: sagemaker.create_endpoint(
                EndpointName=request.endpoint_name, EndpointConfigName=config_name
            ),
        )
    else:
        say(f"updating endpoint {request.endpoint_name}: {live.config_name} -> {config_name} (blue/green)")
        # RetainAllVariantProperties: the variant keeps the instance count autoscaling set (and its
        # weight) instead of dropping to the new config's InitialInstanceCount. A serverless variant
        # has no count to keep, and its new ServerlessConfig is the one to take.
        _call(
            f"update_endpoint {request.endpoint_name}",
            lambda: sagemaker.update_endpoint(
                EndpointName=request.endpoint_name,
                EndpointConfigName=config_name,
                RetainAllVariantProperties=plan.serverless is None,
            ),
        )
    if request.wait:
        say(f"waiting for {request.endpoint_name} to be InService")
        waiter = sagemaker.get_waiter("endpoint_in_service")
        _call(f"waiting for {request.endpoint_name}", lambda: waiter.wait(EndpointName=request.endpoint_name))
    return DeployResult(
        endpoint_name=request.endpoint_name,
        action="created" if live is None else "updated",
        model_name=model_name,
        endpoint_config_name=config_name,
        previous_endpoint_config_name=None if live is None else live.config_name,
        model_data_url=model_data_url,
        image=image,
        role_arn=plan.role_arn,
        instance_type=plan.instance_type,
        instance_count=plan.instance_count,
        protections=protections,
        previous_protections=None if live is None else live.protections,
        serverless=plan.serverless,
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
