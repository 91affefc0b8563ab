"""Replay's sender against a scripted sink: per-customer order and exactly-once acceptance whatever
entries fail, and refused entries handed back as bad lines."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from pathlib import Path

import pytest

import jobs.replay as replay_module
from jobs.replay import Failure, OrderedSender, Pending, ReplayRequest, replay
from tests.fakes import FakeClock


class FlakySink:
    """Accepts in call order; fails a share of entries (and now and then a whole call) as retryable."""

    target = "scripted"
    max_bytes = 1 << 20

    def __init__(
        self, seed: int, max_entries: int = 10, concurrency: int = 3, refuse: set[str] | None = None
    ) -> None:
        self.rng = random.Random(seed)
        self.max_entries, self.concurrency = max_entries, concurrency
        self.accepted: list[Pending] = []
        self.calls = 0
        self.refuse = refuse or set()

    async def put(self, batch: list[Pending]) -> list[Failure]:
        self.calls += 1
        assert len({p.customer_id for p in batch}) == len(batch), "two events of one customer in one call"
        await asyncio.sleep(self.rng.random() / 1000)  # let calls overlap
        if self.rng.random() < 0.1:
            return [Failure(p, "ThrottlingException", True) for p in batch]
        failures = []
        for p in batch:
            if p.event_id in self.refuse:
                failures.append(Failure(p, "InvalidMessageContents", False))
            elif self.rng.random() < 0.25:
                failures.append(Failure(p, "InternalError", True))
            else:
                self.accepted.append(p)
        return failures


def events(customers: int, per_customer: int, seed: int) -> list[Pending]:
    """Customers' events interleaved at random, each customer's in sequence."""
    rng = random.Random(seed)
    remaining = {f"c{c}": list(range(per_customer)) for c in range(customers)}
    out: list[Pending] = []
    while remaining:
        cid = rng.choice(sorted(remaining))
        n = remaining[cid].pop(0)
        if not remaining[cid]:
            del remaining[cid]
        out.append(Pending(len(out) + 1, cid, f"{cid}-{n}", f'{{"n": {n}}}'))
    return out


async def send_all(sender: OrderedSender, entries: list[Pending]) -> None:
    running = asyncio.create_task(sender.run())
    for entry in entries:
        await sender.add(entry)
    await sender.close()
    await running


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_event_is_accepted_once_and_in_customer_order(seed: int) -> None:
    sink = FlakySink(seed)
    sender = OrderedSender(
        sink, on_rejected=lambda f: pytest.fail(f"unexpected refusal {f}"), backoff_base=0.0
    )
    entries = events(customers=7, per_customer=40, seed=seed)
    await send_all(sender, entries)

    assert sorted(p.event_id for p in sink.accepted) == sorted(
        p.event_id for p in entries
    )  # none lost, none twice
    order: dict[str, list[str]] = defaultdict(list)
    for p in sink.accepted:
        order[p.customer_id].append(p.event_id)
    assert all(ids == [f"{cid}-{n}" for n in range(40)] for cid, ids in order.items())
    assert sender.counts.sent == len(entries)
    assert sender.counts.retried > 0  # the sink did fail entries, and only those were sent again
    assert sink.calls > len(entries) / sink.max_entries


async def test_refused_entries_are_reported_and_the_customer_goes_on() -> None:
    sink = FlakySink(seed=5, refuse={"c1-3"})
    refused: list[Failure] = []
    sender = OrderedSender(sink, on_rejected=refused.append, backoff_base=0.0)
    entries = events(customers=3, per_customer=10, seed=5)
    await send_all(sender, entries)
    assert [(f.entry.event_id, f.retryable) for f in refused] == [("c1-3", False)]
    assert [p.event_id for p in sink.accepted if p.customer_id == "c1"] == [
        f"c1-{n}" for n in range(10) if n != 3
    ]
    assert sender.counts.sent == len(entries) - 1


async def test_a_target_that_never_recovers_stops_the_run() -> None:
    class Down(FlakySink):
        async def put(self, batch: list[Pending]) -> list[Failure]:
            return [Failure(p, "ServiceUnavailable", True) for p in batch]

    sender = OrderedSender(Down(seed=0), on_rejected=lambda f: None, backoff_base=0.0)
    with pytest.raises(Exception, match="still failing after 10 attempts"):
        await send_all(sender, events(customers=2, per_customer=3, seed=0))


async def test_speedup_keeps_the_spacing_of_event_time_divided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pacing on a clock the test owns: the reader waits exactly the event-time gaps divided by the
    speedup (through the sleep it is given), never sends an event before its time, and reports the
    paced duration; no wall-clock time is measured."""
    path = tmp_path / "e.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"e-{i}",
                    "customer_id": f"c{i}",
                    "type": "login",
                    "occurred_at": f"2026-03-01T00:00:{10 * i:02d}Z",
                }
            )
            + "\n"
            for i in range(3)
        )
    )
    clock = FakeClock()
    started = clock()
    monkeypatch.setattr(replay_module, "time", clock)  # replay's monotonic clock
    paced = replay_module._until
    monkeypatch.setattr(replay_module, "_until", lambda due, _sleep: paced(due, clock.sleep))
    sink = FlakySink(seed=0)
    sink.rng = random.Random(99)  # this seed neither throttles nor fails the first calls
    sent_at: dict[str, float] = {}
    original = sink.put

    async def put(batch: list[Pending]) -> list[Failure]:
        for entry in batch:
            sent_at.setdefault(entry.event_id, clock())
        return await original(batch)

    sink.put = put  # type: ignore[method-assign]
    counts, stopped, seconds = await replay(ReplayRequest(path, "sqs", speedup=100), sink)
    assert stopped is None and counts.sent == 3
    # 10 s of event time between events at 100x: 0.1 s each, 0.2 s in all.
    assert clock.sleeps == pytest.approx([0.1, 0.1])
    assert seconds == pytest.approx(0.2)
    for i in range(3):
        assert sent_at[f"e-{i}"] >= started + 0.1 * i - 1e-9, sent_at  # never before its time
