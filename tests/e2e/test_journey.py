"""A team's journey, end to end, from the templates in infra/ (docs/operations.md walks the same steps
with the documented commands): the stacks deployed; history copied into the archive and its last
week replayed; the worker run from its task definition; thresholds tuned on the archive and put
where the stack says; the worker and the monthly retraining task both using them; last month's
model deployed onto the template's endpoint by hand; the retraining task finding it, gating and
deploying; every new model and config keeping the endpoint's network isolation, VPC, KMS key, role
and instances; the worker scoring with what was deployed.

Where it runs: moto's server with SageMaker (and SQS's speed) made faithful where the journey depends
on it (tests/e2e/sagemaker_emu.py: template names, network isolation, UpdateEndpoint), a child
process of this test; CloudFormation as far as moto's goes (the data plane, the model endpoint, the
service: task definitions, roles, the schedule), and by hand beyond it (model-scaling.yaml's
scalable target is registered through the API; SageMaker's serving is `model.server.LocalEndpoint`
loading the package the endpoint's model points at, fetched from S3 as SageMaker would). Every
process gets the task definition's environment as ECS describes it, plus only what points it at
the stand-ins: AWS_ENDPOINT_URL and throwaway credentials, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME for
the model server, and the health server on a free loopback port (the task binds 0.0.0.0:8081,
which parallel tests would fight over). No AWS_DEFAULT_REGION anywhere: the task definitions set
AWS_REGION only.

The first model is the session's tiny one. Last month's model and the month's candidate are trained
on the same archive with the same options and seed: the same weights, so the gate's verdict is
certain (every difference 0); the gate's statistics are tests/unit/test_calibration_and_gate.py's.
What is checked at each step is said where it happens.
"""

from __future__ import annotations

import ast
import gzip
import json
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from jobs.incumbent import bundle_from_package
from model.altsim import generate
from model.bundle import load_bundle
from model.export import build_package
from model.server import LocalEndpoint
from tests.e2e.conftest import BIN, Process, base_env
from tests.fakes import wait_until_blocking
from tests.infra_policy import allows, required_permissions
from worker.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
# The first settings file, before anything is tuned: the defaults, and one runtime setting of the
# team's (two SQS pollers) that the tuned file must carry over.
FIRST_SETTINGS = (
    "# churn-alerts settings: the defaults until `churn-worker tune` writes thresholds\nsqs_pollers = 2\n"
)
# A small training, the same for last month's model (by hand) and the month's retraining (the
# task's command as RetrainCommand passes it): same archive, options and seed, same weights, so the
# gate's verdict is certain (every difference 0); a small account's gate minimums (3: the gate's
# customers hold 4-6 settled 30-day churners depending on the hour the data is generated against).
TRAINING = ["--epochs", "1", "--max-train-rows", "3000", "--no-evaluate", "--no-baselines"]
RETRAIN = ",".join(
    [
        "churn-model",
        "retrain",
        *TRAINING,
        "--rounds",
        "50",
        "--min-positives",
        "3",
        "--min-negatives",
        "3",
        "--json",
    ]
)


@pytest.fixture
def emulator() -> Iterator[str]:
    env = {**base_env(), "PYTHONPATH": str(ROOT)}
    process = Process([sys.executable, "-m", "tests.e2e.sagemaker_emu", "--port", "0"], env, "moto")
    url = process.wait_for(r"listening on (http://\S+)").group(1)
    yield url
    process.stop()


class Journey:
    """The team's account (the emulator), its stacks' outputs and the processes it runs."""

    def __init__(self, endpoint_url: str, tmp: Path) -> None:
        self.endpoint_url = endpoint_url
        self.tmp = tmp
        self.prefix = f"j{uuid.uuid4().hex[:8]}-"
        self.workers: list[Process] = []
        self.model_server: LocalEndpoint | None = None

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="journey",
            aws_secret_access_key="journey",
        )

    def deploy(self, stack: str, template: str, parameters: dict[str, str]) -> dict[str, str]:
        cfn = self.client("cloudformation")
        name = f"{self.prefix}{stack}"
        cfn.create_stack(
            StackName=name,
            TemplateBody=(INFRA / template).read_text(),
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        cfn.get_waiter("stack_create_complete").wait(
            StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        [described] = cfn.describe_stacks(StackName=name)["Stacks"]
        return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}

    def task(self, family: str) -> dict[str, Any]:
        """The one container of a task definition family, as ECS describes it (moto keeps an
        `!If [..., AWS::NoValue]` list item as a null, which ECS never has: dropped)."""
        ecs = self.client("ecs")
        [arn] = [
            a for a in ecs.list_task_definitions()["taskDefinitionArns"] if f"/{self.prefix}{family}:" in a
        ]
        [container] = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"][
            "containerDefinitions"
        ]
        container["environment"] = [e for e in container["environment"] if e is not None]
        return dict(container)

    def env_of(self, container: dict[str, Any]) -> dict[str, str]:
        """The task's environment, and only what points it at this machine's stand-ins."""
        env = {k: v for k, v in base_env().items() if k != "AWS_DEFAULT_REGION"}
        env.update({e["name"]: e["value"] for e in container["environment"]})
        env.update(
            AWS_ENDPOINT_URL=self.endpoint_url,
            AWS_ACCESS_KEY_ID="journey",
            AWS_SECRET_ACCESS_KEY="journey",
        )
        if self.model_server is not None:
            env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = self.model_server.url
        if "CHURN_HEALTH_PORT" in env:  # the task's 0.0.0.0:8081, on a free loopback port here
            env.update(CHURN_HEALTH_HOST="127.0.0.1", CHURN_HEALTH_PORT="0")
        return env

    def run(self, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        command = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
        done = subprocess.run([command, *args[1:]], env=env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(args)}: exit {done.returncode}\n{done.stderr[-4000:]}"
        return done

    def start_worker(self, container: dict[str, Any], name: str) -> Process:
        """The task's command under the task's environment."""
        command = [str(BIN / container["command"][0]), *container["command"][1:]]
        worker = Process(command, self.env_of(container), name)
        worker.wait_for(r'"event": "worker started"', timeout=90)
        self.workers.append(worker)
        return worker

    def serve_the_endpoints_model(self, endpoint: str) -> str:
        """What SageMaker serves: the package the endpoint's model points at, fetched from S3. The
        same port across restarts, as the endpoint's URL stays the same across updates."""
        sagemaker = self.client("sagemaker")
        config = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        [variant] = sagemaker.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
        url = sagemaker.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]["ModelDataUrl"]
        bucket, key = url[len("s3://") :].split("/", 1)
        where = self.tmp / f"served-{uuid.uuid4().hex[:6]}"
        where.mkdir()
        self.client("s3").download_file(Bucket=bucket, Key=key, Filename=str(where / "model.tar.gz"))
        bundle = bundle_from_package(where / "model.tar.gz", where / "bundle")
        port = 0
        if self.model_server is not None:
            port = self.model_server.port
            self.model_server.close()
        self.model_server = LocalEndpoint(bundle, port=port).start()
        return str(bundle.model_version)

    def subscribe(self, topic_arn: str) -> str:
        sqs, sns = self.client("sqs"), self.client("sns")
        url = sqs.create_queue(QueueName=f"{self.prefix}retention-team")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
        )
        return str(url)

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        sqs, out = self.client("sqs"), []
        while True:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []
            )
            if not got:
                return out
            for message in got:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def queue_depth(self, queue_url: str) -> int:
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def wait(self, condition: Any, what: str, timeout: float = 180) -> None:
        wait_until_blocking(
            condition,
            timeout,
            interval=0.5,
            what=what,
            details=lambda: (
                "worker output:\n" + "\n".join(line for w in self.workers for line in w.lines[-20:])
            ),
        )

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.model_server is not None:
            self.model_server.close()


@pytest.fixture
def journey(emulator: str, tmp_path: Path) -> Iterator[Journey]:
    team = Journey(emulator, tmp_path)
    yield team
    team.close()


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def calls(customer: str, count: int, now: datetime) -> list[dict[str, Any]]:
    """A customer who signed up 20 days ago and called `count` times in the last 10 days."""
    events = [
        {
            "event_id": f"{customer}-0",
            "customer_id": customer,
            "type": "customer_signed_up",
            "occurred_at": iso(now - timedelta(days=20)),
            "tier": "standard",
        }
    ]
    for n in range(count):
        events.append(
            {
                "event_id": f"{customer}-{n + 1}",
                "customer_id": customer,
                "type": "ib_call",
                "occurred_at": iso(now - timedelta(days=10 - n)),
                "sentiment": "negative",
            }
        )
    return events


def callers(prefix: str, now: datetime) -> list[dict[str, Any]]:
    """Ten customers whose calls tell who leaves: six call three times in a week and churn a week
    later, four call twice and stay. In the history, they make tune's IB_CALL_SPIKE threshold three
    calls (precise at three, not at two; the simulated customers rarely call). Their calls lie more
    than 30 days before the history ends, so tune can read the alerts they make (settled)."""
    events: list[dict[str, Any]] = []
    joined = now - timedelta(days=45)
    for i in range(10):
        customer, churns = f"{prefix}caller-{i}", i < 6
        stamps = [("customer_signed_up", joined, {"tier": "standard"})]
        stamps += [
            ("ib_call", joined + timedelta(days=10 + k), {"sentiment": "negative"})
            for k in range(3 if churns else 2)
        ]
        if churns:
            stamps.append(("customer_churned", joined + timedelta(days=20), {}))
        events += [
            {
                "event_id": f"{customer}-{n}",
                "customer_id": customer,
                "type": kind,
                "occurred_at": iso(at),
                **extra,
            }
            for n, (kind, at, extra) in enumerate(stamps)
        ]
    return events


def policy_statements(iam: Any, role_arn_or_name: str) -> list[dict[str, Any]]:
    role = role_arn_or_name.rsplit("/", 1)[-1]
    statements = []
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(document, str):  # moto: the resolved document as a Python literal
            document = ast.literal_eval(document)
        statements += [s for s in document["Statement"] if s is not None]
    return statements


def test_a_teams_journey_from_the_templates_to_a_retrained_model_in_production(
    journey: Journey, tiny_bundle: Path, tmp_path: Path
) -> None:
    started = time.monotonic()

    def step(text: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s {text}", flush=True)

    p = journey.prefix
    s3, sagemaker, iam, sqs = (journey.client(s) for s in ("s3", "sagemaker", "iam", "sqs"))

    # 1. The stacks. The data plane; a model bucket (no template makes one) encrypted with the data
    # key; a first model's package in it (the session's tiny model); the endpoint in a VPC on two
    # instances, autoscaling's bounds registered by hand (model-scaling.yaml needs Application Auto
    # Scaling, which moto's CloudFormation lacks); the settings file where ConfigS3Uri points (tasks
    # refuse to start on a missing one); the service with the retraining task.
    data = journey.deploy("data", "data-plane.yaml", {"TablePrefix": p})
    models = f"{p}models"
    s3.create_bucket(Bucket=models)
    s3.put_bucket_encryption(
        Bucket=models,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": data["KmsKeyArn"],
                    }
                }
            ]
        },
    )
    tiny = load_bundle(tiny_bundle)
    first = tiny.model_version
    package = build_package(
        tiny.saved_model_dir, {**tiny.spec, "model_version": first}, tmp_path / "model.tar.gz"
    )
    s3.upload_file(Filename=str(package), Bucket=models, Key=f"churn-model/{first}/model.tar.gz")
    ec2 = journey.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
    group = ec2.create_security_group(GroupName=f"{p}model", Description="model", VpcId=vpc)["GroupId"]
    endpoint = f"{p}churn"
    model_stack = journey.deploy(
        "model",
        "model-endpoint.yaml",
        {
            "EndpointName": endpoint,
            "ModelDataUrl": f"s3://{models}/churn-model/{first}/model.tar.gz",
            "ModelVersion": first,
            "KmsKeyArn": data["KmsKeyArn"],
            "InitialInstanceCount": "2",
            "SubnetIds": ",".join(subnets),
            "SecurityGroupIds": group,
        },
    )
    assert model_stack["EndpointName"] == endpoint and model_stack["ModelName"] == f"{endpoint}-{first}"
    journey.client("application-autoscaling").register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=f"endpoint/{endpoint}/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=2,
        MaxCapacity=4,
    )
    config_uri = f"s3://{models}/config/churn.toml"
    s3.put_object(Bucket=models, Key="config/churn.toml", Body=FIRST_SETTINGS.encode())
    journey.deploy(
        "service",
        "service.yaml",
        {
            "QueueUrl": data["QueueUrl"],
            "DeadLetterQueueUrl": data["DeadLetterQueueUrl"],
            "AlertsTopicArn": data["AlertsTopicArn"],
            "TablePrefix": p,
            "KmsKeyArn": data["KmsKeyArn"],
            "ArchiveS3Uri": data["ArchiveS3Uri"],
            "EndpointName": model_stack["EndpointName"],
            "ConfigS3Uri": config_uri,
            "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn-alerts:1",
            "TrainerImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn-alerts:trainer",
            "ModelBucketName": models,
            "SageMakerRoleArn": model_stack["ExecutionRoleArn"],
            "RetrainCommand": RETRAIN,
            "VpcId": vpc,
            "Subnets": ",".join(subnets),
        },
    )
    worker_task, trainer_task = journey.task("worker"), journey.task("retrain")
    trainer_env = journey.env_of(trainer_task)
    assert journey.env_of(worker_task)["CHURN_CONFIG"] == trainer_env["CHURN_CONFIG"] == config_uri
    assert "AWS_DEFAULT_REGION" not in trainer_env and trainer_env["AWS_REGION"] == "us-east-1"
    step("stacks deployed: data plane, model endpoint (VPC, data key, 2 instances), service with retraining")

    # 2. History. What is older than the worker's retention window cannot go through it: the whole
    # history is copied into the archive (the readers take any event file under it; duplicates by
    # event_id count once), and its last week replayed through the queue. The worker, from its task
    # definition and scoring with the endpoint's model, works it off: features, the archive, alerts.
    assert journey.serve_the_endpoints_model(endpoint) == first
    worker_env = journey.env_of(worker_task)  # with the model server's URL now
    retention = journey.subscribe(data["AlertsTopicArn"])
    now = datetime.now(UTC)
    history = tmp_path / "history.jsonl.gz"
    with gzip.open(history, "wt", encoding="utf-8") as out:
        for event in [*generate(200, 60, seed=3, start=now - timedelta(days=61)).events, *callers(p, now)]:
            out.write(json.dumps(event) + "\n")
    archive = data["ArchiveS3Uri"]
    bucket, prefix = archive[len("s3://") :].split("/", 1)
    s3.upload_file(Filename=str(history), Bucket=bucket, Key=f"{prefix}backfill/history.jsonl.gz")
    replay = journey.run(
        worker_env,
        "churn-worker",
        "replay",
        str(history),
        "--to",
        "sqs",
        "--start",
        iso(now - timedelta(days=7)),
        "--json",
    )
    replayed = json.loads(replay.stdout.splitlines()[-1])
    probe = calls(f"{p}probe-a", 3, now)  # three calls in 14 days: IB_CALL_SPIKE by default (two)
    send(sqs, data["QueueUrl"], probe)
    worker = journey.start_worker(worker_task, "worker")
    journey.wait(lambda: journey.queue_depth(data["QueueUrl"]) == 0, "the history, worked off", timeout=900)
    alerts: list[dict[str, Any]] = []
    journey.wait(
        lambda: bool(
            alerts.extend(journey.drain(retention)) or any(a["customer_id"] == f"{p}probe-a" for a in alerts)
        ),
        "the probe's IB_CALL_SPIKE alert",
    )
    assert {a["model_version"] for a in alerts if a.get("scoring") == "model"} == {first}
    assert ("IB_CALL_SPIKE", f"{p}probe-a") in {(a["type"], a["customer_id"]) for a in alerts}
    assert worker.stop() == 0
    step(f"last week replayed ({replayed['sent']} events), {len(alerts)} alerts, model {first}")

    # 3. Tune on the archive: who churned, from it; thresholds swept with the endpoint's model;
    # --config, the file in force, whose other settings the tuned file carries over.
    outcomes = tmp_path / "outcomes.jsonl"
    journey.run(worker_env, "churn-worker", "outcomes", "--events", archive, "--out", str(outcomes))
    tuned = tmp_path / "churn.toml"
    journey.run(
        worker_env,
        "churn-worker",
        "tune",
        archive,
        "--outcomes",
        str(outcomes),
        "--out",
        str(tuned),
        "--endpoint",
        endpoint,
        "--config",
        config_uri,
        "--json",
    )
    tuned_settings = load_settings(tuned)
    thresholds, ib = tuned_settings.alerts, tuned_settings.alerts.ib_call_spike
    # The callers in the history make three calls the precise threshold: not the default two, so
    # what follows can tell the tuned file from the defaults by behaviour.
    assert ib.enabled and ib.min_calls_14d == 3, ib
    assert tuned_settings.sqs_pollers == 2
    step(f"tuned on the archive: IB_CALL_SPIKE at {ib.min_calls_14d} calls")

    # 4. The tuned file where the stack says. `config show` under the task's environment reads it,
    # and the worker restarted from its task definition uses it: two calls alerted by default (the
    # first probe had three); under the tuned file two do not, three do.
    s3.upload_file(Filename=str(tuned), Bucket=models, Key="config/churn.toml")
    shown = json.loads(journey.run(worker_env, "churn-worker", "config", "show", "--json").stdout)
    assert shown["alerts"] == thresholds.model_dump(mode="json") and shown["sqs_pollers"] == 2
    worker = journey.start_worker(worker_task, "worker-tuned")
    send(sqs, data["QueueUrl"], [*calls(f"{p}probe-b", 2, now), *calls(f"{p}probe-c", 3, now)])
    journey.wait(lambda: journey.queue_depth(data["QueueUrl"]) == 0, "the probes, worked off")
    spiked: set[str] = set()
    journey.wait(
        lambda: bool(
            spiked.update(a["customer_id"] for a in journey.drain(retention) if a["type"] == "IB_CALL_SPIKE")
            or f"{p}probe-c" in spiked
        ),
        "probe-c's IB_CALL_SPIKE alert",
    )
    time.sleep(2)  # probe-b's, had there been one, came in the same batch
    spiked.update(a["customer_id"] for a in journey.drain(retention) if a["type"] == "IB_CALL_SPIKE")
    assert spiked == {f"{p}probe-c"}, spiked
    assert worker.stop() == 0
    step("worker restarted on the tuned file: two calls no longer alert, three do")

    # 5. Last month's model: trained on the archive by hand and deployed onto the template's
    # endpoint with `churn-model deploy`, given no role, VPC or key: it keeps the template's.
    outcomes_now = tmp_path / "outcomes-now.jsonl"
    journey.run(trainer_env, "churn-worker", "outcomes", "--events", archive, "--out", str(outcomes_now))
    trained = json.loads(
        journey.run(
            trainer_env,
            "churn-model",
            "train",
            "--events",
            archive,
            "--outcomes",
            str(outcomes_now),
            "--out",
            str(tmp_path / "last-month"),
            *TRAINING,
            "--quiet",
            "--json",
        ).stdout.splitlines()[-1]
    )
    second = trained["model_version"]
    deployed = json.loads(
        journey.run(
            trainer_env,
            "churn-model",
            "deploy",
            "--bundle",
            str(tmp_path / "last-month"),
            "--bucket",
            models,
            "--endpoint-name",
            endpoint,
            "--json",
        ).stdout.splitlines()[-1]
    )
    assert (
        deployed["action"] == "updated" and deployed["previous_endpoint_config_name"] == f"{endpoint}-{first}"
    )
    assert_protected(journey, endpoint, data["KmsKeyArn"], subnets, group, model_stack["ExecutionRoleArn"])
    step(f"last month's model {second} deployed by hand, the template's protections kept")

    # 6. The monthly retraining: the task's command under the task's environment (AWS_REGION only).
    command = trainer_task["command"]
    assert command[:2] == ["churn-model", "retrain"]
    done = journey.run(trainer_env, *command, timeout=900)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    behind = f"s3://{models}/churn-model/{second}/model.tar.gz"
    assert f"incumbent: {behind}" in done.stderr, done.stderr[-3000:]
    assert result["incumbent_version"] == second and result["gate"]["passed"], (result, done.stderr[-3000:])
    assert result["deployed"] is True and result["alerts_config"] == config_uri
    assert result["deploy"]["previous_endpoint_config_name"] == deployed["endpoint_config_name"]
    stored = tmp_path / "bundle.tar.gz"
    s3.download_file(
        Bucket=models, Key=f"churn-model/{result['model_version']}/bundle.tar.gz", Filename=str(stored)
    )
    with tarfile.open(stored) as tar:
        record = json.load(tar.extractfile("gate.json"))  # type: ignore[arg-type]
    assert record["alerts_config"] == config_uri and record["alerts"] == thresholds.model_dump(mode="json")
    # The calls it made to find the incumbent are ones the deployed retraining role allows.
    [trainer_arn] = [
        r["Arn"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(f"{p}service-TrainerRole")
    ]
    trainer_role = policy_statements(iam, trainer_arn)
    for operation, params in (
        ("DescribeEndpoint", {"EndpointName": endpoint}),
        ("DescribeEndpointConfig", {"EndpointConfigName": deployed["endpoint_config_name"]}),
        ("DescribeModel", {"ModelName": deployed["model_name"]}),
        ("DescribeEndpointConfig", {"EndpointConfigName": f"{endpoint}-{first}"}),  # the template's
        ("DescribeModel", {"ModelName": f"{endpoint}-{first}"}),
    ):
        for action, arn in required_permissions(operation, params):
            assert allows(trainer_role, action, arn), (action, arn)
    assert_protected(journey, endpoint, data["KmsKeyArn"], subnets, group, model_stack["ExecutionRoleArn"])
    assert (
        sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
        == result["deploy"]["endpoint_config_name"]
    )
    step(f"retrained: {result['model_version']} gated at the tuned thresholds against {second}, deployed")

    # 7. SageMaker serves the deployed package; the worker, restarted, scores with it.
    assert journey.serve_the_endpoints_model(endpoint) == result["model_version"] != first
    worker = journey.start_worker(worker_task, "worker-retrained")
    send(sqs, data["QueueUrl"], calls(f"{p}probe-d", 4, now))
    final: list[dict[str, Any]] = []
    journey.wait(
        lambda: bool(
            final.extend(journey.drain(retention)) or any(a["customer_id"] == f"{p}probe-d" for a in final)
        ),
        "probe-d's alert",
    )
    [alert] = [a for a in final if a["customer_id"] == f"{p}probe-d"]
    assert alert["model_version"] == result["model_version"] and alert["scoring"] == "model", alert
    step(f"the worker scores with {result['model_version']}")


def send(sqs: Any, queue_url: str, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 10):
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "MessageBody": json.dumps(e)} for i, e in enumerate(events[start : start + 10])
            ],
        )


def assert_protected(
    journey: Journey, endpoint: str, key: str, subnets: list[str], group: str, role: str
) -> None:
    """The model and config live at the endpoint keep the template's protections, role and instances."""
    sagemaker = journey.client("sagemaker")
    described = sagemaker.describe_endpoint(EndpointName=endpoint)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    assert model["EnableNetworkIsolation"] is True, model
    assert model["VpcConfig"] == {"Subnets": subnets, "SecurityGroupIds": [group]}, model
    assert model["ExecutionRoleArn"] == role
    assert config["KmsKeyId"] == key
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.xlarge", 2)
    assert described["ProductionVariants"][0]["DesiredInstanceCount"] == 2  # autoscaling's, kept
