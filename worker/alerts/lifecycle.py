"""The alert lifecycle: an alert opens, may be escalated once, and resolves once its condition has
been clear for a while. Pure rules, no I/O; the ledger keeps the state (`worker.alerts.claims`).

Per rule (`worker.alerts.config`): an escalation threshold beyond the alert threshold
(`escalate_above` / `escalate_below` / `escalate_at_calls_14d`) and `resolve_after_hours`.

Messages. The alert itself is published with `status: open`; its escalation and its resolution are
messages of their own with the same `alert_id` and `status: escalated` / `resolved` (their
`message_id`, what a FIFO topic deduplicates on, is `<alert_id>:<status>`). Every message goes
through the claim machinery (a pending claim holding its body, a lease, the lease guard while it is
published, the outbox sweep if its worker dies, `mark_sent`), so each is published exactly once
bar the one duplicate every alert may have (a crash between publishing and recording it).

What holds (the invariants the ledger and the pipeline keep; tests in
tests/functional/test_alert_lifecycle.py):

- L1 One `alert_id` per (customer, type, opening). An escalation or a resolution never opens an
  alert and never takes a budget unit.
- L2 An alert escalates at most once: the first scoring after it went out whose value crosses the
  escalation threshold (an alert that opened beyond it is not escalated again).
- L3 A rule with `resolve_after_hours` (R) resolves an open alert once no scoring fired it for R:
  each scoring that fires it refreshes `last_firing` (a write at most every R/4, the heartbeat),
  and the alert sits in the ledger's sparse index with the deadline `last_firing + 1.25 R`; the
  sweeper resolves it past the deadline. So a resolution comes between R and 1.25 R after the last
  firing, never before. R must be at least the re-scoring interval (the settings refuse less), so a
  quiet customer is scored at least once in every R.
- L4 A resolved alert re-fires only on a new crossing (a scoring that fires the rule after the
  resolution went out), never on cooldown expiry; an alert of a rule without R behaves as before
  (one per cooldown window, never resolved).
- L5 A message is marked sent only by the holder of that message (`SAME_MESSAGE`: the alert id and
  the status): a slow worker that published the opening cannot mark a later escalation as sent.
- L6 A churned customer gets no escalation and no resolution message; the alert just leaves the
  resolution index.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.alerts.rules import Alert, iso

HEARTBEAT_SHARE = 0.25  # last_firing is written when it is older than this share of R
DEADLINE_FACTOR = 1.25  # resolve at last_firing (as written) + this x R


def heartbeat_due(last_firing: datetime | None, now: datetime, resolve_after: timedelta) -> bool:
    return last_firing is None or now - last_firing >= resolve_after * HEARTBEAT_SHARE


def resolve_deadline(last_firing: datetime, resolve_after: timedelta) -> datetime:
    return last_firing + resolve_after * DEADLINE_FACTOR


def escalation_of(stored: Alert, current: Alert, now: datetime) -> Alert:
    """The escalation message of `stored` (the open alert, as sent): what this scoring saw, under
    the stored alert's id, budget and opening."""
    note = current.escalation_note or current.message
    return current.model_copy(
        update={
            "window_start": stored.window_start,
            "status": "escalated",
            "message": f"Escalated: {note}",
            "escalating": True,
            "last_firing_at": now,
            "budget": stored.budget,
            "expected_value": stored.expected_value,
            "created_at": None,
            "arm": stored.arm,
            "resolve_after_s": stored.resolve_after_s,
        }
    )


def resolution_of(stored: Alert, now: datetime, last_firing: datetime | None) -> Alert:
    """The resolution message of `stored` (its latest message): the same alert, resolved now."""
    since = f" since {iso(last_firing)}" if last_firing is not None else ""
    return stored.model_copy(
        update={
            "status": "resolved",
            "message": f"Resolved: the {stored.alert_type.value} condition has been clear{since}",
            "resolved_at": now,
            "last_firing_at": last_firing,
            "created_at": None,
        }
    )
