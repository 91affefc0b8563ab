"""Live outcomes: was an alert followed by churn? Pure rules and numbers, no I/O; the ledger adapters
(`worker.alerts.ledger`'s twin, `worker.alerts.dynamodb_alert_outcomes`) keep them.

Every alert the ledger claims (both experiment arms) leaves an *alert record* next to its claim,
written in the claim's own transaction: the claim item is replaced when the next cooldown window
starts, the record stays (for `HISTORY_DAYS`), so the alerts of the last 30 days are all there,
bounded by the cooldowns. Each record ends with one outcome, exactly once:

- confirmed: the customer churned within `CONFIRM_DAYS` after the alert (`as_of < churned_at <=
  as_of + 30 days`, the backtest's rule). Set when `customer_churned` is processed: the pipeline
  asks the ledger to confirm that customer's open records of the 30 days before the churn.
- expired: 30 days passed without a churn. Open records sit in a sparse, sharded index sorted by
  their deadline (`as_of + 30 days`), and every worker's sweeper (`worker.rescore`) expires the
  ones past it, a bounded batch a minute. The deadline belongs to the alert, not to the customer,
  so customers who leave the re-scoring index (churned, or silent past retention) lose nothing:
  their records expire on time all the same, and a churned customer's records of the 30 days
  before the churn are confirmed when the churn is processed.
- A churn learned late (its event delivered after the deadline passed, though it happened before)
  turns an expiry into a confirmation, once.

Per (alert day, type, arm) the ledger keeps two counters, `confirmed` and `expired`, moved in the
same transaction as the record's outcome, so they count every resolution exactly once and the
statistics read a few items per day instead of scanning anything. Open alerts are counted from the
deadline index. Live precision = confirmed / (confirmed + expired) over alerts whose outcome is
known; alerts younger than 30 days are mostly open, and over them the ratio leans high
(confirmations arrive early, expiries only after 30 days), so the worker's gauge and `alerts stats`
say which days they cover. Treatment alerts get interventions, which prevent some churn: their
precision is a floor; the control arm's, with an experiment on, is the model's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from features.state import DAY_US, from_us

CONFIRM_DAYS = 30
CONFIRM_US = CONFIRM_DAYS * DAY_US
HISTORY_DAYS = 180  # an alert record is kept this long after its alert (`churn-worker uplift --ledger`)
STATS_KEEP_DAYS = 400  # daily counters: more than a year of live precision
RECORD_PREFIX = "#alert#"  # sort key of an alert record: #alert#<window start µs>#<TYPE>#<arm>
STATS_PREFIX = "#stats#"  # partition key of a day's counters: #stats#<YYYY-MM-DD>
OUTCOME_SHARD_PREFIX = "o"  # open records in the ledger's sparse `pending` index: shards o00..o03
ARMS = ("treatment", "control")


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    EXPIRED = "expired"


@dataclass(frozen=True)
class RecordKey:
    """What an alert record's sort key says: its window, type and arm (enough to count it)."""

    window_us: int
    alert_type: str
    arm: str

    def sort_key(self) -> str:
        return f"{RECORD_PREFIX}{self.window_us:017d}#{self.alert_type}#{self.arm}"

    @classmethod
    def parse(cls, sort_key: str) -> RecordKey | None:
        if not sort_key.startswith(RECORD_PREFIX):
            return None
        window, _, rest = sort_key[len(RECORD_PREFIX) :].partition("#")
        alert_type, _, arm = rest.partition("#")
        if not window.isdigit() or not alert_type or arm not in ARMS:
            return None
        return cls(int(window), alert_type, arm)


def record_sort_key_bound(us: int) -> str:
    """A sort key below or above every record of the same microsecond: for range queries."""
    return f"{RECORD_PREFIX}{max(us, 0):017d}"


@dataclass(frozen=True)
class Resolution:
    """One alert record given its outcome now (`was`: EXPIRED when a late churn turned it over)."""

    customer_id: str
    alert_type: str
    arm: str
    as_of_us: int
    outcome: Outcome
    was: Outcome | None = None


def is_confirmed(as_of_us: int, churned_us: int) -> bool:
    """The churn came within 30 days after the alert (and not before it)."""
    return as_of_us < churned_us <= as_of_us + CONFIRM_US


def deadline_us(as_of_us: int) -> int:
    """When an alert without churn expires."""
    return as_of_us + CONFIRM_US


def day_of(us: int) -> str:
    return from_us(us).strftime("%Y-%m-%d")


def days_between(since: date, until: date) -> list[str]:
    return [(since + timedelta(days=i)).isoformat() for i in range((until - since).days + 1)]


@dataclass
class Counts:
    confirmed: int = 0
    expired: int = 0
    open: int = 0
    # The lifecycle (worker.alerts.lifecycle), counted on the alert's day like its outcome:
    # escalations, resolutions, and the seconds from opening to resolution they took in all.
    escalated: int = 0
    resolved: int = 0
    resolve_seconds: float = 0.0

    @property
    def alerts(self) -> int:
        return self.confirmed + self.expired + self.open

    @property
    def precision(self) -> float | None:
        resolved = self.confirmed + self.expired
        return round(self.confirmed / resolved, 4) if resolved else None

    @property
    def hours_to_resolve(self) -> float | None:
        """Mean time from opening to resolution of the resolved alerts."""
        return round(self.resolve_seconds / self.resolved / 3600, 2) if self.resolved else None

    def add(self, other: Counts) -> None:
        self.confirmed += other.confirmed
        self.expired += other.expired
        self.open += other.open
        self.escalated += other.escalated
        self.resolved += other.resolved
        self.resolve_seconds += other.resolve_seconds

    def as_json(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "confirmed": self.confirmed,
            "expired": self.expired,
            "open": self.open,
            "precision": self.precision,
        }

    def lifecycle_json(self) -> dict[str, Any]:
        return {
            "alerts": self.alerts,
            "escalated": self.escalated,
            "resolved": self.resolved,
            "mean_hours_to_resolve": self.hours_to_resolve,
        }


@dataclass
class BudgetDay:
    """One budget's UTC day: alerts it let out (both arms), its cap, and the alerts it deferred."""

    sent: int = 0
    max_per_day: int | None = None
    deferred: dict[str, int] = field(default_factory=dict)  # alert type -> deferred alerts

    @property
    def deferred_total(self) -> int:
        return sum(self.deferred.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "max_per_day": self.max_per_day,
            "deferred": self.deferred_total,
            "deferred_by_type": dict(sorted(self.deferred.items())),
        }


@dataclass
class OutcomeStats:
    """Counts per (alert day, type, arm) over `since` .. `until` (UTC days of the alerts' `as_of`)."""

    since: date
    until: date
    cells: dict[tuple[str, str, str], Counts] = field(default_factory=dict)
    budgets: dict[tuple[str, str], BudgetDay] = field(default_factory=dict)  # (day, budget name)

    def add(
        self,
        day: str,
        alert_type: str,
        arm: str,
        *,
        confirmed: int = 0,
        expired: int = 0,
        open_: int = 0,
        escalated: int = 0,
        resolved: int = 0,
        resolve_seconds: float = 0.0,
    ) -> None:
        if not self.since.isoformat() <= day <= self.until.isoformat():
            return
        self.cells.setdefault((day, alert_type, arm), Counts()).add(
            Counts(confirmed, expired, open_, escalated, resolved, resolve_seconds)
        )

    def add_budget(
        self,
        day: str,
        name: str,
        *,
        sent: int = 0,
        max_per_day: int | None = None,
        alert_type: str | None = None,
        deferred: int = 0,
    ) -> None:
        if not self.since.isoformat() <= day <= self.until.isoformat():
            return
        cell = self.budgets.setdefault((day, name), BudgetDay())
        cell.sent += sent
        if max_per_day is not None:
            cell.max_per_day = max_per_day
        if alert_type is not None and deferred:
            cell.deferred[alert_type] = cell.deferred.get(alert_type, 0) + deferred

    def by_budget(self) -> dict[str, BudgetDay]:
        """Per budget over every day: sent and deferred totals (max_per_day: the latest day's)."""
        out: dict[str, BudgetDay] = {}
        for (_, name), cell in sorted(self.budgets.items()):
            total = out.setdefault(name, BudgetDay())
            total.sent += cell.sent
            total.max_per_day = cell.max_per_day if cell.max_per_day is not None else total.max_per_day
            for alert_type, count in cell.deferred.items():
                total.deferred[alert_type] = total.deferred.get(alert_type, 0) + count
        return out

    def days_at_cap(self, name: str) -> int:
        return sum(
            1
            for (_, n), cell in self.budgets.items()
            if n == name and cell.max_per_day is not None and cell.sent >= cell.max_per_day
        )

    def by_type(self, arm: str | None = None, resolved_before: date | None = None) -> dict[str, Counts]:
        """Totals per type (all arms, or one), over every day or only days before `resolved_before`."""
        out: dict[str, Counts] = {}
        for (day, alert_type, cell_arm), counts in sorted(self.cells.items()):
            if (arm is None or cell_arm == arm) and (
                resolved_before is None or day < resolved_before.isoformat()
            ):
                out.setdefault(alert_type, Counts()).add(counts)
        return out

    @property
    def arms(self) -> set[str]:
        return {arm for _, _, arm in self.cells}

    def as_json(self, today: date) -> dict[str, Any]:
        settled = settled_before(today)
        report: dict[str, Any] = {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "settled_before": settled.isoformat(),
            "confirm_days": CONFIRM_DAYS,
            "by_type": {t: c.as_json() for t, c in self.by_type().items()},
            "settled_by_type": {t: c.as_json() for t, c in self.by_type(resolved_before=settled).items()},
        }
        if "control" in self.arms:
            report["by_arm"] = {
                arm: {t: c.as_json() for t, c in self.by_type(arm, settled).items()} for arm in ARMS
            }
        report["lifecycle_by_type"] = {t: c.lifecycle_json() for t, c in self.by_type().items()}
        if self.budgets:
            report["budgets"] = {
                name: {**cell.as_json(), "days_at_cap": self.days_at_cap(name)}
                for name, cell in self.by_budget().items()
            }
            report["budget_days"] = {
                f"{day}/{name}": cell.as_json() for (day, name), cell in sorted(self.budgets.items())
            }
        return report


def settled_before(today: date) -> date:
    """Alerts of days before this one have all had their 30 days: every outcome is known."""
    return today - timedelta(days=CONFIRM_DAYS + 1)


def live_precision(stats: OutcomeStats, today: date) -> dict[str, float]:
    """Per type, confirmed / resolved over the settled alert days of `stats` (the worker's gauge)."""
    return {
        t: p
        for t, c in stats.by_type(resolved_before=settled_before(today)).items()
        if (p := c.precision) is not None
    }


def precision_window(today: date, days: int = CONFIRM_DAYS) -> tuple[date, date]:
    """The alert days the live-precision gauge covers: the `days` settled days before today."""
    until = settled_before(today) - timedelta(days=1)
    return until - timedelta(days=days - 1), until


def format_stats(stats: OutcomeStats, today: date) -> str:
    """`churn-worker alerts stats` for people."""
    settled = settled_before(today)
    head = f"{'alert type':<22} {'alerts':>7} {'confirmed':>9} {'expired':>8} {'open':>6} {'precision':>9}"

    def rows(by_type: dict[str, Counts]) -> Iterable[str]:
        total = Counts()
        for alert_type, c in by_type.items():
            total.add(c)
            yield (
                f"{alert_type:<22} {c.alerts:>7} {c.confirmed:>9} {c.expired:>8} {c.open:>6} "
                f"{_pct(c.precision):>9}"
            )
        yield (
            f"{'ALL':<22} {total.alerts:>7} {total.confirmed:>9} {total.expired:>8} {total.open:>6} "
            f"{_pct(total.precision):>9}"
        )

    lines = [
        f"alerts of {stats.since} .. {stats.until} (UTC days of their as_of), outcomes as of {today}",
        "",
        head,
        "-" * len(head),
        *rows(stats.by_type()),
    ]
    if stats.since < settled:
        lines += [
            "",
            f"settled: alerts before {settled}, every outcome known (live precision)",
            head,
            "-" * len(head),
            *rows(stats.by_type(resolved_before=settled)),
        ]
    if "control" in stats.arms:
        for arm in ARMS:
            lines += [
                "",
                f"{arm} arm, settled days",
                head,
                "-" * len(head),
                *rows(stats.by_type(arm, settled)),
            ]
        lines.append(
            "treatment alerts got interventions (some churn prevented): the control arm's precision is "
            "the model's own"
        )
    lifecycle = stats.by_type()
    if any(c.escalated or c.resolved for c in lifecycle.values()):
        head2 = (
            f"{'alert type':<22} {'alerts':>7} {'escalated':>9} {'resolved':>8} {'mean hours to resolve':>22}"
        )
        lines += ["", "lifecycle: escalations and resolutions of these alerts", head2, "-" * len(head2)]
        for alert_type, c in lifecycle.items():
            hours = "n/a" if c.hours_to_resolve is None else f"{c.hours_to_resolve:.1f}"
            lines.append(f"{alert_type:<22} {c.alerts:>7} {c.escalated:>9} {c.resolved:>8} {hours:>22}")
    if stats.budgets:
        head3 = (
            f"{'budget':<22} {'max/day':>7} {'sent':>7} {'deferred':>8} {'days at cap':>11}  deferred by type"
        )
        lines += ["", "capacity budgets (UTC days of the claims)", head3, "-" * len(head3)]
        for name, cell in stats.by_budget().items():
            by_type = ", ".join(f"{t} {n}" for t, n in sorted(cell.deferred.items())) or "-"
            cap = "?" if cell.max_per_day is None else str(cell.max_per_day)
            lines.append(
                f"{name:<22} {cap:>7} {cell.sent:>7} {cell.deferred_total:>8} {stats.days_at_cap(name):>11}  {by_type}"
            )
        lines.append(
            "deferred: qualified while the budget was spent; not sent, considered again the next day"
        )
    lines.append(
        f"\nconfirmed: churned within {CONFIRM_DAYS} days after the alert; expired: {CONFIRM_DAYS} days "
        "without churn; open: neither yet. Recent days' precision leans high (expiries come last)."
    )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def rank_open(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most at risk first: churn probability (unknown last), then expected value, then the customer."""

    def key(body: dict[str, Any]) -> tuple[float, float, str, str]:
        probability = body.get("churn_probability")
        value = (body.get("budget") or {}).get("expected_value") or 0.0
        return (
            -(float(probability) if probability is not None else -1.0),
            -float(value),
            str(body["customer_id"]),
            str(body["type"]),
        )

    return sorted(bodies, key=key)
