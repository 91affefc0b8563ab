"""Shared fixtures: a clean AWS environment for every test and one moto server per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Under pytest-xdist (`make test`, `make check`) several test processes share the machine's cores:
# each runs its numeric libraries (TensorFlow, scikit-learn's OpenMP, BLAS), and the processes it
# starts, on one thread, as the product runs its own Dask workers (plumbing.parallel.WORKER_ENV).
# Otherwise each process starts a thread per core, and OpenMP's waiting threads spin on cores the
# other test processes need. Before numpy is imported; a serial run is left as it is.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        os.environ.setdefault(_name, "1")

from model.training import quiet_tensorflow  # after the thread settings above

if TYPE_CHECKING:
    from model.server import LocalEndpoint

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


def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's temporary directory, common to every pytest-xdist worker (each worker's own
    basetemp is a subdirectory of it); the basetemp itself without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny model bundle per test run (300 synthetic rows, one epoch), shared by every test
    that needs a real model but not a good one. Trained once under a file lock, so parallel
    workers (pytest -n) wait for the first one's instead of each training their own."""
    import fcntl

    from model.bundle import is_bundle
    from model.training import train_tiny_bundle

    path = session_dir(tmp_path_factory) / "tiny-bundle"
    with open(path.with_name("tiny-bundle.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not is_bundle(path):
            train_tiny_bundle(path)
    return path


@pytest.fixture(scope="session")
def tiny_endpoint(tiny_bundle: Path) -> Iterator[LocalEndpoint]:
    """The local model endpoint (a thread of this process) serving the tiny bundle, for the session."""
    from model.bundle import load_bundle
    from model.server import LocalEndpoint

    with LocalEndpoint(load_bundle(tiny_bundle)) as running:
        yield running


# --- running in parallel (pytest-xdist, `make test` / `make check`) --------------------------------


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fault scenarios run one after another on one xdist worker, as `make faults` runs them:
    they share that worker's emulator, model endpoint and fault proxies (session fixtures), and
    their timings (3 s leases, 6 s visibility timeouts) are not made to compete with each other.
    Everything else spreads over the workers."""
    for item in items:
        if item.get_closest_marker("faults") is not None:
            item.add_marker(pytest.mark.xdist_group("faults"))


# --- the fault-injection suite's table (tests/faults) ---------------------------------------------
# Here rather than in tests/faults/conftest.py: under pytest-xdist the scenarios run in worker
# processes and only this conftest is loaded in the controller, which prints the summary.

_WORKER_FAULT_ROWS: list[dict[str, object]] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """pytest-xdist: a worker finished; keep the table rows its scenarios recorded."""
    _WORKER_FAULT_ROWS.extend(getattr(node, "workeroutput", {}).get("fault_rows", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import sys

    harness = sys.modules.get("tests.faults.harness")  # imported only if a scenario was collected here
    rows = list(harness.RESULTS) if harness is not None else []
    if _WORKER_FAULT_ROWS:
        from tests.faults.harness import Row

        rows += [Row(**row) for row in _WORKER_FAULT_ROWS]  # type: ignore[arg-type]
    if not rows:
        return
    from tests.faults.harness import table

    text = table(rows)
    terminalreporter.write_sep("=", "fault-injection scenarios")
    terminalreporter.write_line(text)
    report = os.environ.get("FAULTS_REPORT")
    if report:
        Path(report).write_text(text + "\n")
