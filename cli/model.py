"""`churn-model`: simulate, train, evaluate, package, serve and deploy the multi-task model.

Exit codes: 0 success, 2 bad usage or input, 1 any other failure; errors are one line unless `--debug`.
Heavy imports (TensorFlow) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cli.argtypes import port
from cli.errors import run_command
from model.deploy import DEFAULT_ENDPOINT_NAME, DEFAULT_FRAMEWORK_VERSION
from model.exceptions import UsageError
from model.training import quiet_tensorflow

if TYPE_CHECKING:
    from model.bundle import Bundle

PROG = "churn-model"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors"
    )
    bundle_opt = argparse.ArgumentParser(add_help=False)
    bundle_opt.add_argument(
        "--bundle",
        type=Path,
        metavar="DIR",
        help="model bundle directory (default: the cached default bundle, trained on first use; "
        "its cache is $CHURN_MODEL_CACHE or ~/.cache/churn-alerts)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The multi-task churn model: train a versioned, calibrated model bundle on your own event "
        "history (or simulated data), evaluate it on any log against the spec's targets, compare a candidate with "
        "the incumbent (the promotion gate), package it for SageMaker's TensorFlow Serving container, serve it "
        "locally with SageMaker's invocation API, deploy it.",
        epilog="Run `churn-model COMMAND --help` for a command's options.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    try:
        from cli.model_simulate import register
    except ImportError:  # the simulator is optional for the other commands
        pass
    else:
        register(sub)

    from cli.model_data import register as register_data
    from cli.model_retrain import add_endpoint_options

    register_data(sub, common, bundle_opt)

    from cli.model_retrain import register as register_retrain

    register_retrain(sub, common)

    from cli.model_monitor import register as register_monitor

    register_monitor(sub, common, bundle_opt)

    package = sub.add_parser(
        "package",
        parents=[common, bundle_opt],
        help="build model.tar.gz for SageMaker TensorFlow Serving",
        description="Write model.tar.gz: 1/saved_model.pb, 1/variables/, code/inference.py (input_handler, "
        "output_handler), code/requirements.txt, code/feature_spec.json.",
    )
    package.add_argument(
        "--out", type=Path, metavar="FILE", help="output file (default: BUNDLE/model.tar.gz)"
    )
    package.add_argument("--json", action="store_true", help="print the path and listing as JSON")

    serve = sub.add_parser(
        "serve",
        parents=[common, bundle_opt],
        help="run the local SageMaker-compatible endpoint",
        description="Serve GET /ping, POST /invocations and POST /endpoints/NAME/invocations with the "
        "packaged handlers around the bundle's SavedModel, so boto3's sagemaker-runtime client works with "
        "endpoint_url=http://HOST:PORT. Prints 'listening on URL' when ready; stops on SIGTERM or Ctrl-C.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=port, default=8080, help="port (default 8080; 0 = any free port)")

    deploy = sub.add_parser(
        "deploy",
        parents=[common, bundle_opt],
        help="upload and deploy to a SageMaker endpoint (blue/green)",
        description="Upload model.tar.gz to S3, create a SageMaker model and endpoint config for this model "
        "version, then create the endpoint or update it to the new config (SageMaker shifts traffic "
        "blue/green; the previous config remains for rollback; the endpoint keeps its instance count). The "
        "new model and config keep what the live ones have unless an option says otherwise: execution role, "
        "instance type and count, network isolation, VPC, KMS key, data capture; a deploy that would protect "
        "less is refused without --allow-weaker-protections. Uses the standard AWS credential chain "
        "(AWS_REGION, else AWS_DEFAULT_REGION, else the profile); AWS_ENDPOINT_URL or --endpoint-url redirect it.",
    )
    deploy.add_argument(
        "--package", type=Path, metavar="FILE", help="model.tar.gz to deploy (default: package the bundle)"
    )
    deploy.add_argument(
        "--endpoint-name",
        default=DEFAULT_ENDPOINT_NAME,
        help="endpoint (default %(default)s, the worker's CHURN_ENDPOINT_NAME default)",
    )
    deploy.add_argument("--bucket", required=True, help="S3 bucket for the package (must exist)")
    deploy.add_argument("--prefix", default="churn-model", help="S3 key prefix (default %(default)s)")
    deploy.add_argument(
        "--role-arn",
        help="SageMaker execution role ARN (default: the live model's; needed for the first deploy)",
    )
    deploy.add_argument(
        "--region", help="AWS region (default: AWS_REGION, else AWS_DEFAULT_REGION, else the profile's)"
    )
    deploy.add_argument(
        "--framework-version",
        default=DEFAULT_FRAMEWORK_VERSION,
        help="TensorFlow Serving container version (default %(default)s)",
    )
    deploy.add_argument(
        "--image-uri", help="container image (default: AWS's TF Serving image for the region)"
    )
    deploy.add_argument("--endpoint-url", help="AWS endpoint URL override (e.g. a moto server)")
    deploy.add_argument("--wait", action="store_true", help="wait until the endpoint is InService")
    deploy.add_argument(
        "--force",
        action="store_true",
        help="deploy even if the bundle failed the promotion gate (`churn-model compare`)",
    )
    deploy.add_argument("--json", action="store_true", help="print the result as JSON")
    endpoint_group = deploy.add_argument_group("the new model and endpoint config (unset: as the live ones)")
    add_endpoint_options(endpoint_group)
    endpoint_group.add_argument(
        "--serverless",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a SageMaker Serverless Inference variant instead of instances (default: as the live "
        "variant; a live instance endpoint cannot become serverless: use a new --endpoint-name)",
    )
    endpoint_group.add_argument(
        "--memory-mb",
        type=int,
        metavar="N",
        help="serverless memory: 1024..6144 in 1024 steps (default 2048)",
    )
    endpoint_group.add_argument(
        "--max-concurrency",
        type=int,
        metavar="N",
        help="serverless concurrent invocations, 1..200 (default 10)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    if not args.debug:
        quiet_tensorflow()
    return run_command(PROG, lambda: _dispatch(args), args.debug)


def load_cli_bundle(args: argparse.Namespace) -> Bundle:
    from jobs.training import ensure_default_bundle
    from model.bundle import load_bundle

    path = args.bundle if args.bundle is not None else ensure_default_bundle(progress=True)
    return load_bundle(path)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "package":
        return _package(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "deploy":
        return _deploy(args)
    handler = getattr(args, "func", None)
    if handler is not None:  # train, evaluate, compare (cli/model_data.py), simulate (cli/model_simulate.py)
        return int(handler(args) or 0)
    raise UsageError(f"unknown command {args.command!r}")


def _package(args: argparse.Namespace) -> int:
    import tarfile

    from model.export import build_package

    bundle = load_cli_bundle(args)
    out = args.out if args.out is not None else bundle.path / "model.tar.gz"
    spec = {**bundle.spec, "model_version": bundle.model_version}
    build_package(bundle.saved_model_dir, spec, out, int(bundle.metadata.get("serving_version", 1)))
    with tarfile.open(out) as tar:
        names = tar.getnames()
    if args.json:
        print(json.dumps({"package": str(out), "model_version": bundle.model_version, "files": names}))
    else:
        print(f"{out} ({out.stat().st_size} bytes, model {bundle.model_version}, {len(names)} files)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    from model.server import serve

    bundle = load_cli_bundle(args)

    def ready(url: str) -> None:
        print(f"model {bundle.model_version} listening on {url}", flush=True)

    try:
        asyncio.run(serve(bundle, args.host, args.port, ready))
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    print("stopped", file=sys.stderr)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    import tempfile

    from cli.model_retrain import endpoint_options
    from model.deploy import DeployRequest, deploy, make_clients
    from model.export import build_package, package_version

    s3, sagemaker, region = make_clients(args.region, args.endpoint_url)
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package
        if package is None or args.bundle is not None:
            from jobs.gate import check_gate

            gated = load_cli_bundle(args)
            note = check_gate(gated.path, gated.model_version, args.force)  # refuses a failed candidate
            if note:
                print(note, file=sys.stderr)
        if package is None:
            bundle = gated
            package = build_package(
                bundle.saved_model_dir,
                {**bundle.spec, "model_version": bundle.model_version},
                Path(tmp) / "model.tar.gz",
            )
        request = DeployRequest(
            package=package,
            model_version=package_version(package),
            endpoint_name=args.endpoint_name,
            bucket=args.bucket,
            role_arn=args.role_arn,
            prefix=args.prefix,
            framework_version=args.framework_version,
            image=args.image_uri,
            wait=args.wait,
            serverless=args.serverless,
            memory_mb=args.memory_mb,
            max_concurrency=args.max_concurrency,
            **endpoint_options(args),
        )
        result = deploy(request, s3, sagemaker, region, lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print(f"endpoint {result.endpoint_name} {result.action}: config {result.endpoint_config_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
