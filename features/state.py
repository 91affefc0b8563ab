"""Per-customer feature state: day pages of integer aggregates plus a small lifetime profile.

Pure data and pure functions, no I/O: both stores (memory and DynamoDB) keep exactly this state and
apply events with `apply_event`, so they cannot disagree.

Invariants, whatever order or duplication events arrive in:
- An event is counted at most once. Its idempotency key is a 16-byte digest of `event_id`, kept in
  the page of the UTC day it occurred on. Duplicates are looked up across every page of that day.
- Aggregates are integers (cents, seconds, centi-stars) and merges are sums, minima, maxima or
  "latest by (occurred_at, event_id)": all commutative and associative, so any order of the same
  events gives the same state up to how ids are spread over pages, and the same features.
- Every page holds at most `PAGE_CAPACITY` events, which bounds its size (and its DynamoDB item)
  whatever one customer does in a day; a busy day simply has more pages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from features.events import (
    TIERS,
    CustomerSignedUp,
    Event,
    IbCall,
    PaymentFailed,
    PaymentSucceeded,
    SessionCancelled,
    SessionCompleted,
    SessionRated,
    SubscriptionChanged,
)

DAY_US = 86_400_000_000
PAGE_CAPACITY = 500
DIGEST_BYTES = 16

# Lifetime counters kept in the profile, by event type (the event counts once, when first seen).
_LIFETIME_COUNTERS = {
    "session_completed": "sessions",
    "ib_call": "ib_calls",
    "payment_failed": "payment_failures",
    "subscription_changed": "tier_changes",
}


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch, UTC: exact integer time for comparisons and storage. The
    one conversion of the product; `moment` must be timezone-aware (a naive one raises TypeError)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def parse_iso_us(text: str) -> int:
    """An ISO-8601 instant with a UTC offset, in epoch microseconds; ValueError if it is not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return to_us(moment)


def event_digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_BYTES).digest()


class Digests:
    """The 16-byte digests of a page's events: a set of them, which a page read from the store
    builds only when first asked whether it holds one, or given one. A read decodes every page of
    a customer and most are never touched (only the pages of an event's day are): turning their
    digests into sets of bytes objects was ~5% of the worker's CPU (py-spy). `packed()` gives the
    stored form back (the digests sorted, concatenated) without building the set when it was not."""

    __slots__ = ("_packed", "_set")

    def __init__(self, digests: Iterable[bytes] = (), *, packed: bytes | None = None) -> None:
        if packed is not None and len(packed) % DIGEST_BYTES:
            raise ValueError(f"{len(packed)} digest bytes are not whole {DIGEST_BYTES}-byte digests")
        self._packed = packed  # sorted, concatenated; None once the set exists
        self._set: set[bytes] | None = None if packed is not None else set(digests)

    def _digests(self) -> set[bytes]:
        if self._set is None:
            packed = self._packed or b""
            self._set = {packed[i : i + DIGEST_BYTES] for i in range(0, len(packed), DIGEST_BYTES)}
            self._packed = None
        return self._set

    def packed(self) -> bytes:
        if self._set is None:
            return self._packed or b""
        return b"".join(sorted(self._set))

    def add(self, digest: bytes) -> None:
        self._digests().add(digest)

    def __contains__(self, digest: object) -> bool:
        return digest in self._digests()

    def __len__(self) -> int:
        return len(self._set) if self._set is not None else len(self._packed or b"") // DIGEST_BYTES

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._digests())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Digests):
            return self._digests() == other._digests()
        if isinstance(other, set | frozenset):
            return self._digests() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as a set

    # No `|`: `a_set |= digests` would quietly rebind `a_set` to a new set (set's in-place union
    # takes sets only); `a_set.update(digests)` is the way, and `|` fails loudly.

    def __and__(self, other: Iterable[bytes]) -> set[bytes]:
        return self._digests() & set(other)

    __rand__ = __and__

    def __repr__(self) -> str:
        return f"Digests({len(self)})"


def packed_digests(digests: set[bytes] | Digests) -> bytes:
    """The stored form of a page's digests: sorted, concatenated."""
    if isinstance(digests, Digests):
        return digests.packed()
    return b"".join(sorted(digests))


@dataclass
class DayPage:
    """Aggregates of up to PAGE_CAPACITY events that occurred on one UTC day."""

    day: int  # days since 1970-01-01
    page: int  # 0, 1, ... within the day
    # A set; a page read from the DynamoDB store holds a `Digests` until it is asked (the memory
    # store's pages keep the plain set: its membership tests are the hot loop of a backtest).
    event_digests: set[bytes] | Digests = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    last_us: dict[str, int] = field(default_factory=dict)  # event type -> latest occurred_at
    # tutor_id -> [completed sessions, sum of ratings in centi-stars, number of ratings]
    tutors: dict[str, list[int]] = field(default_factory=dict)
    # The store's concurrency token of this page (DynamoDB, format 1: its `pv`). Not part of the
    # page's value.
    version: int = field(default=0, compare=False)
    # Read-only: a page the store keeps as it is (DynamoDB: a format-1 page not moved yet). It still
    # deduplicates its day, but new events of that day go to a page of their own.
    sealed: bool = field(default=False, compare=False)

    @property
    def is_full(self) -> bool:
        return self.sealed or len(self.event_digests) >= PAGE_CAPACITY


@dataclass
class Profile:
    """What outlives the day pages: first and last times, tier, first session, lifetime totals."""

    first_seen_us: int | None = None
    signed_up_us: int | None = None
    tier: tuple[int, str, int] | None = None  # (occurred_us, event_id, tier index): latest wins
    first_session: tuple[int, str, int] | None = None  # (occurred_us, event_id, success 0/1): earliest wins
    last_us: dict[str, int] = field(default_factory=dict)
    lifetime: dict[str, int] = field(default_factory=dict)
    version: int = 0  # optimistic-concurrency token of the store; 0 = never written
    # When the customer is next due for scoring without an event (features/due.py); store metadata,
    # not part of the profile's value.
    due_us: int | None = field(default=None, compare=False)
    # When the worker last scored the customer (set by the writes each scoring makes anyway: the
    # event path's profile Put, the sweeper's completion): where "what changed" starts. Metadata.
    scored_us: int | None = field(default=None, compare=False)


@dataclass
class CustomerState:
    customer_id: str
    profile: Profile = field(default_factory=Profile)
    pages: dict[tuple[int, int], DayPage] = field(default_factory=dict)
    # features.windows' running day sums of these pages (a DaySums) and the pages that gained events
    # since it read them: derived, never stored, not part of the state's value.
    window_cache: Any = field(default=None, repr=False, compare=False)
    changed_pages: set[tuple[int, int]] = field(default_factory=set, repr=False, compare=False)

    def pages_of_day(self, day: int) -> list[DayPage]:
        # A day's pages are numbered 0, 1, ... without gaps (created in order, removed whole days
        # at a time), so probing beats scanning every page of the customer on each event.
        found: list[DayPage] = []
        while (page := self.pages.get((day, len(found)))) is not None:
            found.append(page)
        return found

    def prune(self, oldest_day: int) -> None:
        """Drop pages before `oldest_day` (what DynamoDB's TTL does to old buckets)."""
        for key in [key for key in self.pages if key[0] < oldest_day]:
            del self.pages[key]


def before_events(state: CustomerState, days: Iterable[int]) -> CustomerState:
    """A copy of `state` for computing features, which folding events of `days` into `state` later
    leaves as it is: the pages of those days are copied (without their event digests: features do
    not read them), the others shared (a fold never touches them), the profile copied."""
    touched = set(days)
    profile = state.profile
    copied = Profile(
        first_seen_us=profile.first_seen_us,
        signed_up_us=profile.signed_up_us,
        tier=profile.tier,
        first_session=profile.first_session,
        last_us=dict(profile.last_us),
        lifetime=dict(profile.lifetime),
        version=profile.version,
        due_us=profile.due_us,
        scored_us=profile.scored_us,
    )
    pages = {
        key: (
            DayPage(
                page.day,
                page.page,
                counts=dict(page.counts),
                last_us=dict(page.last_us),
                tutors={tutor: list(agg) for tutor, agg in page.tutors.items()},
            )
            if key[0] in touched
            else page
        )
        for key, page in state.pages.items()
    }
    return CustomerState(state.customer_id, copied, pages)


def _add(counts: dict[str, int], key: str, amount: int = 1) -> None:
    counts[key] = counts.get(key, 0) + amount


def apply_event(state: CustomerState, event: Event) -> DayPage | None:
    """Fold one event into the state. Returns the page it landed in, or None for a duplicate."""
    occurred_us = to_us(event.occurred_at)
    day = occurred_us // DAY_US
    digest = event_digest(event.event_id)
    pages = state.pages_of_day(day)  # in page order, numbered 0, 1, ... without gaps
    open_page: DayPage | None = None
    for candidate in pages:
        if digest in candidate.event_digests:
            return None
        if open_page is None and not candidate.is_full:
            open_page = candidate  # the first page with room
    if open_page is None:
        page = state.pages[(day, len(pages))] = DayPage(day=day, page=len(pages))
    else:
        page = open_page
    page.event_digests.add(digest)
    state.changed_pages.add((day, page.page))
    _fold_into_page(page, event)
    _fold_into_profile(state.profile, event, occurred_us)
    page.last_us[event.type] = max(page.last_us.get(event.type, occurred_us), occurred_us)
    return page


def _fold_into_page(page: DayPage, event: Event) -> None:
    counts = page.counts
    _add(counts, "n." + event.type)
    if isinstance(event, SessionCompleted):
        _add(counts, "seconds.session", round(event.duration_minutes * 60))
        _add(counts, "subject." + event.subject)
        page.tutors.setdefault(event.tutor_id, [0, 0, 0])[0] += 1
    elif isinstance(event, SessionRated):
        centi = round(event.rating * 100)
        _add(counts, "rating.centi", centi)
        if event.rating <= 2:
            _add(counts, "rating.low")
        tutor = page.tutors.setdefault(event.tutor_id, [0, 0, 0])
        tutor[1] += centi
        tutor[2] += 1
    elif isinstance(event, SessionCancelled):
        _add(counts, "n.session_cancelled." + event.cancelled_by)
    elif isinstance(event, IbCall):
        _add(counts, "n.ib_call." + event.sentiment)
    elif isinstance(event, PaymentSucceeded | PaymentFailed):
        _add(counts, "cents." + event.type, round(event.amount * 100))


def _fold_into_profile(profile: Profile, event: Event, occurred_us: int) -> None:
    kind = event.type
    profile.first_seen_us = _earliest(profile.first_seen_us, occurred_us)
    profile.last_us[kind] = max(profile.last_us.get(kind, occurred_us), occurred_us)
    if kind in _LIFETIME_COUNTERS:
        _add(profile.lifetime, _LIFETIME_COUNTERS[kind])
    if isinstance(event, CustomerSignedUp):
        profile.signed_up_us = _earliest(profile.signed_up_us, occurred_us)
    if isinstance(event, CustomerSignedUp | SubscriptionChanged):
        candidate = (occurred_us, event.event_id, TIERS.index(event.tier))
        if profile.tier is None or candidate > profile.tier:
            profile.tier = candidate
    elif isinstance(event, SessionCompleted):
        if event.first_session:
            first = (occurred_us, event.event_id, int(bool(event.success)))
            if profile.first_session is None or first < profile.first_session:
                profile.first_session = first
    elif isinstance(event, IbCall) and event.sentiment == "negative":
        _add(profile.lifetime, "negative_calls")
    elif isinstance(event, PaymentSucceeded):
        _add(profile.lifetime, "spend_cents", round(event.amount * 100))


def _earliest(current: int | None, candidate: int) -> int:
    return candidate if current is None else min(current, candidate)


def utc_day(moment: datetime) -> int:
    return to_us(moment) // DAY_US
