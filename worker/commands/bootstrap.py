"""`churn-worker bootstrap`: create every resource the worker needs, idempotently.

Safe to run on every deploy: existing resources are left as they are and reported as such.
"""

from __future__ import annotations

import json
from typing import Any

from features.dynamodb import create_feature_table, table_name
from worker.aws import AwsClients
from worker.settings import Settings


async def bootstrap(settings: Settings) -> list[dict[str, Any]]:
    """Create what is missing; one row per resource: kind, name, created (bool)."""
    rows: list[dict[str, Any]] = []
    async with AwsClients(settings, "dynamodb") as aws:
        features_table = table_name(settings.table_prefix)
        created = await create_feature_table(aws["dynamodb"], features_table)
        rows.append({"kind": "dynamodb_table", "name": features_table, "created": created})
    return rows


async def run_bootstrap(settings: Settings, as_json: bool) -> int:
    rows = await bootstrap(settings)
    for row in rows:
        if as_json:
            print(json.dumps(row))
        else:
            print(f"{row['kind']:<16} {row['name']}  ({'created' if row['created'] else 'exists'})")
    return 0
