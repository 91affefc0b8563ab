"""Live calibration (jobs/monitoring/calibration.py) settles a row only once its horizon has passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from jobs.monitoring.calibration import calibrate
from jobs.monitoring.served import ServedRow

DAY0 = datetime(2026, 11, 1, tzinfo=UTC)


def row(customer: str, day: int, p: float) -> ServedRow:
    outputs = {"churn_risk_14d": p, "churn_risk_30d": p}
    return ServedRow(customer, DAY0 + timedelta(days=day), "v1", "h", np.zeros(3), outputs)


def test_a_row_counts_once_its_horizon_has_passed_churned_or_not() -> None:
    rows = [
        row("early", 0, 0.5),
        row("early-stayer", 0, 0.5),
        row("late", 20, 0.5),
        row("late-stayer", 20, 0.5),
    ]
    # the archive reaches day 35: day 0's 30 days have passed, day 20's have not, though "late"
    # churned on day 25 (kept, it would read as a churner among no stayers)
    churns = {"early": [DAY0 + timedelta(days=10)], "late": [DAY0 + timedelta(days=25)]}
    by_head = {h.head: h for h in calibrate(rows, churns, DAY0 + timedelta(days=35))}
    head30 = by_head["churn_risk_30d"]
    assert (head30.settled, head30.unsettled) == (2, 2)
    assert head30.ece == 0.0  # 0.5 predicted, one churner of two
    head14 = by_head["churn_risk_14d"]  # day 20 + 14 = day 34 has passed: all four settle
    assert (head14.settled, head14.unsettled) == (4, 0)
    assert head14.ece == 0.0  # "late" churned on day 25, inside its 14 days
