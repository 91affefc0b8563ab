"""infra/service.yaml and infra/model-endpoint.yaml deployed into moto on top of the data plane: the
task role names exactly the resources the data-plane stack made, and the task definition carries
exactly its outputs as settings.

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
    iam = client("iam")
    role = service["TaskRoleArn"].rsplit("/", 1)[1]
    [policy_name] = iam.list_role_policies(RoleName=role)["PolicyNames"]
    document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
    if isinstance(document, str):  # moto returns the resolved document as a Python literal, not JSON
        document = ast.literal_eval(document)
    return {s["Sid"]: s for s in without_nulls(document["Statement"])}


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
