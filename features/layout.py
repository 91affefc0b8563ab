"""How a customer's feature state is laid out in DynamoDB items, and how a write is planned. The
store (`features/dynamodb.py`) does the requests; `features/STORE.md` explains the layout and its
cost. Pure functions and data, no I/O, so every rule here is unit-tested without a server.

Format 2 (the batched store): everything of a customer fits in a few small items read by key, so a batch's
customers are read together (BatchGetItem) and written together (one TransactWriteItems):

- `profile`: `sv` (the state version, its optimistic-concurrency token), `p` (deflate of a JSON
  document: the profile, the aggregates of the newest day pages, the list of segments) and `ids`
  (the 16-byte event digests of those pages); the `due` index attributes as before. Kept near 1 KB
  (1 write unit): when it grows past `PROFILE_ROLL_AT`, its oldest pages move to a segment.
- `s#000001`, `s#000002`, ...: segments of older pages, `v` (their version), `p`, `ids` and
  `expires_at` (TTL: the expiry of their newest page), each filled up to about 4 KB (1 read unit).
  The profile lists them with their versions, so a read can tell a torn view (a segment newer or
  older than the profile it read) and read again.

Format 1 (before the batched store, still read): a `profile` with `version`, `fs`, `su`, `tier`, `first`, `l`,
`lt`, and one `d#YYYY-MM-DD#NNNN` item per day page with its own `pv`. A format-1 customer is
converted by its next write: its pages are copied into format 2 (`copy_legacy`), or, when they are
too many to copy in one transaction, kept read-only ("sealed": they still deduplicate their day but
take no new events) and read by a Query while any of them is inside retention (`lg` in the profile
says until which day). The old items are never written again; TTL removes them. A format-2 profile
has no `version` attribute: a worker of the old code reading or writing it fails instead of
overwriting it (the upgrade never loses events, even with old and new workers running at once).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import to_json

from features.due import DUE_AT, DUE_OWNER, DUE_SHARD, DUE_SHARDS, SCORED_AT
from features.events import loads_json
from features.state import DIGEST_BYTES, CustomerState, DayPage, Digests, Profile, packed_digests
from plumbing.tables import shard_of, update_statement

PageKey = tuple[int, int]  # (day, page)

PROFILE_BUCKET = "profile"
SEGMENT_PREFIX = "s#"
LEGACY_PREFIX = "d#"
TTL_ATTRIBUTE = "expires_at"
STATE_VERSION = "sv"  # format 2: the profile's version
SEGMENT_VERSION = "v"
BLOB = "p"
DIGESTS = "ids"
LEGACY_VERSION = "version"  # format 1: the profile's version
LEGACY_PAGE_VERSION = "pv"
# A page outlives retention by two days, so a redelivered event is either still deduplicated by
# its page or rejected as too old before it reaches the store; never counted twice.
TTL_SLACK = timedelta(days=2)

# Sizes, in DynamoDB's item bytes. A write unit is 1 KB (x2 in a transaction), a strongly
# consistent read unit 4 KB.
PROFILE_ROLL_AT = 1024  # a profile item bigger than this moves its oldest pages to a segment ...
PROFILE_ROLL_TO = 400  # ... until it is this small (so it rolls every 20-25 events, not each time: STORE.md)
SEGMENT_TARGET = 4000  # pages are added to a segment while it stays under this
# One customer's write (all its items) in one transaction: well inside TransactWriteItems' 100
# items and 4 MB, so a batch of many customers can share transactions. A bigger one is split
# into several writes, each its own read, fold and transaction (features/dynamodb.py).
MAX_ITEMS_PER_WRITE = 48
MAX_BYTES_PER_WRITE = 3_000_000
# Format-1 pages are copied into format 2 at the first write if they take no more than this.
LEGACY_COPY_BYTES = 128 * 1024

# Conditions, one per item written: each checks that the item is still what we read.
CUSTOMER_NOT_YET_WRITTEN = "attribute_not_exists(customer_id)"  # a new customer: nobody created it meanwhile
UNCHANGED_SINCE_READ = "#sv = :read"  # the profile: nobody wrote the customer since our read
LEGACY_UNCHANGED_SINCE_READ = "#version = :read"  # a format-1 profile we convert: ditto
SEGMENT_NOT_YET_WRITTEN = "attribute_not_exists(customer_id)"  # a new segment number: nobody made it
SEGMENT_UNCHANGED_SINCE_READ = "#v = :read"  # a segment we rewrite: nobody changed it since

# deflate's preset dictionary: the strings every document repeats. Part of format 2: never edit it
# (documents written with it could not be read back); a new dictionary needs a new format.
_ZDICT = (
    b'{"fs":"su":"t":"f":"lt":{"sessions":"ib_calls":"payment_failures":"tier_changes":"negative_calls":'
    b'"spend_cents":}"g":"ns":"lg":"l":{"customer_signed_up":"subscription_changed":"session_booked":'
    b'"session_cancelled":"session_rated":"message_sent":"payment_succeeded":"payment_failed":'
    b'"customer_churned":"subject.algebra":1,"subject.geometry":1,"subject.calculus":1,"subject.statistics":1,'
    b'"subject.physics":1,"subject.chemistry":1,"subject.biology":1,"subject.english":1,"subject.writing":1,'
    b'"subject.reading":1,"subject.spanish":1,"subject.french":1,"subject.history":1,'
    b'"subject.computer_science":1,"subject.economics":1,"subject.psychology":1,"subject.sat_prep":1,'
    b'"subject.act_prep":1,"subject.music":1,"subject.coding":1,"n.ib_call.negative":1,"n.ib_call.neutral":1,'
    b'"n.ib_call.positive":1,"n.session_cancelled.customer":1,"n.session_cancelled.tutor":1,'
    b'"cents.payment_succeeded":"cents.payment_failed":"rating.low":1,"rating.centi":"n.customer_signed_up":1,'
    b'"n.subscription_changed":1,"n.payment_succeeded":1,"n.payment_failed":1,"n.customer_churned":1,'
    b'"n.message_sent":1,"n.session_booked":1,"n.session_rated":1,"n.ib_call":1,"n.login":1,'
    b'"seconds.session":"n.session_completed":1},{"session_completed":"login":"ib_call":'
)


def _deflate(raw: bytes) -> bytes:
    packer = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return packer.compress(raw) + packer.flush()


def _inflate(blob: bytes) -> bytes:
    unpacker = zlib.decompressobj(-15, _ZDICT)
    return unpacker.decompress(blob) + unpacker.flush()


def _document(value: Any) -> bytes:
    # pydantic-core's writer: JSON `json.loads` reads as it would json.dumps' (~4x faster; non-ASCII
    # text is written as UTF-8 rather than escaped, NaN and infinities as json.dumps writes them).
    return _deflate(to_json(value, inf_nan_mode="constants"))


def _read_document(blob: bytes) -> Any:
    # pydantic-core's parser: the same values as json.loads, ~2x faster here; every batch decodes the
    # profile and segments of each customer it reads (~7% of the worker's CPU with json.loads).
    return loads_json(_inflate(blob))


# -- item sizes (DynamoDB's rules) -----------------------------------------------------------------


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, body),) = value.items()
    if kind == "S":
        return len(body.encode())
    if kind == "N":
        digits = body.lstrip("-").replace(".", "").strip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(body)
    if kind == "L":
        return 3 + sum(1 + _value_bytes(item) for item in body)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + _value_bytes(item) for name, item in body.items())
    return 1


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it (names and values), for the write and read units."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


# -- pages -------------------------------------------------------------------------------------------


def _page_row(page: DayPage) -> list[Any]:
    return [page.day, page.page, len(page.event_digests), page.counts, page.last_us, page.tutors]


def _pages_document(pages: Sequence[DayPage]) -> tuple[list[list[Any]], bytes]:
    """The pages' rows (aggregates) and their digests, page after page, each page's sorted."""
    return [_page_row(page) for page in pages], b"".join(packed_digests(page.event_digests) for page in pages)


def _pages_from(rows: list[list[Any]], digests: bytes) -> list[DayPage]:
    pages, at = [], 0
    for day, number, count, counts, last_us, tutors in rows:
        end = at + count * DIGEST_BYTES
        ids = Digests(packed=digests[at:end])  # a set once asked (most pages read are not)
        pages.append(
            DayPage(day=day, page=number, event_digests=ids, counts=counts, last_us=last_us, tutors=tutors)
        )
        at = end
    if at != len(digests):
        raise ValueError(f"{len(digests) - at} digest bytes beyond the pages' counts")
    return pages


def page_bytes(page: DayPage) -> int:
    """What a page adds to an item, about: its row alone, deflated, and its digests."""
    return len(_document(_page_row(page))) + DIGEST_BYTES * len(page.event_digests)


def page_expiry(day: int, retention: timedelta) -> int:
    """Epoch seconds when a page of `day` may go: end of its day + retention + slack."""
    return (day + 1) * 86_400 + int((retention + TTL_SLACK).total_seconds())


# -- what a read found --------------------------------------------------------------------------------


@dataclass
class Segment:
    number: int
    version: int  # as read; 0 = a segment this write creates
    pages: list[PageKey] = field(default_factory=list)
    newest_day: int = 0

    @property
    def bucket(self) -> str:
        return segment_bucket(self.number)


def segment_bucket(number: int) -> str:
    return f"{SEGMENT_PREFIX}{number:06d}"


@dataclass
class Stored:
    """A customer as read: its state, and where each of its pages lives, so a write knows which
    items to put and what to check they still are."""

    customer_id: str
    format: int  # 0: nothing stored yet; 1 or 2: the profile's format
    version: int  # the profile's version as read (format 2 `sv`, format 1 `version`)
    state: CustomerState
    hot: set[PageKey] = field(default_factory=set)  # pages inside the profile item
    segments: dict[int, Segment] = field(default_factory=dict)  # listed in the profile, by number
    next_segment: int = 1
    legacy_until: int | None = None  # format 2: the last day of format-1 pages still to be read
    legacy: set[PageKey] = field(default_factory=set)  # format-1 pages read (`d#` items)
    copy_legacy: bool = False  # this write moves the format-1 pages into format 2

    def needs_legacy_read(self, oldest_day: int | None) -> bool:
        """Format-1 pages may still matter: a format-1 customer, or a converted one whose sealed
        pages are not all older than `oldest_day` yet."""
        if self.format == 1:
            return True
        return self.legacy_until is not None and (oldest_day is None or self.legacy_until >= oldest_day)

    def segments_to_read(self, oldest_day: int | None) -> list[Segment]:
        """Listed segments holding a page still inside retention (all of them when `oldest_day`
        is None). Their TTL is later than any such page's, so none of them can have expired."""
        return [s for s in self.segments.values() if oldest_day is None or s.newest_day >= oldest_day]


def profile_key(customer_id: str) -> dict[str, Any]:
    return {"customer_id": {"S": customer_id}, "bucket": {"S": PROFILE_BUCKET}}


def segment_key(customer_id: str, number: int) -> dict[str, Any]:
    return {"customer_id": {"S": customer_id}, "bucket": {"S": segment_bucket(number)}}


def read_profile(customer_id: str, item: dict[str, Any] | None) -> Stored:
    """Decode a `profile` item of either format (None: a customer never written)."""
    state = CustomerState(customer_id)
    if item is None:
        return Stored(customer_id, 0, 0, state)
    if STATE_VERSION not in item:
        state.profile = _legacy_profile(item)
        return Stored(customer_id, 1, state.profile.version, state)
    document = _read_document(item[BLOB]["B"])
    version = int(item[STATE_VERSION]["N"])
    state.profile = Profile(
        first_seen_us=document.get("fs"),
        signed_up_us=document.get("su"),
        tier=tuple(document["t"]) if "t" in document else None,
        first_session=tuple(document["f"]) if "f" in document else None,
        last_us=document.get("l", {}),
        lifetime=document.get("lt", {}),
        version=version,
        due_us=int(item[DUE_AT]["N"]) if DUE_AT in item else None,
        scored_us=int(item[SCORED_AT]["N"]) if SCORED_AT in item else None,
    )
    stored = Stored(
        customer_id, 2, version, state, next_segment=document.get("ns", 1), legacy_until=document.get("lg")
    )
    for page in _pages_from(document.get("p", []), item[DIGESTS]["B"]):
        state.pages[(page.day, page.page)] = page
        stored.hot.add((page.day, page.page))
    for number, segment_version, newest_day in document.get("g", []):
        stored.segments[number] = Segment(number, segment_version, newest_day=newest_day)
    return stored


def attach_segment(stored: Stored, item: dict[str, Any] | None, segment: Segment) -> bool:
    """Add a segment's pages to the state. False when the segment is not the version the profile
    lists (another writer committed between our reads): the caller reads the customer again."""
    if item is None or int(item[SEGMENT_VERSION]["N"]) != segment.version:
        return False
    rows = _read_document(item[BLOB]["B"])
    for page in _pages_from(rows, item[DIGESTS]["B"]):
        key = (page.day, page.page)
        if key in stored.state.pages:
            raise ValueError(f"customer {stored.customer_id}: page {key} stored twice")
        stored.state.pages[key] = page
        segment.pages.append(key)
    return True


def attach_legacy(stored: Stored, items: Iterable[dict[str, Any]]) -> bool:
    """Add the format-1 day pages read by a Query. They are copied into format 2 by the next write
    when small enough (`copy_legacy`), else sealed (kept read-only) until they age out. False when
    one of them is already in the state (a torn read): the caller reads the customer again."""
    pages = [_legacy_page(item) for item in items]
    if any((page.day, page.page) in stored.state.pages for page in pages):
        return False
    stored.copy_legacy = sum(page_bytes(page) for page in pages) <= LEGACY_COPY_BYTES
    for page in pages:
        page.sealed = not stored.copy_legacy
        stored.state.pages[(page.day, page.page)] = page
        stored.legacy.add((page.day, page.page))
    return True


def state_from_items(customer_id: str, items: Iterable[dict[str, Any]]) -> CustomerState:
    """A customer's state from every item of its partition (a Query), either format: for tools
    and tests. The worker reads by key instead (features/dynamodb.py)."""
    by_bucket = {item["bucket"]["S"]: item for item in items}
    stored = read_profile(customer_id, by_bucket.get(PROFILE_BUCKET))
    for segment in stored.segments_to_read(None):
        if not attach_segment(stored, by_bucket.get(segment.bucket), segment):
            raise ValueError(f"customer {customer_id}: segment {segment.bucket} missing or not as listed")
    legacy = [item for bucket, item in by_bucket.items() if bucket.startswith(LEGACY_PREFIX)]
    if stored.needs_legacy_read(None) and not attach_legacy(stored, legacy):
        raise ValueError(f"customer {customer_id}: a format-1 page is also in format 2")
    return stored.state


# -- format 1 (read, and written only by tests that build an old table) ------------------------------


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def _day_from_label(label: str) -> int:
    return int(datetime.strptime(label, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) // 86_400


def _num_map(values: dict[str, int]) -> dict[str, Any]:
    return {"M": {key: {"N": str(value)} for key, value in values.items()}}


def _read_num_map(attr: dict[str, Any] | None) -> dict[str, int]:
    return {key: int(value["N"]) for key, value in (attr or {}).get("M", {}).items()}


def _triple(value: tuple[int, str, int]) -> dict[str, Any]:
    return {"L": [{"N": str(value[0])}, {"S": value[1]}, {"N": str(value[2])}]}


def _read_triple(attr: dict[str, Any] | None) -> tuple[int, str, int] | None:
    if not attr:
        return None
    a, b, c = attr["L"]
    return int(a["N"]), b["S"], int(c["N"])


def _legacy_profile(item: dict[str, Any]) -> Profile:
    return Profile(
        first_seen_us=int(item["fs"]["N"]) if "fs" in item else None,
        signed_up_us=int(item["su"]["N"]) if "su" in item else None,
        tier=_read_triple(item.get("tier")),
        first_session=_read_triple(item.get("first")),
        last_us=_read_num_map(item.get("l")),
        lifetime=_read_num_map(item.get("lt")),
        version=int(item[LEGACY_VERSION]["N"]),
        due_us=int(item[DUE_AT]["N"]) if DUE_AT in item else None,
    )


def _legacy_page(item: dict[str, Any]) -> DayPage:
    _, label, page_no = item["bucket"]["S"].split("#")
    blob: bytes = item[DIGESTS]["B"]
    return DayPage(
        day=_day_from_label(label),
        page=int(page_no),
        event_digests={blob[i : i + DIGEST_BYTES] for i in range(0, len(blob), DIGEST_BYTES)},
        counts=_read_num_map(item.get("c")),
        last_us=_read_num_map(item.get("l")),
        tutors={tid: [int(n["N"]) for n in agg["L"]] for tid, agg in item.get("t", {}).get("M", {}).items()},
        version=int(item[LEGACY_PAGE_VERSION]["N"]) if LEGACY_PAGE_VERSION in item else 0,
    )


def legacy_page_item(
    customer_id: str, page: DayPage, retention: timedelta, version: int = 1
) -> dict[str, Any]:
    """A format-1 day page item (tests build old tables with it)."""
    return {
        "customer_id": {"S": customer_id},
        "bucket": {"S": f"{LEGACY_PREFIX}{_day_label(page.day)}#{page.page:04d}"},
        DIGESTS: {"B": packed_digests(page.event_digests)},
        "c": _num_map(page.counts),
        "l": _num_map(page.last_us),
        "t": {"M": {tid: {"L": [{"N": str(n)} for n in agg]} for tid, agg in page.tutors.items()}},
        LEGACY_PAGE_VERSION: {"N": str(version)},
        TTL_ATTRIBUTE: {"N": str(page_expiry(page.day, retention))},
    }


def legacy_profile_item(customer_id: str, profile: Profile, version: int) -> dict[str, Any]:
    """A format-1 profile item (tests build old tables with it)."""
    item: dict[str, Any] = {
        **profile_key(customer_id),
        LEGACY_VERSION: {"N": str(version)},
        "l": _num_map(profile.last_us),
        "lt": _num_map(profile.lifetime),
    }
    for name, value in (("fs", profile.first_seen_us), ("su", profile.signed_up_us)):
        if value is not None:
            item[name] = {"N": str(value)}
    if profile.tier is not None:
        item["tier"] = _triple(profile.tier)
    if profile.first_session is not None:
        item["first"] = _triple(profile.first_session)
    return item


# -- planning a write ---------------------------------------------------------------------------------


@dataclass
class Write:
    """One customer's items for a transaction, each conditional on what was read."""

    customer_id: str
    actions: list[dict[str, Any]]  # TransactWriteItems entries: {"Put": {...}}
    bytes: int
    version: int  # the profile's version once written
    due_us: int | None


SEGMENT_OVERHEAD = 200  # a segment item's keys, version, TTL and deflate's own bytes, about
SEGMENT_SPLIT_AT = 2 * SEGMENT_TARGET  # a segment whose pages grew past this is split when rewritten


def plan_write(
    stored: Stored,
    touched: Iterable[PageKey],
    table: str,
    retention: timedelta,
    oldest_day: int,
    due_us: int | None,
    *,
    scored_us: int | None = None,
) -> Write | None:
    """The items one write puts after events were folded into `stored.state`, `touched` being the
    pages that gained events. None when they would pass MAX_ITEMS_PER_WRITE or
    MAX_BYTES_PER_WRITE: the caller folds fewer events.

    Where pages go: a new page, or one copied from format 1, goes into the profile; a page that
    gained events stays where it is (its segment is rewritten); pages older than `oldest_day` are
    dropped (a segment holding only such pages is forgotten: TTL deletes it). When the profile
    grows past PROFILE_ROLL_AT, its oldest pages move to the newest segment while it has room
    (SEGMENT_TARGET), else to a new one; a rewritten segment that grew past SEGMENT_SPLIT_AT is
    split the same way."""
    pages = stored.state.pages
    segments = {
        n: Segment(s.number, s.version, [k for k in s.pages if k[0] >= oldest_day], s.newest_day)
        for n, s in stored.segments.items()
        if s.newest_day >= oldest_day
    }
    where = {key: number for number, segment in segments.items() for key in segment.pages}
    dirty: set[int] = set()
    hot = {key for key in stored.hot if key[0] >= oldest_day}
    if stored.copy_legacy:
        hot |= {key for key in stored.legacy if key[0] >= oldest_day}
    for key in touched:
        if pages[key].sealed:
            raise AssertionError(f"sealed page {key} gained events")
        if key in where:
            dirty.add(where[key])
        else:
            hot.add(key)
    legacy_until = None
    if not stored.copy_legacy:
        kept = [day for day, _ in stored.legacy if day >= oldest_day]
        legacy_until = max(kept) if kept else None
    packer = _Packer(segments, stored.next_segment, pages)

    profile = _profile_item(
        stored, hot, segments, set(), packer.next_segment, legacy_until, due_us, scored_us
    )
    profile_bytes = item_bytes(profile)
    rolled = profile_bytes > PROFILE_ROLL_AT
    if rolled:
        excess = profile_bytes - PROFILE_ROLL_TO
        moving: list[PageKey] = []
        for key in sorted(hot):  # oldest first
            if excess <= 0:
                break
            moving.append(key)
            excess -= packer.page_bytes(key)
        hot -= set(moving)
        dirty |= packer.fill(moving, segments[max(segments)] if segments else None)
    for number in sorted(dirty):
        segment = segments[number]
        if len(segment.pages) > 1 and packer.estimate(segment) > SEGMENT_SPLIT_AT:
            keys, segment.pages = sorted(segment.pages), []
            dirty |= packer.fill(keys, segment)

    items: list[tuple[Segment, dict[str, Any]]] = []
    for number in sorted(dirty):
        segment = segments[number]
        if not segment.pages:  # every page of it aged out: forget it, TTL deletes it
            del segments[number]
            continue
        segment.newest_day = max(day for day, _ in segment.pages)
        items.append((segment, _segment_item(stored.customer_id, segment, pages, retention)))
    written = {segment.number for segment, _ in items}
    if rolled or dirty:  # else the profile as first built is the one to write (the common case)
        profile = _profile_item(
            stored, hot, segments, written, packer.next_segment, legacy_until, due_us, scored_us
        )
    actions = [_put(table, profile, *_profile_condition(stored))]
    for segment, item in items:
        if segment.version == 0:
            actions.append(_put(table, item, SEGMENT_NOT_YET_WRITTEN))
        else:
            actions.append(
                _put(
                    table,
                    item,
                    SEGMENT_UNCHANGED_SINCE_READ,
                    {"#v": SEGMENT_VERSION},
                    {":read": {"N": str(segment.version)}},
                )
            )
    size = item_bytes(profile) + sum(item_bytes(item) for _, item in items)
    if len(actions) > MAX_ITEMS_PER_WRITE or size > MAX_BYTES_PER_WRITE:
        return None
    return Write(stored.customer_id, actions, size, stored.version + 1, due_us)


class _Packer:
    """Puts pages into segments of about SEGMENT_TARGET bytes, numbering new ones."""

    def __init__(
        self, segments: dict[int, Segment], next_segment: int, pages: dict[PageKey, DayPage]
    ) -> None:
        self.segments = segments
        self.next_segment = next_segment
        self._pages = pages
        self._sizes: dict[PageKey, int] = {}

    def page_bytes(self, key: PageKey) -> int:
        """`page_bytes` of a page, once per write (it deflates the page's row)."""
        size = self._sizes.get(key)
        if size is None:
            size = self._sizes[key] = page_bytes(self._pages[key])
        return size

    def estimate(self, segment: Segment) -> int:
        return SEGMENT_OVERHEAD + sum(self.page_bytes(key) for key in segment.pages)

    def fill(self, keys: Iterable[PageKey], segment: Segment | None) -> set[int]:
        """Append pages to `segment` while it has room, then to new segments. Returns the numbers
        of the segments that changed."""
        changed: set[int] = set()
        room = SEGMENT_TARGET - self.estimate(segment) if segment is not None else 0
        for key in keys:
            size = self.page_bytes(key)
            if segment is None or (size > room and segment.pages):
                segment = self.segments[self.next_segment] = Segment(self.next_segment, 0)
                self.next_segment += 1
                room = SEGMENT_TARGET - SEGMENT_OVERHEAD
            segment.pages.append(key)
            room -= size
            changed.add(segment.number)
        return changed


def _profile_condition(stored: Stored) -> tuple[str, dict[str, str] | None, dict[str, Any] | None]:
    read = {":read": {"N": str(stored.version)}}
    if stored.format == 0:
        return CUSTOMER_NOT_YET_WRITTEN, None, None
    if stored.format == 1:
        return LEGACY_UNCHANGED_SINCE_READ, {"#version": LEGACY_VERSION}, read
    return UNCHANGED_SINCE_READ, {"#sv": STATE_VERSION}, read


def _put(
    table: str,
    item: dict[str, Any],
    condition: str,
    names: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": table, "Item": item, "ConditionExpression": condition}
    if names:
        put["ExpressionAttributeNames"] = names
    if values:
        put["ExpressionAttributeValues"] = values
    return {"Put": put}


def _profile_item(
    stored: Stored,
    hot: set[PageKey],
    segments: dict[int, Segment],
    written: set[int],
    next_segment: int,
    legacy_until: int | None,
    due_us: int | None,
    scored_us: int | None = None,
) -> dict[str, Any]:
    profile = stored.state.profile
    rows, digests = _pages_document([stored.state.pages[key] for key in sorted(hot)])
    document: dict[str, Any] = {"l": profile.last_us, "lt": profile.lifetime}
    for name, value in (
        ("fs", profile.first_seen_us),
        ("su", profile.signed_up_us),
        ("t", profile.tier),
        ("f", profile.first_session),
        ("lg", legacy_until),
    ):
        if value is not None:
            document[name] = value
    if rows:
        document["p"] = rows
    if segments:  # each with the version it has once this write is done
        document["g"] = [
            [s.number, s.version + 1 if s.number in written else s.version, s.newest_day]
            for s in sorted(segments.values(), key=lambda s: s.number)
        ]
    if next_segment > 1:
        document["ns"] = next_segment
    item: dict[str, Any] = {
        **profile_key(stored.customer_id),
        STATE_VERSION: {"N": str(stored.version + 1)},
        BLOB: {"B": _document(document)},
        DIGESTS: {"B": digests},
    }
    if due_us is not None:  # absent: not in the due index (churned, or never scored without an event)
        item[DUE_SHARD] = {"S": shard_of(stored.customer_id, DUE_SHARDS)}
        item[DUE_AT] = {"N": str(due_us)}
    if scored_us is not None:  # the scoring this write precedes (worker/alerts/changes.py)
        item[SCORED_AT] = {"N": str(scored_us)}
    return item


def _segment_item(
    customer_id: str, segment: Segment, pages: dict[PageKey, DayPage], retention: timedelta
) -> dict[str, Any]:
    rows, digests = _pages_document([pages[key] for key in sorted(segment.pages)])
    return {
        **segment_key(customer_id, segment.number),
        SEGMENT_VERSION: {"N": str(segment.version + 1)},
        BLOB: {"B": _document(rows)},
        DIGESTS: {"B": digests},
        TTL_ATTRIBUTE: {"N": str(page_expiry(segment.newest_day, retention))},
    }


# -- a one-item write as a PartiQL statement ----------------------------------------------------------

# Attributes a format-2 profile item may hold besides its keys: what `_profile_item` writes, and the
# due index's claim the sweeper sets (features/due_dynamodb.py). A PutItem replaces the whole item;
# the UPDATE statement that stands for it removes whichever of these the new item does not carry.
PROFILE_ATTRIBUTES = (STATE_VERSION, BLOB, DIGESTS, DUE_SHARD, DUE_AT, DUE_OWNER, SCORED_AT)


def single_write_statement(put: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """The PartiQL statement that does what a one-item conditional Put (a `Write` action's "Put")
    does, for `BatchExecuteStatement` to carry up to 25 customers' writes in one request at the
    units of single writes; None for a Put that has no such statement (a format-1 conversion).

    - a new customer (`attribute_not_exists(customer_id)`): INSERT, which fails with DuplicateItem
      when the item exists;
    - a format-2 profile written since read (`#sv = :read`): UPDATE ... WHERE the keys and `sv`
      equal what was read, which fails with ConditionalCheckFailed otherwise (or when the item is
      gone); it sets every attribute of the new item and removes the other profile attributes, so
      the item ends as the Put would leave it.

    Identifiers are double-quoted (no reserved-word trouble); every value is a parameter (the UPDATE
    is `plumbing.tables.update_statement`'s)."""
    table, item, condition = put["TableName"], put["Item"], put["ConditionExpression"]
    if condition == CUSTOMER_NOT_YET_WRITTEN:
        names = list(item)
        fields = ", ".join(f"'{name}': ?" for name in names)
        return f'INSERT INTO "{table}" VALUE {{{fields}}}', [item[name] for name in names]
    is_profile = item.get("bucket", {}).get("S") == PROFILE_BUCKET
    if (
        condition != UNCHANGED_SINCE_READ
        or not is_profile
        or set(item) - {"customer_id", "bucket", *PROFILE_ATTRIBUTES}
    ):
        return None
    return update_statement(
        table,
        sets=[(name, value) for name, value in item.items() if name not in ("customer_id", "bucket")],
        removes=[name for name in PROFILE_ATTRIBUTES if name not in item],
        where=[
            ("customer_id", item["customer_id"]),
            ("bucket", item["bucket"]),
            (STATE_VERSION, put["ExpressionAttributeValues"][":read"]),
        ],
    )
