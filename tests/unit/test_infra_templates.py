"""infra/*.yaml agree with the code they deploy: names, key schemas, TTL attributes, settings,
metrics, the image, and least privilege. (cfn-lint and checkov check the templates themselves in
`make lint`; tests/functional/test_infra_data_plane.py deploys the data plane into moto.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.model import build_parser
from features.dynamodb import TTL_ATTRIBUTE as FEATURE_TTL
from features.dynamodb import create_feature_table, table_name
from infra.stack_env import OUTPUT_SETTINGS
from model.deploy import (
    DEFAULT_ENDPOINT_NAME,
    DEFAULT_FRAMEWORK_VERSION,
    SERVING_TENSORFLOW,
    VARIANT,
    image_uri,
)
from worker.alerts.dynamodb_ledger import TTL_ATTRIBUTE as ALERT_TTL
from worker.alerts.ledger import alert_table_name, create_alert_table
from worker.emf import COUNTERS, DIMENSION, GAUGES, NAMESPACE
from worker.settings import Settings
from worker.sources.leases import create_lease_table, lease_table_name

INFRA = Path(__file__).resolve().parents[2] / "infra"


class _Loader(yaml.SafeLoader):
    """CloudFormation's short-form tags as their long form: `!Ref X` -> {"Ref": "X"}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _tag)


def template(name: str) -> dict[str, Any]:
    return yaml.load((INFRA / name).read_text(), Loader=_Loader)  # a SafeLoader subclass


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
        if name.startswith("CHURN_"):
            assert name.removeprefix("CHURN_").lower() in fields, name
    port = next(item["Value"] for item in container["Environment"] if item.get("Name") == "CHURN_HEALTH_PORT")
    assert f"127.0.0.1:{port}/healthz" in container["HealthCheck"]["Command"][-1]
    assert f"CHURN_HEALTH_PORT={port}" in dockerfile


def test_alarms_read_the_metrics_the_worker_writes() -> None:
    alarms = resources("alarms.yaml", "AWS::CloudWatch::Alarm")
    custom = {
        a["Properties"]["MetricName"] for a in alarms.values() if a["Properties"]["Namespace"] == NAMESPACE
    }
    assert custom == {"WorkerReady", "RescoreLagSeconds"}
    assert custom <= {"WorkerReady", *GAUGES, *COUNTERS}
    for alarm in alarms.values():
        if alarm["Properties"]["Namespace"] == NAMESPACE:
            assert [d["Name"] for d in alarm["Properties"]["Dimensions"]] == [DIMENSION]
    assert GAUGES["RescoreLagSeconds"][0] == "rescore_lag_seconds"  # /metrics: churn_rescore_lag_seconds
    assert alarms["WorkerNotReady"]["Properties"]["TreatMissingData"] == "breaching"
    env = template("service.yaml")["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert {"Name": "CHURN_EMF_INTERVAL_SECONDS", "Value": {"Ref": "EmfIntervalSeconds"}} in env[
        "Environment"
    ]
