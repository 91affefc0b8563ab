"""A page's event digests read from the store stay packed bytes until a membership question or a new
event needs the set: reading a customer decodes every page, and most are never touched."""

from __future__ import annotations

import pytest

from features.state import DIGEST_BYTES, Digests, event_digest


def packed(*ids: str) -> bytes:
    return b"".join(sorted(event_digest(i) for i in ids))


def test_packed_digests_answer_len_and_give_their_bytes_back_without_a_set() -> None:
    stored = packed("e-1", "e-2", "e-3")
    digests = Digests(packed=stored)
    assert len(digests) == 3 and digests.packed() is stored
    assert digests._set is None  # nothing built


def test_they_behave_as_the_set_once_asked() -> None:
    digests = Digests(packed=packed("e-1", "e-2"))
    assert event_digest("e-1") in digests and event_digest("e-9") not in digests
    digests.add(event_digest("e-3"))
    assert len(digests) == 3
    assert digests == {event_digest(i) for i in ("e-1", "e-2", "e-3")}
    assert digests == Digests([event_digest(i) for i in ("e-3", "e-2", "e-1")])
    assert digests.packed() == packed("e-1", "e-2", "e-3")  # sorted again, as stored
    other = {event_digest("e-2"), event_digest("e-7")}
    assert other & digests == {event_digest("e-2")}
    assert other | set(digests) == other | {event_digest(i) for i in ("e-1", "e-3")}
    with pytest.raises(TypeError):
        other |= digests  # type: ignore[misc]  # would rebind `other` quietly if it worked: refused
    assert set().union(digests) == set(digests)


def test_a_torn_blob_is_refused() -> None:
    with pytest.raises(ValueError, match="not whole"):
        Digests(packed=b"x" * (DIGEST_BYTES + 1))
