"""Kill points: a process armed with CHURN_FAULT_KILL_AT dies with 137 exactly at the named point's
n-th pass, and an unarmed one never does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from worker import faultpoints
from worker.settings import Settings

SCRIPT = """
import sys
from worker import faultpoints
faultpoints.arm(sys.argv[1] or None)
for step in range(3):
    for point in faultpoints.POINTS:
        faultpoints.kill_point(point)
        print(f"{point}#{step + 1}", flush=True)
"""


def run(spec: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, spec], capture_output=True, text=True, timeout=60)


def test_an_armed_kill_point_kills_with_137_at_its_nth_pass_and_not_before() -> None:
    result = run("after_publish@2")
    assert result.returncode == faultpoints.KILLED_EXIT_CODE == 137
    lines = result.stdout.split()
    assert lines[-1] == "after_alert_claim#2"  # died at the second after_publish, before printing it
    assert "after_publish#1" in lines and "after_publish#2" not in lines
    assert "after_publish" in result.stderr


def test_an_unarmed_process_passes_every_point() -> None:
    result = run("")
    assert result.returncode == 0
    assert len(result.stdout.split()) == 3 * len(faultpoints.POINTS)


def test_unknown_kill_points_are_refused_by_the_settings() -> None:
    assert Settings(fault_kill_at="mid_sweep").fault_kill_at == "mid_sweep"
    with pytest.raises(ValueError, match="unknown kill point"):
        Settings(fault_kill_at="after_lunch")
    with pytest.raises(ValueError, match="at least 1"):
        faultpoints.parse("after_publish@0")
