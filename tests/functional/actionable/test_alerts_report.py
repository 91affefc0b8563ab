"""`churn-worker alerts report` against the ledger it reads, after a month of the live pipeline and
sweeper on moto: a budget that defers, an escalation, resolutions, a churn that confirms an alert,
expiries, and fresh alerts whose "what changed" lines the page lists.

What must hold: every count and precision on the page is the ledger's (`alerts stats` reads the same
counters), the change lines are the open alerts' own, and the file stands alone (no script, no
network, no external reference).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.worker import main
from tests.fakes import Clock
from tests.functional.actionable.alert_workers import (
    DAY,
    ONLY_CALLS,
    T0,
    MakeWorker,
    at,
    calls,
    customer,
)
from worker.alerts.budgets import BudgetsConfig, next_day_start

CONFIG = """\
[budgets.callcenter]
types = ["IB_CALL_SPIKE"]
max_per_day = 2

[alerts.ib_call_spike]
escalate_at_calls_14d = 3
resolve_after_hours = 24

[alerts.high_churn_risk]
enabled = false
[alerts.health_score_critical]
enabled = false
[alerts.first_session_risk]
enabled = false
[alerts.session_velocity_drop]
enabled = false
"""
BUDGETS = BudgetsConfig({"callcenter": {"types": ["IB_CALL_SPIKE"], "max_per_day": 2}})
LIFECYCLE = ONLY_CALLS.model_copy(
    update={
        "ib_call_spike": ONLY_CALLS.ib_call_spike.model_validate(
            {"escalate_at_calls_14d": 3, "resolve_after_hours": 24}
        )
    }
)


def cells(page: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after `heading`, as text."""
    section = page.split(f"<h2>{html.escape(heading)}</h2>", 1)[1]
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


async def test_the_report_shows_what_the_ledger_holds(
    make_worker: MakeWorker,
    unique_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = Clock(T0)
    worker = await make_worker(clock, alerts=LIFECYCLE, budgets=BUDGETS)
    flow = worker.pipeline
    await flow.process(
        [r for i in range(4) for r in customer(f"c-{i}", T0 - timedelta(hours=2), 10.0 * (i + 1))]
    )
    clock.advance(timedelta(hours=1))
    await flow.process(
        [r for i in range(4) for r in calls(f"c-{i}", clock(), 2)]
    )  # c-2, c-3 out; c-0, c-1 wait
    clock.advance(timedelta(hours=1))
    await flow.process(calls("c-3", clock(), 1, first=20))  # escalated
    clock.now = next_day_start(T0) + timedelta(minutes=1)
    while await worker.rescorer.step():  # the deferred two go out the next day
        pass
    for day in (1, 2):
        clock.now = T0 + day * DAY + timedelta(hours=6)
        await worker.rescorer.step()
    clock.now = T0 + 3 * DAY
    await flow.process([at("c-2", "customer_churned", clock() - timedelta(minutes=1), 40)])  # confirms c-2's
    for day in range(3, 32):  # the quiet customers' alerts resolve once their calls are 14 days old
        clock.now = T0 + day * DAY
        await worker.rescorer.step()
    await flow.expire_alert_outcomes(clock(), 500)  # 30 days without churn: expired
    # Fresh alerts at the end of the month: open, with what changed since the previous scoring.
    await flow.process(
        [r for i in range(4, 6) for r in customer(f"c-{i}", clock() - timedelta(hours=2), 50.0)]
    )
    clock.advance(timedelta(hours=1))
    await flow.process([r for i in range(4, 6) for r in calls(f"c-{i}", clock(), 2)])

    since, until = T0.date(), clock().date()
    stats = await worker.ledger.outcome_stats(since, until)
    spike = stats.by_type()["IB_CALL_SPIKE"]
    assert (spike.alerts, spike.confirmed, spike.expired, spike.open) == (6, 1, 3, 2)
    assert (spike.escalated, spike.resolved) == (1, 3)

    config = tmp_path / "churn.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("CHURN_TABLE_PREFIX", unique_prefix)
    out = tmp_path / "report.html"
    capsys.readouterr()  # the workers' log lines
    args = ["alerts", "report", "--config", str(config), "--since", str(since), "--until", str(until)]
    assert await asyncio.to_thread(main, [*args, "--out", str(out), "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    page = out.read_text()

    # Counts, precision and time to resolution: the ledger's.
    (row,) = cells(page, "Alerts by type: open, resolved, precision")
    assert row[:5] == [
        "IB_CALL_SPIKE",
        "6",
        "3",
        "1",
        "3",
    ]  # alerts, open (not resolved), escalated, resolved
    assert row[6:] == ["1", "3", "25%"]
    assert float(row[5]) == pytest.approx(spike.hours_to_resolve, abs=0.05)  # shown to 4 digits
    assert data["by_type"]["IB_CALL_SPIKE"]["precision"] == spike.precision == 0.25
    (budget,) = cells(page, "Budgets: sent and deferred")
    by_budget = stats.by_budget()["callcenter"]
    assert budget[:7] == [
        "callcenter",
        "IB_CALL_SPIKE",
        "all",
        "2",
        str(by_budget.sent),
        "2",
        "3",
    ]  # 3 days at cap
    assert by_budget.sent == 6 and by_budget.deferred_total == 2
    for day, counts in data["per_day"].items():
        total = sum(c.alerts for (d, _, _), c in stats.cells.items() if d == day)
        assert counts["alerts"] == total

    # The customers most at risk: the open alerts, with their own change lines.
    open_bodies = await worker.ledger.open_alerts(since, until, 25)
    assert {b["customer_id"] for b in open_bodies} == {"c-4", "c-5"}
    listed = cells(page, "Customers most at risk (open alerts) and what changed")
    assert [r[0] for r in listed] == [b["customer_id"] for b in open_bodies]
    for listed_row, body in zip(listed, open_bodies, strict=True):
        assert body["what_changed"].startswith("churn risk 25% -> 65% since ")
        assert listed_row[4] == body["what_changed"]
    deferred = cells(page, "Deferred alerts (most valuable first): considered again the next day")
    assert [(r[0], r[1]) for r in deferred] == [("2026-11-27", "c-1"), ("2026-11-27", "c-0")]

    # One file, nothing fetched.
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and page.count("<svg") >= 4
