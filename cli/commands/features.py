"""`churn-worker features EVENTS... --as-of ISO`: fold an event log into a store, print features.

EVENTS are event paths as every command takes them (files, directories, globs, `s3://` prefixes;
`features.eventfile`); duplicates by `event_id` count once (the store drops them). The clock is
`as_of`: events after it (beyond the 5-minute skew) or older than retention before it are left out
and counted, exactly as the live worker would treat them at that instant.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from features.dynamodb import DynamoDBFeatureStore, table_name
from features.eventfile import SourcedEvent, read_event_paths
from features.events import Event, check_event_time, format_utc
from features.exceptions import EventParseError
from features.registry import SEED_FEATURE_NAMES, compute_features, features_as_dict
from features.store import FeatureStore, MemoryFeatureStore
from plumbing.clients import AwsClients
from plumbing.retry import credentials_for
from worker.exceptions import UsageError
from worker.settings import Settings

BATCH_EVENTS = 1000


def admitted_events(
    records: Iterator[SourcedEvent],
    as_of: datetime,
    settings: Settings,
    on_error: str,
    skipped: dict[str, int],
) -> Iterator[Event]:
    """Valid events the worker would accept at `as_of`; bad lines stop the run or are counted."""
    for record in records:
        item = record.item
        if isinstance(item, EventParseError):
            where = f"{record.source}:{record.line}"
            if on_error == "stop":
                raise UsageError(
                    f"{where}: {item.error_code}: {item.error_detail} (use --on-error skip to skip)"
                )
            print(f"{where}: skipped: {item.error_code}: {item.error_detail}", file=sys.stderr)
            skipped["bad"] = skipped.get("bad", 0) + 1
            continue
        rejection = check_event_time(item, as_of, settings.retention)
        if rejection is not None:
            skipped[rejection.error_code] = skipped.get(rejection.error_code, 0) + 1
            continue
        yield item


async def run_features(
    settings: Settings,
    paths: str | Path | Sequence[str | Path],
    as_of: datetime,
    store_kind: str,
    as_json: bool,
    on_error: str,
) -> int:
    """Event paths (files, directories, globs, s3:// prefixes) in; a path holding no event is
    `no events in PATH` (exit 2), found before the DynamoDB store is touched."""
    records = read_event_paths(paths, on_error=on_error)
    skipped: dict[str, int] = {}
    if store_kind == "memory":
        rows = await _fold_and_compute(
            MemoryFeatureStore(settings.retention), records, as_of, settings, on_error, skipped
        )
    else:
        table = table_name(settings.table_prefix)
        with credentials_for(f"feature table {table}"):
            async with AwsClients(settings.aws_region, "dynamodb") as aws:
                store = DynamoDBFeatureStore(
                    aws.dynamodb, table, settings.retention, rescore_interval=settings.rescore_interval
                )  # as the worker writes them
                rows = await _fold_and_compute(store, records, as_of, settings, on_error, skipped)
    for row in rows:
        print(json.dumps(row) if as_json else _human(row))
    if skipped:
        detail = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        print(f"left out: {detail}", file=sys.stderr)
    return 0


async def _fold_and_compute(
    store: FeatureStore,
    records: Iterator[SourcedEvent],
    as_of: datetime,
    settings: Settings,
    on_error: str,
    skipped: dict[str, int],
) -> list[dict[str, Any]]:
    customers: set[str] = set()
    batch: list[Event] = []
    for event in admitted_events(records, as_of, settings, on_error, skipped):
        batch.append(event)
        customers.add(event.customer_id)
        if len(batch) >= BATCH_EVENTS:
            await store.apply(batch, now=as_of)
            batch = []
    if batch:
        await store.apply(batch, now=as_of)
    states = await store.get(sorted(customers))
    stamp = format_utc(as_of)
    return [
        {"customer_id": cid, "as_of": stamp, "features": features_as_dict(compute_features(state, as_of))}
        for cid, state in states.items()
    ]


def _human(row: dict[str, Any]) -> str:
    shown = "  ".join(f"{name}={_fmt(row['features'][name])}" for name in SEED_FEATURE_NAMES)
    return f"{row['customer_id']} @ {row['as_of']}: {shown}  (+{len(row['features']) - len(SEED_FEATURE_NAMES)} more with --json)"


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.3f}"
