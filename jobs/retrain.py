"""`churn-model retrain`: the improvement loop as one job (the monthly scheduled task in infra/service.yaml).

1. Find the incumbent: `--incumbent DIR`, else the model behind the endpoint (jobs/incumbent.py).
   First, so that what cannot be compared (no access, another feature registry) stops the job
   before hours of training rather than after.
2. Select the event files (`--events`, default the worker's archive `CHURN_ARCHIVE_S3_URI`; `--since`
   leaves out older date partitions unread) and copy those in S3 to a scratch directory once, so every
   later step reads the same snapshot however much the worker archives meanwhile.
3. Derive the outcomes from them (`features.churn_from_events`, what `churn-worker outcomes` writes).
4. Train a candidate bundle on them (`churn-model train --events --outcomes`'s path).
5. Run the promotion gate (`churn-model compare`'s, jobs/gate.py) on the same events, the alert
   rules at the worker's thresholds (`--config`, else CHURN_CONFIG: what `tune` wrote); gate.json
   goes into the candidate, with the thresholds and where they came from.
6. Store the candidate's bundle in the model bucket beside its package, passed or not (the record
   of every retraining), and deploy it (`churn-model deploy`'s code) only if it passed, or with
   `--force`: the new model and config keep the live model's network isolation, VPC, KMS key,
   role, instance type and count (model/deploy.py). No incumbent at all (no endpoint yet) deploys
   the first model.

One summary line on stdout says which; exit 0 when the candidate passed (deployed, or not asked to
be), 1 when it failed the gate and was not deployed (like `compare`), 2 on bad input.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.gate import gate_reason
from model.exceptions import BundleMismatchError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sagemaker.client import SageMakerClient

    from jobs.gate import GateOptions
    from model.bundle import Bundle
    from model.training import TrainConfig

PROG = "churn-model retrain"


@dataclass(frozen=True)
class DeployTarget:
    bucket: str | None
    role_arn: str | None
    endpoint: str
    prefix: str = "churn-model"
    region: str | None = None
    framework_version: str | None = None
    image_uri: str | None = None
    wait: bool = False
    # model.deploy.DeployRequest's instance and protection fields (instance_type, network_isolation,
    # kms_key_id, ...): None or absent, each is the live model's
    endpoint_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainRequest:
    events: list[str]
    target: DeployTarget
    since: str | None = None
    incumbent: Path | None = None
    out: Path | None = None
    deploy: bool = True
    force: bool = False
    train: TrainConfig | None = None  # None: the defaults
    data: dict[str, Any] = field(default_factory=dict)  # DataParams fields: fractions, max rows, workers
    gate: GateOptions | None = None  # None: the defaults
    alerts_source: str | None = None  # where the gate's thresholds came from (a path, s3://), for gate.json
    evaluate: bool = True
    baselines: bool = True
    work_dir: Path | None = None
    keep_work: bool = False
    as_json: bool = False


def _say(text: str) -> None:
    print(f"retrain: {text}", file=sys.stderr, flush=True)


def check_request(request: RetrainRequest) -> None:
    """Refuse before hours of work what would fail at the end."""
    if not request.events:
        raise UsageError(
            "no events: pass --events s3://bucket/prefix/ (or set CHURN_ARCHIVE_S3_URI, the worker's archive)"
        )
    if request.deploy and not (request.target.bucket and request.target.role_arn):
        raise UsageError(
            "deploying needs --bucket and --role-arn (or CHURN_MODEL_BUCKET and CHURN_SAGEMAKER_ROLE_ARN); "
            "pass --no-deploy to only train and compare"
        )
    if request.target.role_arn and not request.target.role_arn.startswith("arn:"):
        raise UsageError(
            f"--role-arn {request.target.role_arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )
    if request.incumbent is None and not request.target.endpoint:
        raise UsageError("no incumbent: pass --incumbent DIR or --endpoint NAME (or set CHURN_ENDPOINT_NAME)")


def run_retrain(request: RetrainRequest) -> int:
    check_request(request)
    work = Path(tempfile.mkdtemp(prefix="churn-retrain-", dir=request.work_dir))
    try:
        return _run(request, work)
    finally:
        if request.keep_work:
            _say(f"scratch directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _run(request: RetrainRequest, work: Path) -> int:
    from tqdm import tqdm

    from features.churn_from_events import derive_outcomes, write_outcomes
    from features.eventfile import event_sources
    from model.bundle import load_bundle

    # The incumbent first: a missing permission or a model of another feature registry should stop
    # the job before hours of training, not after.
    incumbent, note = _incumbent(request, work)
    events = local_events(request.events, request.since, work / "events")
    sources = event_sources(events)
    _say(f"deriving outcomes from {len(sources):,} event files ...")
    with tqdm(total=len(sources), desc="outcomes", unit="file", file=sys.stderr, disable=None) as bar:
        derived = derive_outcomes(
            sources,
            request.data.get("on_error", "skip"),
            say=_first_few(_say),
            on_source=lambda _: bar.update(),
        )
    outcomes = write_outcomes(derived, work / "outcomes.jsonl")
    summary = derived.summary()
    _say(
        f"outcomes: {summary['customers']:,} customers, {summary['churned']:,} churned, {summary['events']:,} events "
        f"in {summary['files']:,} files"
    )

    candidate = load_bundle(_train(request, events, outcomes, summary, work))
    record: dict[str, Any] | None = None
    if incumbent is not None:
        from jobs.gate import GateOptions, format_gate, gate_bundles, write_gate

        gate_options = request.gate or GateOptions()
        _say(
            f"comparing candidate {candidate.model_version} with incumbent {incumbent.model_version}, alert "
            f"rules at the thresholds of {request.alerts_source or 'the defaults (no CHURN_CONFIG)'} ..."
        )
        record = gate_bundles(
            candidate, incumbent, events, outcomes, gate_options, progress=sys.stderr.isatty()
        )
        record["events"] = list(request.events)  # not the scratch copies, gone after this run
        record["alerts_config"] = request.alerts_source  # the file (tune's) the rules were judged by
        if gate_options.alerts is not None:
            record["alerts"] = gate_options.alerts.model_dump(mode="json")
        write_gate(candidate.path, record)
        print(format_gate(record), file=sys.stderr, flush=True)
    passed = record is None or bool(record["passed"])
    result = {
        "model_version": candidate.model_version,
        "bundle": str(candidate.path),
        "deployed": False,
        "incumbent_version": None if incumbent is None else incumbent.model_version,
        "gate": None
        if record is None
        else {
            "passed": record["passed"],
            "failed": record["failed"],
            "cannot_judge": record.get("cannot_judge", {}),
        },
        "endpoint": request.target.endpoint,
        "note": note,
        "alerts_config": request.alerts_source,
        "stored": None,
        "deploy": None,
    }
    clients = _clients(request.target) if request.target.bucket else None
    if clients is not None:
        from jobs.incumbent import store_bundle

        result["stored"] = store_bundle(
            clients[0],
            candidate.path,
            request.target.bucket or "",
            request.target.prefix,
            candidate.model_version,
            work,
        )
        _say(f"bundle stored at {result['stored']}")
    if request.deploy and (passed or request.force):
        assert clients is not None  # check_request: deploying needs the bucket
        result["deploy"] = _deploy(request, candidate, clients, work)
        result["deployed"] = True
    _summarise(request, result)
    return 0 if passed or result["deployed"] else 1


def _first_few(say: Callable[[str], None], limit: int = 5) -> Callable[[str], None]:
    """Bad lines one per line up to `limit`, then silence: the training step reports the count again."""
    told = [0]

    def tell(text: str) -> None:
        told[0] += 1
        if told[0] <= limit:
            say(text)
        elif told[0] == limit + 1:
            say("more bad lines skipped; not listed")

    return tell


def local_events(paths: list[str], since: str | None, into: Path) -> list[str]:
    """The event files `paths` name (from `since` on), those in S3 copied under `into` once."""
    from tqdm import tqdm

    from features.eventfile import LocalEventFile, event_sources

    sources = event_sources(paths, since)
    remote = [s for s in sources if not isinstance(s, LocalEventFile)]
    local = [str(s.path) for s in sources if isinstance(s, LocalEventFile)]
    if not remote:
        return local
    _say(f"copying {len(remote):,} event files from S3 ...")
    copied = 0
    with tqdm(
        total=len(remote), desc="copying event files", unit="file", file=sys.stderr, disable=None
    ) as bar:
        for source in remote:
            target = into / source.name[len("s3://") :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open_binary() as body, target.open("wb") as out:
                shutil.copyfileobj(body, out, 1 << 20)
            copied += target.stat().st_size
            bar.update()
    _say(f"copied {len(remote):,} event files ({copied / 1e6:,.1f} MB)")
    return [*local, str(into)]


def _train(
    request: RetrainRequest, events: list[str], outcomes: Path, outcome_summary: dict[str, int], work: Path
) -> Path:
    from jobs.training import train
    from model.bundle import METADATA_FILE
    from model.datasources import DataParams
    from model.training import TrainConfig

    out = request.out if request.out is not None else work / "candidate"
    config = request.train or TrainConfig()
    data = DataParams(
        source="events", events=tuple(events), outcomes=str(outcomes), seed=config.seed, **request.data
    )
    _say(f"training a candidate on {len(events)} event paths ...")
    train(out, config, data, progress=True, evaluate=request.evaluate, baselines=request.baselines)
    # The scratch copies are gone after this run: the metadata says where the events came from.
    file = out / METADATA_FILE
    metadata = json.loads(file.read_text())
    metadata["retrain"] = {
        "events": list(request.events),
        "since": request.since,
        "outcomes": outcome_summary,
    }
    file.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return out


def _clients(target: DeployTarget) -> tuple[S3Client, SageMakerClient, str]:
    from model.deploy import make_clients

    return make_clients(target.region, None)


def _incumbent(request: RetrainRequest, work: Path) -> tuple[Bundle | None, str | None]:
    """(the incumbent bundle or None, a note for the summary)."""
    from jobs.incumbent import fetch_incumbent, find_deployed
    from model.bundle import load_bundle

    try:
        if request.incumbent is not None:
            return load_bundle(request.incumbent), None
        s3, sagemaker, _ = _clients(request.target)
        deployed = find_deployed(sagemaker, request.target.endpoint)
        if deployed is None:
            note = f"no model is deployed at endpoint {request.target.endpoint}: nothing to compare with"
            _say(note)
            return None, note
        bundle, whole = fetch_incumbent(s3, deployed, work, _say)
        return (
            bundle,
            None
            if whole
            else "incumbent compared from its package: its training customers were not left out",
        )
    except BundleMismatchError as exc:
        if not request.force:
            raise UsageError(
                f"the incumbent cannot be scored with this code's features ({exc}); the gate cannot run: "
                "pass --force to deploy without it"
            ) from None
        note = "the incumbent uses another feature registry: deployed without the gate (--force)"
        _say(note)
        return None, note


def _deploy(
    request: RetrainRequest, candidate: Bundle, clients: tuple[S3Client, SageMakerClient, str], work: Path
) -> dict[str, Any]:
    from jobs.gate import check_gate
    from model.deploy import DEFAULT_FRAMEWORK_VERSION, DeployRequest, deploy
    from model.export import build_package

    note = check_gate(candidate.path, candidate.model_version, request.force)
    if note:
        _say(note)
    target = request.target
    package = build_package(
        candidate.saved_model_dir,
        {**candidate.spec, "model_version": candidate.model_version},
        work / "model.tar.gz",
        int(candidate.metadata.get("serving_version", 1)),
    )
    deploy_request = DeployRequest(
        package=package,
        model_version=candidate.model_version,
        endpoint_name=target.endpoint,
        bucket=target.bucket or "",
        role_arn=target.role_arn or None,
        prefix=target.prefix,
        framework_version=target.framework_version or DEFAULT_FRAMEWORK_VERSION,
        image=target.image_uri,
        wait=target.wait,
        **target.endpoint_options,
    )
    s3, sagemaker, region = clients
    return deploy(deploy_request, s3, sagemaker, region, _say).as_dict()


def _summarise(request: RetrainRequest, result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    if request.as_json:
        out(json.dumps(result))
        return
    version, incumbent, gate = result["model_version"], result["incumbent_version"], result["gate"]
    where = result["stored"] or result["bundle"]
    if gate is None:
        verdict = result["note"] or "no promotion gate"
    elif gate["passed"]:
        verdict = f"passed the promotion gate against {incumbent}"
    else:
        verdict = f"FAILED the promotion gate against {incumbent} ({gate_reason(gate)})"
    if result["deployed"]:
        forced = " but --force" if gate is not None and not gate["passed"] else ""
        out(
            f"retrain: DEPLOYED model {version} to endpoint {request.target.endpoint}: {verdict}{forced}; bundle {where}"
        )
    elif gate is not None and not gate["passed"]:
        out(
            f"retrain: NOT DEPLOYED: model {version} {verdict.replace('FAILED', 'failed')}; see gate.json in {where}; "
            f"endpoint {request.target.endpoint} unchanged"
        )
    else:
        out(f"retrain: not deployed (--no-deploy): model {version}: {verdict}; bundle {where}")
