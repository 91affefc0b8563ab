"""The feature table's item layout (features/layout.py), without a server: what a write puts, read
back, is the state the memory store keeps, whatever the batches; items stay within their budgets
and limits; pages past retention leave; the compression dictionary never changes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from features.events import Event, validate_event
from features.layout import (
    _ZDICT,
    MAX_ITEMS_PER_WRITE,
    PROFILE_BUCKET,
    PROFILE_ROLL_AT,
    SEGMENT_SPLIT_AT,
    Write,
    attach_segment,
    item_bytes,
    plan_write,
    read_profile,
    state_from_items,
)
from features.state import CustomerState, event_digest, to_us
from features.store import ApplyResult, MemoryFeatureStore, apply_to_state, oldest_kept_day
from tests.unit.test_window_properties import events

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
RETENTION = timedelta(days=35)


class Table:
    """A feature table in a dict: what the store's read, fold and write do, minus the requests."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[Write] = []

    def read(self, customer: str, oldest: int | None) -> Any:
        stored = read_profile(customer, self.items.get((customer, PROFILE_BUCKET)))
        for segment in stored.segments_to_read(oldest):
            assert attach_segment(stored, self.items.get((customer, segment.bucket)), segment)
        return stored

    def apply(self, batch: list[Event], now: datetime, retention: timedelta = RETENTION) -> None:
        oldest = oldest_kept_day(now, retention)
        for customer in sorted({e.customer_id for e in batch}):
            stored = self.read(customer, oldest)
            touched = apply_to_state(
                stored.state, [e for e in batch if e.customer_id == customer], ApplyResult()
            )
            if not touched:
                continue
            write = plan_write(stored, touched, "t", retention, oldest, to_us(now))
            assert write is not None
            self.writes.append(write)
            for action in write.actions:
                item = action["Put"]["Item"]
                self.items[(customer, item["bucket"]["S"])] = item

    def state(self, customer: str) -> CustomerState:
        return state_from_items(customer, [item for (cid, _), item in self.items.items() if cid == customer])


def same(a: CustomerState, b: CustomerState) -> bool:
    return a.pages == b.pages and (
        a.profile.last_us,
        a.profile.lifetime,
        a.profile.tier,
        a.profile.first_session,
    ) == (b.profile.last_us, b.profile.lifetime, b.profile.tier, b.profile.first_session)


@settings(max_examples=40, deadline=None)
@given(st.lists(events(customers=("c-1",)), min_size=1, max_size=250), st.integers(1, 40))
def test_what_a_write_puts_reads_back_as_the_memory_stores_state(history: list[Event], batch: int) -> None:
    table, memory = Table(), MemoryFeatureStore()
    for start in range(0, len(history), batch):
        table.apply(history[start : start + batch], NOW)
        memory.apply_sync(history[start : start + batch], NOW)
    assert same(table.state("c-1"), memory._states["c-1"])
    for write in table.writes:
        assert len(write.actions) <= MAX_ITEMS_PER_WRITE


def login(n: int, days_ago: float, customer: str = "c-1", tutor: str | None = None) -> Event:
    raw = {
        "event_id": f"e-{n}",
        "customer_id": customer,
        "type": "login",
        "occurred_at": (NOW - timedelta(days=days_ago)).isoformat(),
    }
    if tutor is not None:
        raw |= {"type": "session_rated", "rating": 4, "tutor_id": tutor}
    return validate_event(raw)


def test_the_profile_stays_near_one_write_unit_and_rolls_old_pages_into_segments() -> None:
    table = Table()
    for day in range(34, -1, -1):  # a month of 8 events a day, a batch a day
        table.apply([login(day * 10 + n, day + n / 100) for n in range(8)], NOW - timedelta(days=day))
    profile = table.items[("c-1", PROFILE_BUCKET)]
    assert item_bytes(profile) <= PROFILE_ROLL_AT + 100
    segments = [item for (_, bucket), item in table.items.items() if bucket.startswith("s#")]
    assert len(segments) >= 2
    assert sum(len(w.actions) == 1 for w in table.writes) >= 0.6 * len(
        table.writes
    )  # mostly the profile alone
    state = table.state("c-1")
    assert len(state.pages) == 35 and sum(p.counts["n.login"] for p in state.pages.values()) == 280


def test_pages_past_retention_leave_the_items_written() -> None:
    table = Table()
    table.apply([login(n, 30 + n / 10) for n in range(40)], NOW)  # an old month, in segments
    later = NOW + timedelta(days=40)
    table.apply(
        [
            validate_event(
                {"event_id": "new", "customer_id": "c-1", "type": "login", "occurred_at": later.isoformat()}
            )
        ],
        later,
    )
    stored = table.read("c-1", oldest_kept_day(later, RETENTION))
    assert not stored.segments  # forgotten: their TTL deletes them
    assert list(stored.state.pages) == [(to_us(later) // 86_400_000_000, 0)]


def test_a_segment_whose_pages_grew_is_split_when_rewritten() -> None:
    table = Table()
    table.apply([login(n, 20 + n % 10) for n in range(30)], NOW)  # ten small old pages in one segment
    late = [
        login(1000 + n, 20 + n % 10, tutor=f"tutor-{n:058d}") for n in range(3000)
    ]  # each page grows to ~40 KB
    table.apply(late, NOW)
    segments = [item for (_, bucket), item in table.items.items() if bucket.startswith("s#")]
    assert len(segments) > 2 and all(item_bytes(s) < 2 * SEGMENT_SPLIT_AT + 60_000 for s in segments)
    state = table.state("c-1")
    assert sum(p.counts.get("n.session_rated", 0) for p in state.pages.values()) == 3000
    assert event_digest("e-1500") in {d for p in state.pages.values() for d in p.event_digests}
    assert event_digest("e-4000") not in {d for p in state.pages.values() for d in p.event_digests}


def test_a_write_too_big_for_one_transaction_is_refused_so_the_store_folds_less() -> None:
    stored = read_profile("c-1", None)
    batch = [login(n, n % 34, tutor=f"tutor-{n:058d}") for n in range(34 * 600)]  # 68 pages of ~40 KB
    touched = apply_to_state(stored.state, batch, ApplyResult())
    assert plan_write(stored, touched, "t", RETENTION, oldest_kept_day(NOW, RETENTION), None) is None


def test_the_compression_dictionary_never_changes() -> None:
    """Format 2 documents are deflated with it: a different one could not read them back."""
    assert hashlib.sha256(_ZDICT).hexdigest()[:16] == "68df698f25338bf6"


def test_a_one_item_write_becomes_the_partiql_statement_that_leaves_the_same_item() -> None:
    """INSERT for a new customer (its condition: the item does not exist), UPDATE on the version
    read for a written one, setting every attribute of the new item and removing the profile's
    others (a PutItem replaces the whole item); no statement for any other Put."""
    from features.layout import (
        CUSTOMER_NOT_YET_WRITTEN,
        LEGACY_UNCHANGED_SINCE_READ,
        PROFILE_ATTRIBUTES,
        UNCHANGED_SINCE_READ,
        single_write_statement,
    )

    item = {
        "customer_id": {"S": "c-1"},
        "bucket": {"S": "profile"},
        "sv": {"N": "4"},
        "p": {"B": b"doc"},
        "ids": {"B": b"digests"},
        "due_us": {"N": "17"},
    }
    new = single_write_statement(
        {"TableName": "t", "Item": item, "ConditionExpression": CUSTOMER_NOT_YET_WRITTEN}
    )
    assert new is not None
    text, params = new
    assert (
        text
        == "INSERT INTO \"t\" VALUE {'customer_id': ?, 'bucket': ?, 'sv': ?, 'p': ?, 'ids': ?, 'due_us': ?}"
    )
    assert params == list(item.values())
    put = {
        "TableName": "t",
        "Item": item,
        "ConditionExpression": UNCHANGED_SINCE_READ,
        "ExpressionAttributeNames": {"#sv": "sv"},
        "ExpressionAttributeValues": {":read": {"N": "3"}},
    }
    written = single_write_statement(put)
    assert written is not None
    text, params = written
    assert text.startswith('UPDATE "t" SET "sv" = ? SET "p" = ? SET "ids" = ? SET "due_us" = ?')
    removed = [name for name in PROFILE_ATTRIBUTES if name not in item]
    assert all(f'REMOVE "{name}"' in text for name in removed) and 'REMOVE "due_us"' not in text
    assert text.endswith('WHERE "customer_id" = ? AND "bucket" = ? AND "sv" = ?')
    assert params == [
        item["sv"],
        item["p"],
        item["ids"],
        item["due_us"],
        item["customer_id"],
        item["bucket"],
        {"N": "3"},
    ]
    assert single_write_statement({**put, "ConditionExpression": LEGACY_UNCHANGED_SINCE_READ}) is None
    segment = {**put, "Item": {**item, "bucket": {"S": "seg#0001"}}}
    assert single_write_statement(segment) is None
