"""The model in production, for the promotion gate: found through the endpoint, fetched from S3.

`churn-model deploy` uploads `s3://<bucket>/<prefix>/<version>/model.tar.gz` and points the
endpoint at a SageMaker model whose `ModelDataUrl` is that object. `churn-model retrain` also
stores the whole bundle beside it, `.../<version>/bundle.tar.gz` (model.keras, metadata, the
customers it trained on, gate.json), so the next retraining compares against exactly that bundle and
leaves its training customers out.

A model deployed by `churn-model deploy` alone has no bundle there: its package is enough to score
with (the SavedModel and the feature spec), so the gate still runs, but the incumbent's training
customers are unknown and only the candidate's are left out. The summary says so.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from features.registry import FEATURE_HASH, FEATURE_NAMES
from model.bundle import SAVED_MODEL_DIR, Bundle, load_bundle
from model.exceptions import BundleMismatchError, DeployError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_sagemaker.client import SageMakerClient

BUNDLE_ARCHIVE = "bundle.tar.gz"
PACKAGE = "model.tar.gz"
LEFT_OUT = (PACKAGE, ".partial")  # never archived into a bundle: a package is rebuilt from the bundle


@dataclass(frozen=True)
class Deployed:
    endpoint: str
    model_name: str
    model_data_url: str  # s3://bucket/prefix/<version>/model.tar.gz

    @property
    def bundle_url(self) -> str:
        return self.model_data_url.rsplit("/", 1)[0] + "/" + BUNDLE_ARCHIVE


def split_s3_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://") or "/" not in url[len("s3://") :]:
        raise UsageError(f"{url!r}: expected s3://bucket/key")
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def find_deployed(sagemaker: SageMakerClient, endpoint: str) -> Deployed | None:
    """The model behind `endpoint` (its AllTraffic variant), or None if there is no such endpoint:
    DescribeEndpoint, DescribeEndpointConfig, DescribeModel (`model.deploy.describe_live`), the calls
    the retraining task's role may make on the names infra/model-endpoint.yaml and deploys give."""
    from model.deploy import describe_live

    live = describe_live(sagemaker, endpoint)  # DeployError naming the call that failed
    if live is None:
        return None
    url = live.model_data_url or ""
    if not url.startswith("s3://"):
        raise DeployError(
            f"the model {live.model_name} behind endpoint {endpoint} has no S3 model data ({url!r}): "
            "pass the incumbent bundle with --incumbent DIR"
        )
    return Deployed(endpoint, live.model_name, url)


def _download(s3: S3Client, url: str, dest: Path) -> bool:
    """Fetch an object to `dest`; False if it is not there."""
    from botocore.exceptions import BotoCoreError, ClientError

    from plumbing.retry import error_code

    bucket, key = split_s3_url(url)
    try:
        s3.download_file(Bucket=bucket, Key=key, Filename=str(dest))
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise DeployError(f"cannot read {url}: {exc}") from exc
    except BotoCoreError as exc:
        raise DeployError(f"cannot read {url}: {exc}") from exc
    return True


def _extract(archive: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        # The "data" filter refuses absolute paths, links out of `dest` and device files.
        tar.extractall(dest, filter="data")


def fetch_incumbent(
    s3: S3Client, deployed: Deployed, workdir: Path, say: Callable[[str], None]
) -> tuple[Bundle, bool]:
    """(the deployed bundle, whether it is the whole bundle) in `workdir`: its bundle.tar.gz if
    retraining stored one, else a bundle made of its package (scores the same, knows no training customers)."""
    workdir.mkdir(parents=True, exist_ok=True)
    archive = workdir / BUNDLE_ARCHIVE
    if _download(s3, deployed.bundle_url, archive):
        say(f"incumbent: {deployed.bundle_url} (the model behind endpoint {deployed.endpoint})")
        _extract(archive, workdir / "incumbent")
        return load_bundle(workdir / "incumbent"), True
    package = workdir / PACKAGE
    if not _download(s3, deployed.model_data_url, package):
        raise DeployError(
            f"the model behind endpoint {deployed.endpoint} points at {deployed.model_data_url}, "
            "which is not there: pass the incumbent bundle with --incumbent DIR"
        )
    say(
        f"incumbent: {deployed.model_data_url} (no {BUNDLE_ARCHIVE} beside it: compared from its package; the "
        "customers it trained on cannot be left out)"
    )
    return bundle_from_package(package, workdir / "incumbent"), False


def bundle_from_package(package: Path, dest: Path) -> Bundle:
    """A scoring-only `Bundle` from SageMaker's model.tar.gz (model/export.py's layout)."""
    unpacked = dest.with_name(dest.name + ".package")
    _extract(package, unpacked)
    try:
        spec = json.loads((unpacked / "code" / "feature_spec.json").read_text())
        versions = sorted(p for p in unpacked.iterdir() if p.is_dir() and p.name.isdigit())
        dest.mkdir(parents=True, exist_ok=True)
        versions[-1].rename(dest / SAVED_MODEL_DIR)
    except (OSError, ValueError, IndexError) as exc:
        raise UsageError(f"{package} is not a churn-model package ({exc})") from None
    if spec.get("feature_hash") != FEATURE_HASH or list(spec.get("names", [])) != list(FEATURE_NAMES):
        raise BundleMismatchError(str(package), str(spec.get("feature_hash")), FEATURE_HASH)
    return Bundle(path=dest, spec=spec, metadata={"model_version": spec["model_version"]})


def archive_bundle(bundle_dir: Path, out: Path) -> Path:
    """bundle.tar.gz of a bundle directory (its files at the top level)."""
    with tarfile.open(out, "w:gz") as tar:
        for file in sorted(bundle_dir.rglob("*")):
            relative = file.relative_to(bundle_dir).as_posix()
            if relative.endswith(LEFT_OUT):
                continue
            tar.add(file, arcname=relative, recursive=False)
    return out


def store_bundle(
    s3: S3Client, bundle_dir: Path, bucket: str, prefix: str, version: str, workdir: Path
) -> str:
    """Upload the bundle beside where `churn-model deploy` puts its package; returns the URL."""
    from model.deploy import _call

    key = f"{prefix.strip('/')}/{version}/{BUNDLE_ARCHIVE}".lstrip("/")
    archive = archive_bundle(bundle_dir, workdir / f"{version}-{BUNDLE_ARCHIVE}")
    _call(
        f"upload to s3://{bucket}/{key}",
        lambda: s3.upload_file(Filename=str(archive), Bucket=bucket, Key=key),
    )
    return f"s3://{bucket}/{key}"
