"""infra/service.yaml and infra/model-endpoint.yaml deployed into moto on top of the data plane: the
task role names exactly the resources the data-plane stack made, and the task definition carries
exactly its outputs as settings; the settings file the stack names (ConfigS3Uri) reaches both task
definitions and exactly that object is readable by both roles; `infra/stack_env.py` finds the stack
with nothing but AWS_REGION set, as on ECS.

The ARNs in the task role are derived inside the template (a queue's from its URL, the archive
bucket's from the S3 URI); here they are compared with what SQS, DynamoDB, SNS and S3 report for
the real resources. moto quirks: an `!If [..., AWS::NoValue]` inside a list stays as a null (real
CloudFormation drops it), so nulls are dropped here; and moto names a SageMaker endpoint itself,
ignoring `EndpointName` (the template test checks the name instead).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import boto3
import pytest

from infra.stack_env import main as stack_env_main
from infra.stack_env import settings_env
from tests.functional.test_infra_data_plane import deploy as deploy_data_plane

INFRA = Path(__file__).resolve().parents[2] / "infra"


def client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1")


def deploy(name: str, template: str, parameters: dict[str, str]) -> dict[str, str]:
    cfn = client("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=(INFRA / template).read_text(),
        Capabilities=["CAPABILITY_IAM"],
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return {
        o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
    }


def without_nulls(value: Any) -> Any:
    if isinstance(value, list):
        return [without_nulls(v) for v in value if v is not None]
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items()}
    return value


def resources_of(statement: dict[str, Any]) -> set[str]:
    resource = statement["Resource"]
    return set(resource if isinstance(resource, list) else [resource])


def deploy_service(prefix: str, data: dict[str, str], **extra: str) -> dict[str, str]:
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    return deploy(
        f"{prefix}service",
        "service.yaml",
        {
            "DeadLetterQueueUrl": data["DeadLetterQueueUrl"],
            "AlertsTopicArn": data["AlertsTopicArn"],
            "TablePrefix": prefix,
            "KmsKeyArn": data["KmsKeyArn"],
            "ArchiveS3Uri": data["ArchiveS3Uri"],
            "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:1",
            "VpcId": vpc,
            "Subnets": subnet,
            **extra,
        },
    )


def task_role_statements(service: dict[str, str]) -> dict[str, dict[str, Any]]:
    return role_statements(service["TaskRoleArn"].rsplit("/", 1)[1])


def role_statements(role: str) -> dict[str, dict[str, Any]]:
    iam = client("iam")
    [policy_name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    if isinstance(document, str):  # moto returns the resolved document as a Python literal, not JSON
        document = ast.literal_eval(document)
    statements = without_nulls(document["Statement"])
    return {s.get("Sid", f"#{i}"): s for i, s in enumerate(statements)}


def test_service_stack_grants_exactly_the_data_planes_resources(
    aws_endpoint: str, unique_prefix: str
) -> None:
    data = deploy_data_plane(unique_prefix)
    service = deploy_service(unique_prefix, data, QueueUrl=data["QueueUrl"])
    statements = task_role_statements(service)
    sqs, ddb = client("sqs"), client("dynamodb")

    def queue_arn(url: str) -> str:
        return str(
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        )

    def table_arn(suffix: str) -> str:
        return str(ddb.describe_table(TableName=f"{unique_prefix}{suffix}")["Table"]["TableArn"])

    assert resources_of(statements["InputQueue"]) == {queue_arn(data["QueueUrl"])}
    assert resources_of(statements["DeadLetterQueue"]) == {queue_arn(data["DeadLetterQueueUrl"])}
    assert resources_of(statements["FeatureTable"]) == {
        table_arn("features"),
        table_arn("features") + "/index/*",
    }
    assert resources_of(statements["AlertTable"]) == {table_arn("alerts"), table_arn("alerts") + "/index/*"}
    assert resources_of(statements["AlertsTopic"]) == {data["AlertsTopicArn"]}
    bucket = data["ArchiveS3Uri"].split("/")[2]
    client("s3").head_bucket(Bucket=bucket)
    assert resources_of(statements["EventArchive"]) == {f"arn:aws:s3:::{bucket}/*"}
    assert resources_of(statements["DataKey"]) == {data["KmsKeyArn"]}
    assert resources_of(statements["Endpoint"]) == {
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/churn-health"
    }
    assert "InputStream" not in statements and "LeaseTable" not in statements, "Source=sqs: no Kinesis rights"

    [task_arn] = client("ecs").list_task_definitions(familyPrefix=f"{unique_prefix}worker")[
        "taskDefinitionArns"
    ]
    [container] = client("ecs").describe_task_definition(taskDefinition=task_arn)["taskDefinition"][
        "containerDefinitions"
    ]
    env = {e["name"]: e["value"] for e in without_nulls(container["environment"])}
    expected = settings_env({"OutputKey": k, "OutputValue": v} for k, v in data.items())
    assert {k: env.get(k) for k in expected} == expected
    assert env["CHURN_ENDPOINT_NAME"] == "churn-health" and env["CHURN_EMF_INTERVAL_SECONDS"] == "60"
    assert container["readonlyRootFilesystem"] is True and container["user"] == "10001"


def test_kinesis_service_stack_reads_the_stream_and_leases_only(
    aws_endpoint: str, unique_prefix: str
) -> None:
    data = deploy_data_plane(unique_prefix, Source="kinesis", KinesisShards="2")
    statements = task_role_statements(
        deploy_service(
            unique_prefix, data, Source="kinesis", StreamName=data["StreamName"], KinesisShards="2"
        )
    )
    stream = client("kinesis").describe_stream_summary(StreamName=data["StreamName"])[
        "StreamDescriptionSummary"
    ]
    leases = client("dynamodb").describe_table(TableName=f"{unique_prefix}leases")["Table"]["TableArn"]
    assert resources_of(statements["InputStream"]) == {stream["StreamARN"]}
    assert resources_of(statements["LeaseTable"]) == {leases}
    assert "InputQueue" not in statements, "Source=kinesis: no rights on any input queue"
    assert statements["DeadLetterQueue"]["Action"] == ["sqs:SendMessage"]


def test_model_endpoint_stack_deploys(aws_endpoint: str, unique_prefix: str) -> None:
    data = deploy_data_plane(unique_prefix)
    outputs = deploy(
        f"{unique_prefix}model",
        "model-endpoint.yaml",
        {
            "ModelDataUrl": "s3://models/churn-model/v1/model.tar.gz",
            "ModelVersion": "v1",
            "KmsKeyArn": data["KmsKeyArn"],
        },
    )
    sagemaker = client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=outputs["EndpointName"])
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"].endswith("/tensorflow-inference:2.20-cpu-py312")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://models/churn-model/v1/model.tar.gz"
    assert variant["VariantName"] == "AllTraffic"
    assert config["KmsKeyId"] == data["KmsKeyArn"]  # what every deploy carries on


def test_model_endpoint_stack_deploys_serverless(aws_endpoint: str, unique_prefix: str) -> None:
    """Serverless=true: the variant has a ServerlessConfig and no instance type, count or volume key."""
    data = deploy_data_plane(unique_prefix)
    outputs = deploy(
        f"{unique_prefix}model",
        "model-endpoint.yaml",
        {
            "ModelDataUrl": "s3://models/churn-model/v1/model.tar.gz",
            "ModelVersion": "v1",
            "KmsKeyArn": data["KmsKeyArn"],
            "Serverless": "true",
            "ServerlessMemorySizeInMB": "3072",
            "ServerlessMaxConcurrency": "20",
        },
    )
    sagemaker = client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=outputs["EndpointName"])
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 20}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    assert not config.get("KmsKeyId")


def all_task_definitions(family: str) -> dict[str, dict[str, Any]]:
    """{family: its one container} for the task definitions of `family` ({prefix}worker, {prefix}retrain)."""
    ecs = client("ecs")
    out = {}
    for arn in ecs.list_task_definitions()["taskDefinitionArns"]:
        definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        if definition["family"].startswith(family):
            [container] = definition["containerDefinitions"]
            out[definition["family"]] = container
    return out


def test_the_settings_file_reaches_both_tasks_and_only_it_is_readable(
    aws_endpoint: str, unique_prefix: str
) -> None:
    data = deploy_data_plane(unique_prefix)
    config = f"s3://{unique_prefix}models/config/churn.toml"
    trainer = {
        "TrainerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn:trainer",
        "ModelBucketName": f"{unique_prefix}models",
        "SageMakerRoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
    }
    deploy_service(unique_prefix, data, QueueUrl=data["QueueUrl"], ConfigS3Uri=config, **trainer)
    containers = all_task_definitions(unique_prefix)
    assert set(containers) == {f"{unique_prefix}worker", f"{unique_prefix}retrain"}
    for family, container in containers.items():
        env = {e["name"]: e["value"] for e in without_nulls(container["environment"])}
        assert env["CHURN_CONFIG"] == config, family
        assert env["AWS_REGION"] == "us-east-1", family
    iam = client("iam")
    granted = {}
    for role in iam.list_roles()["Roles"]:
        name = role["RoleName"]
        if (
            name.startswith(f"{unique_prefix}service-")
            and iam.list_role_policies(RoleName=name)["PolicyNames"]
        ):
            statements = role_statements(name)
            if "TunedConfig" in statements:
                granted[name.split("-")[-2]] = statements
    assert set(granted) == {"TaskRole", "TrainerRole"}
    for statements in granted.values():
        assert statements["TunedConfig"]["Action"] == ["s3:GetObject"]
        assert resources_of(statements["TunedConfig"]) == {
            f"arn:aws:s3:::{unique_prefix}models/config/churn.toml"
        }
        assert resources_of(statements["DataKey"]) == {data["KmsKeyArn"]}


def test_no_settings_file_no_churn_config(aws_endpoint: str, unique_prefix: str) -> None:
    data = deploy_data_plane(unique_prefix)
    service = deploy_service(unique_prefix, data, QueueUrl=data["QueueUrl"])
    [container] = all_task_definitions(unique_prefix).values()
    assert "CHURN_CONFIG" not in {e["name"] for e in without_nulls(container["environment"])}
    assert "TunedConfig" not in task_role_statements(service)


def test_stack_env_finds_the_stack_with_aws_region_alone(
    aws_endpoint: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ECS (and the retraining task definition) set AWS_REGION only, which botocore does not read."""
    data = deploy_data_plane(unique_prefix)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert stack_env_main([f"{unique_prefix}data"]) == 0, capsys.readouterr().err
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert printed["CHURN_SQS_QUEUE_URL"] == data["QueueUrl"]
