"""`churn-worker local`: the embedded stack. moto's server on 127.0.0.1 stands in for AWS.

It sets the standard AWS variables (endpoint, throwaway credentials) for this process and anything
it starts, exactly as a user pointing the worker at moto by hand would, then runs the real code.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from worker.commands.bootstrap import bootstrap
from worker.commands.features import run_features
from worker.localstack import start_moto
from worker.settings import Settings

SAMPLE_EVENTS = Path(__file__).resolve().parents[1] / "data" / "sample_events.jsonl"


def use_local_aws(endpoint: str) -> None:
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_REGION", "us-east-1")


def run_local(settings: Settings, events: Path | None) -> int:
    server, endpoint = start_moto()
    use_local_aws(endpoint)
    print(f"local AWS (moto) at {endpoint}", file=sys.stderr)
    try:
        for row in asyncio.run(bootstrap(settings)):
            print(f"bootstrapped {row['kind']} {row['name']}", file=sys.stderr)
        path = events or SAMPLE_EVENTS
        from datetime import UTC, datetime

        as_of = datetime(2026, 11, 27, 12, tzinfo=UTC) if events is None else datetime.now(UTC)
        print(f"features of {path.name} at {as_of.isoformat()} through the DynamoDB store:", file=sys.stderr)
        return asyncio.run(run_features(settings, path, as_of, "dynamodb", False, "skip"))
    finally:
        server.stop()
