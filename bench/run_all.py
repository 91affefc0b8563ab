"""`make bench`: run every bench/bench_*.py in turn; each prints its own figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Scripts run more than once, with these arguments (default: once, without any).
RUNS = {
    # our simulator's 1.29 M events, then the second generator's ~1 M (the scaling check: 1 vs 2 workers)
    "bench_backtest.py": [[], ["--generator", "alt", "--customers", "7500", "--days", "90"]],
    # the training target on our simulator's ~1 M events, then on the second generator's
    "bench_training.py": [[], ["--generator", "alt", "--customers", "7500", "--days", "90"]],
    # the cost targets on the benchmark's backlog, then on the alert-heavy one (the second generator)
    "bench_cost.py": [["--backlog", "large"], ["--backlog", "alerts"]],
}

here = Path(__file__).resolve().parent
failed = []
for script in sorted(here.glob("bench_*.py")):
    for extra in RUNS.get(script.name, [[]]):
        print(f"\n== {' '.join([script.name, *extra])} ==", flush=True)
        if subprocess.run([sys.executable, str(script), *extra], cwd=here.parent).returncode != 0:
            failed.append(script.name)
if failed:
    print(f"\nfailed: {', '.join(failed)}")
    sys.exit(1)
