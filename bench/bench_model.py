"""Model serving figures: in-process throughput of the serving signature, and latency of the local
endpoint (`churn-model serve`, a process of its own, over loopback HTTP with keep-alive) at 1 and
100 instances per request. Every prediction includes the in-graph feature attributions.

Targets: p95 < 20 ms for 100 instances per request; >= 20,000 instances/s in process (2 cores).
Prints numbers, asserts nothing. Uses --bundle DIR, else the cached default bundle if it exists,
else a tiny bundle trained in a temporary directory (same architecture, so the same speed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.training import model_cache
from model.bundle import default_bundle_dir, is_bundle, load_bundle
from model.training import quiet_tensorflow, train_tiny_bundle


def feature_rows(customers: int, days: int, seed: int) -> np.ndarray:
    """Real feature vectors: a simulated log (cached) through the worker's feature code."""
    from model.datasources import simulated_log
    from model.owndata import BuildOptions, build_examples

    events, outcomes = simulated_log(customers, days, seed, cache=model_cache())
    examples, _ = build_examples(str(events), outcomes, BuildOptions(mode="evaluation"), say=lambda m: None)
    return examples.x.astype(np.float64)


def percentiles(samples_ms: list[float]) -> str:
    p50, p95, p99 = np.percentile(samples_ms, [50, 95, 99])
    return f"p50 {p50:6.2f} ms  p95 {p95:6.2f} ms  p99 {p99:6.2f} ms"


def in_process(bundle_dir: Path, rows: np.ndarray) -> None:
    from model.server import LocalPredictor

    predictor = LocalPredictor(load_bundle(bundle_dir))
    for batch in (100, 1000):
        x = rows[:batch]
        for _ in range(5):
            predictor.predict_array(x)
        calls = max(20, 20_000 // batch)
        start = time.perf_counter()
        for _ in range(calls):
            predictor.predict_array(x)
        seconds = time.perf_counter() - start
        print(
            f"in process, signature only, {batch:>4} per call: {calls * batch / seconds:>9,.0f} instances/s"
        )
    body = json.dumps({"instances": rows[:100].tolist()}).encode()
    for _ in range(5):
        predictor.invoke(body, "application/json", None)
    calls = 100
    start = time.perf_counter()
    for _ in range(calls):
        predictor.invoke(body, "application/json", None)
    seconds = time.perf_counter() - start
    print(f"in process, handlers + JSON, 100 per call: {calls * 100 / seconds:>9,.0f} instances/s")


def endpoint(bundle_dir: Path, rows: np.ndarray) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.model", "serve", "--bundle", str(bundle_dir), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.search(r"listening on http://([\d.]+):(\d+)", line)
        if not match:
            print(f"the endpoint did not start: {line!r}")
            return
        connection = http.client.HTTPConnection(match.group(1), int(match.group(2)), timeout=30)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for size, requests in ((1, 300), (100, 200)):
            body = json.dumps(
                {"features": rows[0].tolist()} if size == 1 else {"instances": rows[:size].tolist()}
            )
            for _ in range(10):
                connection.request("POST", "/endpoints/bench/invocations", body, headers)
                connection.getresponse().read()
            samples = []
            start = time.perf_counter()
            for _ in range(requests):
                began = time.perf_counter()
                connection.request("POST", "/endpoints/bench/invocations", body, headers)
                response = connection.getresponse()
                response.read()
                samples.append((time.perf_counter() - began) * 1000)
                if response.status != 200:
                    print(f"request failed: HTTP {response.status}")
                    return
            seconds = time.perf_counter() - start
            print(
                f"local endpoint, {size:>3} per request: {percentiles(samples)}  "
                f"{requests / seconds:,.0f} req/s = {requests * size / seconds:,.0f} instances/s"
            )
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, help="model bundle (default: the cached default bundle, or a tiny one)"
    )
    args = parser.parse_args()
    quiet_tensorflow()
    # Real feature vectors: the simulator's customers through the feature code (cached after one run).
    rows = feature_rows(customers=400, days=90, seed=1)[:1000]
    with tempfile.TemporaryDirectory() as tmp:
        default = default_bundle_dir(model_cache())
        bundle_dir = args.bundle or (default if is_bundle(default) else None)
        if bundle_dir is None:
            print("no default bundle: timing a tiny one (same architecture)")
            bundle_dir = train_tiny_bundle(Path(tmp) / "bundle")
        from model.candidates import served_summary

        bundle = load_bundle(bundle_dir)
        print(f"bundle {bundle_dir} (model {bundle.model_version}; serves {served_summary(bundle.metadata)})")
        in_process(bundle_dir, rows)
        endpoint(bundle_dir, rows)
    print("targets: local endpoint p95 < 20 ms at 100 instances; >= 20,000 instances/s in process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
