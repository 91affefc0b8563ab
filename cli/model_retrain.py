"""`churn-model retrain`'s options (jobs/retrain.py runs the job). Defaults come from the environment
the scheduled task gets (infra/service.yaml's TrainerTaskDefinition): CHURN_ARCHIVE_S3_URI,
CHURN_ENDPOINT_NAME, CHURN_MODEL_BUCKET, CHURN_SAGEMAKER_ROLE_ARN (`worker.settings.ModelSettings`
reads them), so `churn-model retrain` alone runs the whole loop there; the gate's alert thresholds
are the worker's (`--config`, else CHURN_CONFIG, a path or an s3:// object, under CHURN_ALERTS__*).

`add_endpoint_options` and `endpoint_options` are the options `retrain` and `deploy` share for the
new model and endpoint config: instance type and count, network isolation, KMS key, VPC (each
defaulting to the live model's, model/deploy.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.argtypes import holdout_fraction, iso_day, positive_float, positive_int
from jobs.gate import MIN_NEGATIVES, MIN_POSITIVES


def _names(text: str) -> tuple[str, ...]:
    """`a,b,c` -> ("a", "b", "c"), for subnet and security group ids."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated ids, got {text!r}")
    return names


def add_endpoint_options(group: Any) -> None:
    """The new model's and endpoint config's options; unset, each is the live model's (what
    infra/model-endpoint.yaml or the previous deploy set), so a deploy never drops a protection
    silently. Without a model at the endpoint yet: these, with network isolation on."""
    group.add_argument(
        "--instance-type", help="instance type (default: the live variant's, else ml.m5.xlarge)"
    )
    group.add_argument(
        "--instance-count",
        type=positive_int,
        help="instances of the new config (default: the live variant's count; an update keeps the "
        "endpoint's count either way: autoscaling owns it)",
    )
    group.add_argument(
        "--network-isolation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the model's EnableNetworkIsolation (default: the live model's, else on)",
    )
    group.add_argument(
        "--kms-key-id",
        metavar="KEY",
        help="KMS key of the instances' volumes, the data plane's KmsKeyArn (default: the live config's)",
    )
    group.add_argument(
        "--vpc-subnets",
        type=_names,
        default=(),
        metavar="IDS",
        help="subnet-a,subnet-b: the model's VpcConfig, with --vpc-security-groups (default: the live model's)",
    )
    group.add_argument("--vpc-security-groups", type=_names, default=(), metavar="IDS", help="sg-a,sg-b")
    group.add_argument("--no-vpc", action="store_true", help="take the new model out of the live model's VPC")
    group.add_argument(
        "--allow-weaker-protections",
        action="store_true",
        help="deploy even if the new model or config protects less than the live ones "
        "(isolation off, out of the VPC): refused without it",
    )


def endpoint_options(args: argparse.Namespace) -> dict[str, Any]:
    """`add_endpoint_options`' values as `model.deploy.DeployRequest` fields."""
    return {
        "instance_type": args.instance_type,
        "instance_count": args.instance_count,
        "network_isolation": args.network_isolation,
        "kms_key_id": args.kms_key_id,
        "vpc_subnets": tuple(args.vpc_subnets),
        "vpc_security_groups": tuple(args.vpc_security_groups),
        "no_vpc": args.no_vpc,
        "allow_weaker": args.allow_weaker_protections,
    }


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from model.deploy import DEFAULT_ENDPOINT_NAME, DEFAULT_FRAMEWORK_VERSION
    from worker.settings import ModelSettings

    retrain = sub.add_parser(
        "retrain",
        parents=[common],
        help="the improvement loop: outcomes, train, compare, deploy if not worse",
        description="Retrain on the event archive and deploy only what the promotion gate passes: copy the event "
        "files of --events (default CHURN_ARCHIVE_S3_URI) from --since on, derive who churned (as `churn-worker "
        "outcomes`), train a candidate (as `churn-model train --events --outcomes`), compare it with the incumbent "
        "(--incumbent DIR, else the model behind --endpoint) on the same events (as `churn-model compare`), store "
        "the candidate's bundle in --bucket beside its package, and deploy it to the endpoint (as `churn-model "
        "deploy`) only if it is not worse, or with --force. No model at the endpoint yet: the candidate is deployed "
        "as the first. The last line on stdout says what happened. Exit 0 when the candidate passed (deployed, or "
        "--no-deploy), 1 when it failed the gate and was not deployed, 2 on bad input. Runs as the monthly "
        "scheduled task of infra/service.yaml with no options.",
    )
    configured = ModelSettings()
    retrain.add_argument(
        "--events",
        nargs="+",
        metavar="PATH",
        default=[configured.archive_s3_uri] if configured.archive_s3_uri else None,
        help="event files, directories, globs or s3:// prefixes (default: CHURN_ARCHIVE_S3_URI)",
    )
    retrain.add_argument(
        "--since",
        type=iso_day,
        metavar="DAY",
        help="only the archive's date partitions from this UTC day on (default: all)",
    )
    retrain.add_argument(
        "--incumbent",
        type=Path,
        metavar="DIR",
        help="the bundle to beat (default: the model deployed at --endpoint)",
    )
    retrain.add_argument(
        "--endpoint",
        default=configured.endpoint_name or DEFAULT_ENDPOINT_NAME,
        metavar="NAME",
        help="SageMaker endpoint: where the incumbent is found and the candidate deployed "
        f"(default: CHURN_ENDPOINT_NAME, else {DEFAULT_ENDPOINT_NAME})",
    )
    retrain.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="keep the candidate bundle here (default: a scratch directory; it is stored in --bucket)",
    )
    retrain.add_argument(
        "--deploy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="deploy a candidate that passes the gate (default) or only train and compare",
    )
    retrain.add_argument("--force", action="store_true", help="deploy even if the candidate fails the gate")
    retrain.add_argument("--json", action="store_true", help="print the outcome as one JSON line")

    aws = retrain.add_argument_group(
        "deployment (as `churn-model deploy`; AWS_REGION and AWS_ENDPOINT_URL as usual; unset, the new "
        "model and config keep the live model's role, instance type and count, network isolation, KMS key and VPC)"
    )
    aws.add_argument(
        "--bucket",
        default=configured.model_bucket,
        help="S3 bucket for packages and bundles (default: CHURN_MODEL_BUCKET)",
    )
    aws.add_argument("--prefix", default="churn-model", help="S3 key prefix (default %(default)s)")
    aws.add_argument(
        "--role-arn",
        default=configured.sagemaker_role_arn,
        help="SageMaker execution role ARN (default: CHURN_SAGEMAKER_ROLE_ARN)",
    )
    aws.add_argument(
        "--region", help="AWS region (default: AWS_REGION, else AWS_DEFAULT_REGION, else the profile's)"
    )
    add_endpoint_options(aws)
    aws.add_argument(
        "--framework-version",
        default=DEFAULT_FRAMEWORK_VERSION,
        help="TensorFlow Serving container version (default %(default)s)",
    )
    aws.add_argument("--image-uri", help="container image (default: AWS's TF Serving image for the region)")
    aws.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")

    train = retrain.add_argument_group("training and the gate (as `churn-model train` and `compare`)")
    train.add_argument("--seed", type=int, default=42, help="training seed (default 42)")
    train.add_argument("--epochs", type=positive_int, default=40, help="maximum epochs (default 40)")
    train.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    train.add_argument(
        "--learning-rate", type=positive_float, default=1e-3, help="Adam learning rate (default 0.001)"
    )
    train.add_argument(
        "--patience", type=int, default=5, help="early-stopping patience in epochs; 0 = off (default 5)"
    )
    train.add_argument(
        "--max-train-rows",
        type=positive_int,
        default=240_000,
        help="training instants are sampled down to about this many (default 240000)",
    )
    train.add_argument(
        "--validation-fraction", type=holdout_fraction, default=0.15, help="as for train (default 0.15)"
    )
    train.add_argument(
        "--test-fraction", type=holdout_fraction, default=0.15, help="as for train (default 0.15)"
    )
    train.add_argument("--no-evaluate", action="store_true", help="skip the candidate's held-out evaluation")
    train.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the logistic and GBM baselines its model card compares with (faster)",
    )
    train.add_argument(
        "--on-error",
        choices=["skip", "stop"],
        default="skip",
        help="bad event lines: skip them and report them (default), or stop at the first (exit 2)",
    )
    train.add_argument(
        "--workers", type=positive_int, default=1, help="build examples on N local processes (default 1)"
    )
    train.add_argument("--scheduler", metavar="ADDRESS", help="build examples on an existing Dask cluster")
    train.add_argument(
        "--config",
        type=str,
        metavar="FILE",
        help="alert thresholds for the gate: the worker's config file (default: CHURN_CONFIG, a path or an s3:// object, as the worker reads it; CHURN_ALERTS__* variables apply over it)",
    )
    train.add_argument(
        "--rounds", type=positive_int, default=200, help="the gate's bootstrap rounds (default 200)"
    )
    train.add_argument(
        "--min-positives",
        type=positive_int,
        default=MIN_POSITIVES,
        metavar="N",
        help=f"as for compare: fewest churners per horizon the gate needs to judge (default {MIN_POSITIVES})",
    )
    train.add_argument(
        "--min-negatives",
        type=positive_int,
        default=MIN_NEGATIVES,
        metavar="N",
        help=f"as for compare: fewest customers who stayed per horizon (default {MIN_NEGATIVES})",
    )
    train.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        help="where the scratch directory goes (default: $TMPDIR, /tmp)",
    )
    train.add_argument(
        "--keep-work", action="store_true", help="keep the scratch directory (copied events, outcomes)"
    )
    retrain.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.model_data import alert_thresholds
    from jobs.gate import GateOptions
    from jobs.retrain import DeployTarget, RetrainRequest, run_retrain
    from model.exceptions import UsageError
    from model.training import TrainConfig
    from worker.settings import config_source

    if args.patience < 0:
        raise UsageError("--patience must be 0 (off) or more")
    target = DeployTarget(
        bucket=args.bucket,
        role_arn=args.role_arn,
        endpoint=args.endpoint,
        prefix=args.prefix,
        region=args.region,
        framework_version=args.framework_version,
        image_uri=args.image_uri,
        wait=args.wait,
        endpoint_options=endpoint_options(args),
    )
    request = RetrainRequest(
        events=list(args.events or []),
        target=target,
        since=args.since.isoformat() if args.since else None,
        incumbent=args.incumbent,
        out=args.out,
        deploy=args.deploy,
        force=args.force,
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            patience=args.patience,
            seed=args.seed,
        ),
        data={
            "validation_fraction": args.validation_fraction,
            "test_fraction": args.test_fraction,
            "max_train_rows": args.max_train_rows,
            "on_error": args.on_error,
            "workers": args.workers,
            "scheduler": args.scheduler,
        },
        gate=GateOptions(
            on_error=args.on_error,
            workers=args.workers,
            scheduler=args.scheduler,
            alerts=alert_thresholds(args.config),
            rounds=args.rounds,
            min_positives=args.min_positives,
            min_negatives=args.min_negatives,
        ),
        alerts_source=config_source(args.config),
        evaluate=not args.no_evaluate,
        baselines=not args.no_baselines,
        work_dir=args.work_dir,
        keep_work=args.keep_work,
        as_json=args.json,
    )
    return run_retrain(request)
