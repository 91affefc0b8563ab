"""Shared fixtures: a clean AWS environment for every test and one moto server per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.training import quiet_tensorflow

# Before any test module imports TensorFlow: the settings every process of the product runs the
# model with (oneDNN's fused kernels off), so this process scores exactly as a Dask worker does.
quiet_tensorflow()

SAMPLE_EVENTS = Path(__file__).resolve().parents[1] / "features" / "data" / "sample_events.jsonl"


@pytest.fixture(autouse=True)
def clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach real AWS or depend on the developer's profile: clear AWS_* and CHURN_*."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "CHURN_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1, a free port: a real HTTP endpoint for aiobotocore and boto3."""
    from localaws import start_moto

    server, endpoint = start_moto()
    yield endpoint
    server.stop()


@pytest.fixture
def aws_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every AWS client built from the environment at the moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def unique_prefix() -> str:
    """A random resource-name prefix, so tests sharing the moto server never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model bundle per test session (300 synthetic rows, one epoch), shared by every test
    that needs a real model but not a good one."""
    from model.bundle import is_bundle
    from model.training import train_tiny_bundle

    path = tmp_path_factory.getbasetemp() / "tiny-bundle"
    if not is_bundle(path):
        train_tiny_bundle(path)
    return path
