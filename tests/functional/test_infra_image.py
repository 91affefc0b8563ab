"""The worker image without Docker: the Dockerfile's properties, and what its pip install brings.

There is no Docker daemon in CI, so the promises of the image are checked where they are made: the
default target runs `churn-worker run` as an unprivileged user with a health check, from a base
pinned by version; and the exact install it performs (`pip install .`, no extras), resolved by pip
itself against the registry, contains no TensorFlow, Keras or moto.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARGs, stages) of a Dockerfile: continuation lines joined, comments dropped."""
    lines = re.sub(
        r"\\\n\s*", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in filter(None, (ln.strip() for ln in lines.splitlines())):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append(Stage(base, parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def final_stage() -> Stage:
    return parse(DOCKERFILE.read_text())[1][-1]  # `docker build` without --target builds the last stage


def test_default_target_is_the_worker_run_as_non_root() -> None:
    stage = final_stage()
    assert stage.name == "worker"
    [user] = stage.all("USER")
    uid = user.split(":")[0]
    assert uid not in ("0", "root") and uid.isdigit(), (
        "a numeric non-root USER (ECS checks runAsNonRoot by uid)"
    )
    assert json.loads(stage.all("CMD")[-1])[:2] == ["churn-worker", "run"]
    [health] = stage.all("HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health
    assert "/tmp" in stage.all("VOLUME")[0], "the one writable place on a read-only root file system"
    env = " ".join(stage.all("ENV"))
    assert "HOME=/tmp" in env and "TMPDIR=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env


def test_every_base_is_a_slim_python_pinned_by_version() -> None:
    _, stages = parse(DOCKERFILE.read_text())
    for stage in stages:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.base), (
            stage.base
        )


def worker_install_command() -> list[str]:
    """The pip install of the stage the worker's venv is copied from."""
    _, stages = parse(DOCKERFILE.read_text())
    worker = stages[-1]
    [copy] = [c for c in worker.all("COPY") if "/opt/venv" in c]
    source = re.search(r"--from=(\S+)", copy).group(1)  # type: ignore[union-attr]
    [build] = [s for s in stages if s.name == source]
    [install] = [cmd for run in build.all("RUN") for cmd in run.split("&&") if "pip install" in cmd]
    return shlex.split(install)


def test_the_worker_stage_installs_the_project_without_extras() -> None:
    command = worker_install_command()
    targets = [arg for arg in command[command.index("install") + 1 :] if not arg.startswith("-")]
    assert targets == ["."], f"the worker image installs the project without extras, not {targets}"


@pytest.mark.slow
def test_what_the_image_installs_has_no_tensorflow(tmp_path: Path) -> None:
    """pip's own resolution of the Dockerfile's install, without installing anything."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            ".",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = {
        item["metadata"]["name"].lower().replace("_", "-")
        for item in json.loads(report.read_text())["install"]
    }
    assert {"churn-alerts", "aiobotocore", "pydantic-settings", "structlog"} <= names
    heavy = {
        n for n in names if n.startswith(("tensorflow", "keras", "tf-", "moto", "pytest", "scikit-learn"))
    }
    assert not heavy, f"the worker image would install {sorted(heavy)}"
