"""Feature tables as the worker before issue 14 left them (format 1: a profile with `version` and
one `d#` item per day page), built item by item, for the tests of reading and converting them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from features.events import Event
from features.layout import legacy_page_item, legacy_profile_item
from features.store import MemoryFeatureStore


async def write_format_1(
    client: Any, table: str, events: list[Event], now: datetime, version: int = 1
) -> None:
    memory = MemoryFeatureStore()
    await memory.apply(events, now)
    for cid in memory.customers():
        state = (await memory.get([cid]))[cid]
        for page in state.pages.values():
            await client.put_item(
                TableName=table, Item=legacy_page_item(cid, page, timedelta(days=35), version)
            )
        await client.put_item(TableName=table, Item=legacy_profile_item(cid, state.profile, version))
