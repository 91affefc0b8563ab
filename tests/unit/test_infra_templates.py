"""infra/*.yaml agree with the code they deploy: names, key schemas, TTL attributes, settings,
metrics, the image, and least privilege. (cfn-lint and checkov check the templates themselves in
`make lint`; tests/functional/test_infra_data_plane.py deploys the data plane into moto.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cli.model import build_parser
from features.dynamodb import TTL_ATTRIBUTE as FEATURE_TTL
from features.dynamodb import create_feature_table, table_name
from infra.stack_env import OUTPUT_SETTINGS
from jobs.incumbent import find_deployed
from model.deploy import (
    DEFAULT_ENDPOINT_NAME,
    DEFAULT_FRAMEWORK_VERSION,
    SERVING_TENSORFLOW,
    VARIANT,
    DeployRequest,
    deploy,
    image_uri,
)
from tests.infra_policy import Template, allows, load, required_permissions
from tests.unit.test_deploy_requests import ROLE, LiveEndpoint, RecordingS3, stub_live
from worker.alerts.dynamodb_ledger import TTL_ATTRIBUTE as ALERT_TTL
from worker.alerts.ledger import alert_table_name, create_alert_table
from worker.emf import COUNTERS, DIMENSION, GAUGES, NAMESPACE
from worker.settings import CONFIG_VARIABLE, Settings, known_variables
from worker.sources.leases import create_lease_table, lease_table_name

INFRA = Path(__file__).resolve().parents[2] / "infra"


def template(name: str) -> dict[str, Any]:
    return load(name)


def resources(name: str, kind: str) -> dict[str, dict[str, Any]]:
    return {key: r for key, r in template(name)["Resources"].items() if r["Type"] == kind}


def test_one_endpoint_name_everywhere() -> None:
    deploy_default = (
        build_parser().parse_args(["deploy", "--bucket", "b", "--role-arn", "arn:x"]).endpoint_name
    )
    defaults = {
        "churn-model deploy": deploy_default,
        "model/deploy.py": DEFAULT_ENDPOINT_NAME,
        "worker settings": Settings().endpoint_name,
        **{
            name: template(name)["Parameters"]["EndpointName"]["Default"]
            for name in ("service.yaml", "model-endpoint.yaml", "model-scaling.yaml", "alarms.yaml")
        },
    }
    assert set(defaults.values()) == {"churn-health"}, defaults
    scaling = resources("model-scaling.yaml", "AWS::ApplicationAutoScaling::ScalableTarget")["ScalableTarget"]
    assert scaling["Properties"]["ResourceId"] == {"Fn::Sub": f"endpoint/${{EndpointName}}/variant/{VARIANT}"}
    [variant] = resources("model-endpoint.yaml", "AWS::SageMaker::EndpointConfig")["EndpointConfig"][
        "Properties"
    ]["ProductionVariants"]
    assert variant["VariantName"] == VARIANT


def test_the_endpoint_template_has_a_serverless_variant_sized_as_deploy_sizes_it() -> None:
    """Serverless=true: a ServerlessConfig in place of the instance type and count (SageMaker takes
    one or the other), no volume key, network isolation off, no VPC (a rule refuses SubnetIds), and
    the same defaults and limits as `churn-model deploy --serverless`."""
    from model.deploy import (
        DEFAULT_SERVERLESS_MAX_CONCURRENCY,
        DEFAULT_SERVERLESS_MEMORY_MB,
        MAX_SERVERLESS_CONCURRENCY,
        SERVERLESS_MEMORY_SIZES,
    )

    endpoint = template("model-endpoint.yaml")
    parameters = endpoint["Parameters"]
    assert parameters["Serverless"]["Default"] == "false"
    assert parameters["ServerlessMemorySizeInMB"]["Default"] == DEFAULT_SERVERLESS_MEMORY_MB
    assert tuple(parameters["ServerlessMemorySizeInMB"]["AllowedValues"]) == SERVERLESS_MEMORY_SIZES
    assert parameters["ServerlessMaxConcurrency"]["Default"] == DEFAULT_SERVERLESS_MAX_CONCURRENCY
    assert parameters["ServerlessMaxConcurrency"]["MaxValue"] == MAX_SERVERLESS_CONCURRENCY
    config = endpoint["Resources"]["EndpointConfig"]["Properties"]
    [variant] = config["ProductionVariants"]
    no_value = {"Ref": "AWS::NoValue"}
    for key in ("InstanceType", "InitialInstanceCount"):
        assert variant[key]["Fn::If"][:2] == ["IsServerless", no_value], key
    assert variant["ServerlessConfig"]["Fn::If"][0] == "IsServerless"
    assert variant["ServerlessConfig"]["Fn::If"][2] == no_value
    assert config["KmsKeyId"]["Fn::If"][:2] == ["IsServerless", no_value]
    model = endpoint["Resources"]["Model"]["Properties"]
    assert model["EnableNetworkIsolation"] == {"Fn::If": ["IsServerless", False, True]}
    assert "ServerlessHasNoVpc" in endpoint["Rules"]


def test_make_serving_check_prepares_the_tensorflow_of_deploys_image() -> None:
    makefile = (INFRA.parent / "Makefile").read_text()
    assert (
        re.search(r"(?m)^SERVING_TF\s*:=\s*(\S+)", makefile).group(1)
        == SERVING_TENSORFLOW[  # type: ignore[union-attr]
            DEFAULT_FRAMEWORK_VERSION
        ]
    )


def test_the_endpoint_template_serves_with_deploys_default_image() -> None:
    image = resources("model-endpoint.yaml", "AWS::SageMaker::Model")["Model"]["Properties"][
        "PrimaryContainer"
    ]["Image"]
    default = image["Fn::If"][1]["Fn::Sub"]
    assert default.split(":")[-1] == image_uri("us-east-1").split(":")[-1]
    assert default.startswith("763104351884.dkr.ecr.${AWS::Region}.") and "/tensorflow-inference:" in default


class RecordingDynamoDB:
    """What the worker's own create call asks DynamoDB for (bootstrap's path), without DynamoDB."""

    def __init__(self) -> None:
        self.create: dict[str, Any] = {}
        self.ttl: str | None = None

    async def create_table(self, **kwargs: Any) -> None:
        self.create = kwargs

    def get_waiter(self, _: str) -> Any:
        class Waiter:
            async def wait(self, **_: Any) -> None:
                return None

        return Waiter()

    async def describe_time_to_live(self, **_: Any) -> dict[str, Any]:
        return {}

    async def put_item(self, **_: Any) -> None:  # the alert table's format item
        return None

    async def update_time_to_live(self, TimeToLiveSpecification: dict[str, Any], **_: Any) -> None:
        self.ttl = TimeToLiveSpecification["AttributeName"]


def _schema(properties: dict[str, Any]) -> dict[str, Any]:
    """The parts of a table that must match between the template and the worker's create call."""
    return {
        "keys": [(k["AttributeName"], k["KeyType"]) for k in properties["KeySchema"]],
        "attributes": sorted(
            (a["AttributeName"], a["AttributeType"]) for a in properties["AttributeDefinitions"]
        ),
        "indexes": sorted(
            (i["IndexName"], tuple((k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]))
            for i in properties.get("GlobalSecondaryIndexes", [])
        ),
    }


@pytest.mark.parametrize(
    ("logical_id", "create", "name"),
    [
        ("FeatureTable", create_feature_table, table_name),
        ("AlertTable", create_alert_table, alert_table_name),
        ("LeaseTable", create_lease_table, lease_table_name),
    ],
)
async def test_tables_match_the_workers_own_create_calls(logical_id: str, create: Any, name: Any) -> None:
    """A new key, index (the re-scoring GSI) or TTL in the worker's create call fails here until the
    data-plane template has it too."""
    recorded = RecordingDynamoDB()
    await create(recorded, name("PREFIX"))
    table = template("data-plane.yaml")["Resources"][logical_id]["Properties"]
    assert table["TableName"] == {"Fn::Sub": name("${TablePrefix}")}
    assert _schema(table) == _schema(recorded.create)
    assert table["BillingMode"] == recorded.create["BillingMode"]
    assert table.get("TimeToLiveSpecification", {}).get("AttributeName") == recorded.ttl
    assert {FEATURE_TTL, ALERT_TTL} == {"expires_at"}


def test_data_plane_outputs_are_the_workers_settings() -> None:
    outputs = template("data-plane.yaml")["Outputs"]
    assert {"QueueUrl", "DeadLetterQueueUrl", "AlertsTopicArn", "TablePrefix", "StreamName"} <= set(outputs)
    assert set(OUTPUT_SETTINGS) <= set(outputs)
    fields = set(Settings.model_fields)
    for output, setting in OUTPUT_SETTINGS.items():
        assert setting.removeprefix("CHURN_").lower() in fields, (output, setting)
        assert outputs[output]["Description"] == setting


def _statements(policy_holder: dict[str, Any]) -> list[dict[str, Any]]:
    """Policy statements, each conditional one (Fn::If [cond, statement, NoValue]) tagged with its condition."""
    out = []
    for policy in policy_holder["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                condition, statement, _ = statement["Fn::If"]
                statement = {**statement, "_if": condition}
            out.append(statement)
    return out


def _text(value: Any) -> str:
    return str(value)


def test_task_role_is_least_privilege_per_source() -> None:
    statements = {s["Sid"]: s for s in _statements(template("service.yaml")["Resources"]["TaskRole"])}
    for sid in ("FeatureTable", "AlertTable"):
        actions = set(statements[sid]["Action"])
        assert not actions & {
            "dynamodb:Scan",
            "dynamodb:DeleteItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:*",
        }, sid
    assert "features" in _text(statements["FeatureTable"]["Resource"])
    assert "alerts" in _text(statements["AlertTable"]["Resource"])
    assert statements["InputQueue"]["_if"] == "IsSqs"
    assert "sqs:SendMessage" not in statements["InputQueue"]["Action"], (
        "the worker never writes its input queue"
    )
    assert statements["DeadLetterQueue"]["Action"] == ["sqs:SendMessage"]
    assert statements["InputStream"]["_if"] == statements["LeaseTable"]["_if"] == "IsKinesis"
    assert "leases" in _text(statements["LeaseTable"]["Resource"])
    assert statements["AlertsTopic"]["Action"] == ["sns:Publish"]
    assert "ShadowTopicArn" in _text(statements["AlertsTopic"]["Resource"])
    assert statements["EventArchive"] == {
        **statements["EventArchive"],
        "Action": ["s3:PutObject"],
        "_if": "HasArchive",
    }
    endpoint = _text(statements["Endpoint"]["Resource"])
    assert statements["Endpoint"]["Action"] == ["sagemaker:InvokeEndpoint"]
    assert "endpoint/${EndpointName}" in endpoint and "endpoint/${ShadowEndpointName}" in endpoint
    for statement in statements.values():
        assert "*" not in _text(statement["Action"]), statement["Sid"]
        assert statement["Resource"] != "*", statement["Sid"]


def test_task_definition_matches_the_image_and_the_settings() -> None:
    task = template("service.yaml")["Resources"]["TaskDefinition"]["Properties"]
    [container] = task["ContainerDefinitions"]
    dockerfile = (INFRA.parent / "Dockerfile").read_text()
    assert container["User"] == re.findall(r"(?m)^USER (\d+)", dockerfile)[-1]
    assert container["ReadonlyRootFilesystem"] is True
    assert container["MountPoints"][0]["ContainerPath"] == "/tmp"
    assert container["Command"][:2] == ["churn-worker", "run"]
    assert "/healthz" in container["HealthCheck"]["Command"][-1]
    env_names = []
    for item in container["Environment"]:
        entry = item["Fn::If"][1] if "Fn::If" in item else item
        env_names.append(entry["Name"])
    fields = set(Settings.model_fields)
    for name in env_names:
        if name.startswith("CHURN_") and name != CONFIG_VARIABLE:  # CHURN_CONFIG names the file itself
            assert name.removeprefix("CHURN_").lower() in fields, name
    port = next(item["Value"] for item in container["Environment"] if item.get("Name") == "CHURN_HEALTH_PORT")
    assert f"127.0.0.1:{port}/healthz" in container["HealthCheck"]["Command"][-1]
    assert f"CHURN_HEALTH_PORT={port}" in dockerfile


def test_alarms_read_the_metrics_the_worker_writes() -> None:
    alarms = resources("alarms.yaml", "AWS::CloudWatch::Alarm")
    drift = alarms.pop("ModelDrift")["Properties"]  # metric math over the drift job's metric, below
    custom = {
        a["Properties"]["MetricName"] for a in alarms.values() if a["Properties"]["Namespace"] == NAMESPACE
    }
    assert custom == {"WorkerReady", "RescoreLagSeconds"}
    assert custom <= {"WorkerReady", *GAUGES, *COUNTERS}
    for alarm in alarms.values():
        if alarm["Properties"]["Namespace"] == NAMESPACE:
            assert [d["Name"] for d in alarm["Properties"]["Dimensions"]] == [DIMENSION]
    # `churn-model drift --emf` writes DriftMaxPSI in the worker's namespace and dimension.
    (metric,) = [m["MetricStat"]["Metric"] for m in drift["Metrics"] if "MetricStat" in m]
    assert (metric["Namespace"], metric["MetricName"]) == (NAMESPACE, "DriftMaxPSI")
    assert [d["Name"] for d in metric["Dimensions"]] == [DIMENSION]
    assert GAUGES["RescoreLagSeconds"][0] == "rescore_lag_seconds"  # /metrics: churn_rescore_lag_seconds
    assert alarms["WorkerNotReady"]["Properties"]["TreatMissingData"] == "breaching"
    env = template("service.yaml")["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {"Name": "CHURN_EMF_INTERVAL_SECONDS", "Value": {"Ref": "EmfIntervalSeconds"}} in env[
        "Environment"
    ]


# --- The seams of a team's journey (docs/operations.md; tests/e2e/test_journey.py walks it whole) ---

KEY = "arn:aws:kms:us-east-1:123456789012:key/0b5c1f6e-0000-4000-8000-000000000001"
CONFIG = "s3://churn-models/config/churn.toml"
SERVICE = {
    "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/churn-events",
    "DeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/churn-events-dlq",
    "AlertsTopicArn": "arn:aws:sns:us-east-1:123456789012:churn-alerts",
    "KmsKeyArn": KEY,
    "ArchiveS3Uri": "s3://churn-archive/events/",
    "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn-alerts:1",
    "VpcId": "vpc-0a",
    "Subnets": "subnet-0a,subnet-0b",
    "TrainerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn-alerts:trainer",
    "ModelBucketName": "churn-models",
    "SageMakerRoleArn": ROLE,
}
ENDPOINT = {
    "ModelDataUrl": "s3://churn-models/churn-model/2026-11-01-aaaaaa/model.tar.gz",
    "ModelVersion": "2026-11-01-aaaaaa",
    "KmsKeyArn": KEY,
}


def _environment(container: dict[str, Any]) -> dict[str, str]:
    return {e["Name"]: e["Value"] for e in container["Environment"]}


def test_both_tasks_read_the_settings_file_the_stack_names() -> None:
    """ConfigS3Uri is the CHURN_CONFIG of the worker and of the retraining task, and each task's role
    may read exactly that object (and decrypt it with the data key); left empty, neither."""
    tuned = Template("service.yaml", {**SERVICE, "ConfigS3Uri": CONFIG})
    plain = Template("service.yaml", SERVICE)
    config_object = "arn:aws:s3:::churn-models/config/churn.toml"
    for task, role in (("TaskDefinition", "TaskRole"), ("TrainerTaskDefinition", "TrainerRole")):
        [container] = tuned.properties(task)["ContainerDefinitions"]
        environment = _environment(container)
        assert environment.get("CHURN_CONFIG") == CONFIG, task
        # every CHURN_* a task gets is one the settings read (the loader refuses any other)
        assert {k for k in environment if k.startswith("CHURN_")} <= known_variables(), task
        statements = tuned.statements(role)
        assert allows(statements, "s3:GetObject", config_object), role
        assert not allows(statements, "s3:GetObject", "arn:aws:s3:::churn-models/config/other.toml"), role
        assert allows(statements, "kms:Decrypt", KEY), role
        [container] = plain.properties(task)["ContainerDefinitions"]
        assert "CHURN_CONFIG" not in _environment(container), task
        assert not allows(plain.statements(role), "s3:GetObject", config_object), role
    pattern = template("service.yaml")["Parameters"]["ConfigS3Uri"]["AllowedPattern"]
    assert re.fullmatch(pattern, CONFIG) and re.fullmatch(pattern, "")
    assert not re.fullmatch(pattern, "s3://churn-models/") and not re.fullmatch(pattern, "churn.toml")


def _created_names(stack: Template) -> dict[str, str]:
    """The names the endpoint stack's SageMaker resources get: the template's name property, else
    one CloudFormation generates (LogicalId-RANDOM, as CloudFormation and moto do)."""
    return {
        logical_id: stack.properties(logical_id).get(name, f"{logical_id}-Q2x9KpL0vT3m")
        for logical_id, name in (
            ("Model", "ModelName"),
            ("EndpointConfig", "EndpointConfigName"),
            ("Endpoint", "EndpointName"),
        )
    }


def _recording(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every API call `client` makes, by operation name, with its parameters."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.append((model.name, dict(params)))

    client.meta.events.register("provide-client-params.sagemaker.*", record)
    return calls


def _denied(
    statements: list[dict[str, Any]], calls: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, str]]:
    return [
        (action, arn)
        for operation, params in calls
        for action, arn in required_permissions(operation, params)
        if not allows(statements, action, arn)
    ]


def _live_from_template(names: dict[str, str]) -> LiveEndpoint:
    return LiveEndpoint(
        endpoint=names["Endpoint"],
        config=names["EndpointConfig"],
        model=names["Model"],
        model_data_url=ENDPOINT["ModelDataUrl"],
        vpc=None,
        capture=None,
    )


def test_the_retraining_role_may_describe_the_model_behind_the_templates_endpoint() -> None:
    """What `churn-model retrain` does first, monthly: find the model behind the endpoint
    model-endpoint.yaml made. Every describe call it makes is allowed on the names that template
    gives, and the role may describe nothing else."""
    names = _created_names(Template("model-endpoint.yaml", ENDPOINT))
    statements = Template("service.yaml", {**SERVICE, "EndpointName": names["Endpoint"]}).statements(
        "TrainerRole"
    )
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    calls = _recording(sagemaker)
    with Stubber(sagemaker) as stub:
        stub_live(stub, _live_from_template(names))
        deployed = find_deployed(sagemaker, names["Endpoint"])
    assert deployed is not None and deployed.model_data_url == ENDPOINT["ModelDataUrl"]
    assert [operation for operation, _ in calls] == [
        "DescribeEndpoint",
        "DescribeEndpointConfig",
        "DescribeModel",
    ]
    assert not _denied(statements, calls), f"the retraining role may not {_denied(statements, calls)}"
    granted = {a for s in statements for a in s["Action"] if a.startswith("sagemaker:Describe")}
    assert granted == {f"sagemaker:{operation}" for operation, _ in calls}


def test_every_request_of_the_monthly_deploy_is_allowed_to_the_retraining_role(tmp_path: Path) -> None:
    """Retrain's deploy onto that endpoint: describe, create the model and config, update the
    endpoint, pass the model's role, upload the package: each allowed to the retraining role."""
    names = _created_names(Template("model-endpoint.yaml", ENDPOINT))
    statements = Template("service.yaml", {**SERVICE, "EndpointName": names["Endpoint"]}).statements(
        "TrainerRole"
    )
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    calls = _recording(sagemaker)
    package = tmp_path / "model.tar.gz"
    package.write_bytes(b"package")
    s3 = RecordingS3()
    with Stubber(sagemaker) as stub:
        stub_live(stub, _live_from_template(names))
        stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"})
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"},
        )
        stub.add_response(
            "update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"}
        )
        deploy(
            DeployRequest(
                package=package,
                model_version="2026-12-01-bbbbbb",
                endpoint_name=names["Endpoint"],
                bucket=SERVICE["ModelBucketName"],
                role_arn=SERVICE["SageMakerRoleArn"],
            ),
            s3,
            sagemaker,
            "us-east-1",
            lambda _: None,
        )
        stub.assert_no_pending_responses()
    assert [operation for operation, _ in calls][-3:] == [
        "CreateModel",
        "CreateEndpointConfig",
        "UpdateEndpoint",
    ]
    assert not _denied(statements, calls), f"the retraining role may not {_denied(statements, calls)}"
    [upload] = s3.uploads
    assert allows(statements, "s3:PutObject", f"arn:aws:s3:::{upload['Bucket']}/{upload['Key']}")


def test_the_endpoint_template_protects_what_deploys_carry_on() -> None:
    """What deploys keep (model/deploy.py) starts here: network isolation, the data key on the
    instances' volumes, the VPC when subnets are given; and a stack update to a new config keeps the
    instance count autoscaling chose (model-scaling.yaml registers the variant)."""
    vpc = Template(
        "model-endpoint.yaml", {**ENDPOINT, "SubnetIds": "subnet-0a,subnet-0b", "SecurityGroupIds": "sg-0c"}
    )
    plain = Template("model-endpoint.yaml", ENDPOINT)
    for stack in (vpc, plain):
        assert stack.properties("Model")["EnableNetworkIsolation"] is True
        assert stack.properties("EndpointConfig")["KmsKeyId"] == KEY
        assert stack.properties("Endpoint")["RetainAllVariantProperties"] is True
    assert vpc.properties("Model")["VpcConfig"] == {
        "Subnets": ["subnet-0a", "subnet-0b"],
        "SecurityGroupIds": ["sg-0c"],
    }
    assert "VpcConfig" not in plain.properties("Model")
    assert allows(
        vpc.statements("ExecutionRole"),
        "ec2:CreateNetworkInterface",
        "arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1",
    )
    assert not allows(
        plain.statements("ExecutionRole"),
        "ec2:CreateNetworkInterface",
        "arn:aws:ec2:us-east-1:123456789012:network-interface/eni-1",
    )
