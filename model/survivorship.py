"""Survivor history: the part of a log in which nobody could have churned, and the labels it would fake.

A log often starts with the history of the customers who were still customers when it was
exported (or when the event pipeline was switched on): their sign-ups, sessions and payments go
back months, but nobody who churned in those months is in it, because only survivors were exported.
Every churn label of an instant in that stretch is 0, and the health label's "stayed 30 days" is 1,
not because those customers were safe but because they were selected for having stayed. A model
trained on those rows learns "young customers never churn" (the simulator's existing customers
are exactly this: a year of pre-log history, 60,000 labelled instants, not one churner), and on
customers who are young now it ranks worst exactly where it is most sure: gradient boosting fitted
with those rows ranked a later cohort's 30-day churners at AUC 0.63, without them at 0.89
(docs/model.md, "Survivor history").

The stretch is recognised from the labels alone: the instants before the first one whose 30-day
label is positive (`first`), when that many labelled instants without a single churner would be
wildly unlikely at the churn rate the rest of the log shows (`MIN_EXPECTED` churners expected, none
seen; a log whose first churner simply comes early is left alone). The churn and health labels of
instants before `first + 30 days` are then censored (NaN): from `first` on the log records churn,
and an instant's 30-day window that starts earlier still reaches back into the unrecorded stretch.
The other labels (first session, velocity, supply/demand) do not depend on who left, and stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.state import DAY_US

HORIZON_DAYS = 30
MIN_EXPECTED = 20.0  # churners the quiet stretch would hold at the later rate: P(none) = e^-20
MIN_DAYS = 30  # a quiet stretch shorter than one horizon is ordinary noise, not selection
SURVIVOR_LABELS = ("churn_risk_14d", "churn_risk_30d", "health_score")


@dataclass(frozen=True)
class SurvivorHistory:
    until_us: int  # instants before this have their churn and health labels censored
    quiet_rows: int  # labelled instants before the first churner's window, all negative
    expected_churners: float  # how many of them would have churned at the later rate
    later_rate: float
    masked_rows: int

    def describe(self) -> dict[str, Any]:
        from features.state import from_us

        return {
            "until": from_us(self.until_us).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quiet_labelled_instants": self.quiet_rows,
            "expected_churners_at_later_rate": round(self.expected_churners, 1),
            "later_30d_rate": round(self.later_rate, 4),
            "censored_instants": self.masked_rows,
        }

    def warning(self) -> str:
        described = self.describe()
        return (
            f"survivor history: the log's {self.quiet_rows:,} labelled instants before "
            f"{described['until'][:10]} hold no churner, where the rest of it churns at "
            f"{self.later_rate:.1%} in 30 days ({self.expected_churners:,.0f} expected): the customers "
            "in that stretch were selected for staying (an export of current customers' history); "
            f"their churn and health labels are left out ({self.masked_rows:,} instants)"
        )


def find_survivor_history(t_us: np.ndarray, churn_30d: np.ndarray, end_us: int) -> SurvivorHistory | None:
    """The survivor stretch of a log's instants and 30-day labels (NaN: censored), or None. `end_us`:
    the latest event of the data. Only instants whose whole horizon lies inside the data count: a
    later one is labelled only when its customer churned (features/labels.py), which would make the
    end of any log look like a churn rate of 100 %."""
    labelled = ~np.isnan(churn_30d) & (t_us + HORIZON_DAYS * DAY_US <= end_us)
    positive = labelled & (churn_30d > 0.5)
    if not positive.any():
        return None
    first = int(t_us[positive].min())
    quiet = labelled & (t_us < first)
    later = labelled & (t_us >= first)
    if not quiet.any() or not later.any():
        return None
    span_days = (first - int(t_us[quiet].min())) / DAY_US
    later_rate = float(churn_30d[later].mean())
    quiet_rows = int(quiet.sum())
    expected = quiet_rows * later_rate
    if expected < MIN_EXPECTED or span_days < MIN_DAYS:
        return None
    until = first + HORIZON_DAYS * DAY_US
    return SurvivorHistory(until, quiet_rows, expected, later_rate, int((t_us < until).sum()))


def censor_survivor_history(
    t_us: np.ndarray, labels: dict[str, np.ndarray], end_us: int
) -> SurvivorHistory | None:
    """Find the survivor stretch and censor its churn and health labels in place; what was found."""
    found = find_survivor_history(t_us, np.asarray(labels["churn_risk_30d"], np.float64), end_us)
    if found is None:
        return None
    rows = t_us < found.until_us
    for name in SURVIVOR_LABELS:
        if name in labels:
            values = labels[name]
            values[rows] = np.nan
    return found
