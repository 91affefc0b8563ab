"""Report maths on hand-made cases: precision, recall, false positives, lead time, volume, AUC."""

from __future__ import annotations

import numpy as np
import pytest

from features.churn_outcomes import NEVER
from features.state import DAY_US
from jobs.backtest.metrics import Population, alert_stats, model_stats, seed_targets
from model.metrics import auc_roc, calibration

START = 1_800_000_000_000_000 // DAY_US * DAY_US  # a UTC midnight


def day(n: float) -> int:
    return START + int(n * DAY_US)


# c0 churns on day 20, c1 on day 70, c2 and c3 never; 28 days of events
POP = Population(["c0", "c1", "c2", "c3"], np.array([day(20), day(70), NEVER, NEVER]), START, day(28))


def test_alert_stats_by_hand() -> None:
    # c0: alerted on days 2 and 5 (both within 30 days of its churn); c1: day 10 (60 days early);
    # c2: day 3, never churns; 100 days of events, so every alert's 30 days lie inside them
    pop = Population(POP.customers, POP.churn_us, START, day(100))
    stats = alert_stats(np.array([0, 0, 1, 2]), np.array([day(2), day(5), day(10), day(3)]), pop)
    assert stats["alerts"] == 4 and stats["customers_alerted"] == 3 and stats["alerts_settled"] == 4
    assert stats["customers_confirmed"] == 1
    assert stats["precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert stats["recall"] == 0.5  # c0 of the two churners
    assert stats["false_positive_rate"] == 0.5  # c2 of c2, c3
    assert stats["median_lead_time_days"] == 18.0  # first confirmed alert day 2, churn day 20
    assert (
        stats["false_alert_share"] == 0.5
    )  # c1's (60 days early) and c2's alerts were not followed by churn
    assert stats["alerts_per_1000_customers_per_week"] == pytest.approx(4 / (4 * 100 / 7) * 1000, rel=1e-3)


def test_alerts_of_the_last_30_days_are_censored_in_precision_churned_or_not() -> None:
    # 40 days of events. c0 alerted on day 2, churns on day 20: settled, confirmed. c1 alerted on
    # day 25, churns on day 35: confirmed, but its 30 days end after the data, where a stayer could
    # not have been told from a churner yet: left out of precision and the false share (counting it
    # would read the data's last 30 days as hits only). c3 alerted on day 20, never churns (so far):
    # unknown, left out too, not counted false.
    pop = Population(["c0", "c1", "c2", "c3"], np.array([day(20), day(35), NEVER, NEVER]), START, day(40))
    stats = alert_stats(np.array([0, 1, 3]), np.array([day(2), day(25), day(20)]), pop)
    assert stats["alerts"] == 3 and stats["customers_alerted"] == 3 and stats["alerts_settled"] == 1
    assert stats["precision"] == 1.0 and stats["false_alert_share"] == 0.0
    assert stats["recall"] == 1.0  # both churners had an alert within 30 days: known, nothing censored
    assert stats["customers_confirmed"] == 2 and stats["median_lead_time_days"] == 14.0
    nothing_settled = alert_stats(np.array([3]), np.array([day(20)]), pop)
    assert nothing_settled["precision"] is None and nothing_settled["false_alert_share"] is None


def test_no_alerts_and_no_outcomes() -> None:
    empty = alert_stats(np.zeros(0, np.int64), np.zeros(0, np.int64), POP)
    assert empty["precision"] is None and empty["recall"] == 0.0 and empty["median_lead_time_days"] is None
    assert empty["false_alert_share"] is None
    counts_only = alert_stats(np.array([1]), np.array([day(1)]), POP, with_outcomes=False)
    assert set(counts_only) == {"alerts", "customers_alerted", "alerts_per_1000_customers_per_week"}


def test_auc_matches_the_rank_definition_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.random(500) < 0.3
    score = np.round(rng.random(500) + y * 0.3, 1)  # rounded: plenty of ties
    assert auc_roc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-4)
    assert auc_roc(np.ones(3, bool), np.arange(3.0)) is None


def test_calibration_of_a_perfect_and_a_wrong_forecast() -> None:
    y = np.array([0, 0, 1, 1.0])
    assert calibration(y, y)["brier"] == 0.0
    assert calibration(y, 1 - y)["ece"] == 1.0


def test_model_labels_leave_out_unknown_futures() -> None:
    # c0 scored on day -5 (churns on day 20, within 30 days: positive) and on day 1 (churns within
    # 30 days too, but the horizon ends on day 31, after the events end on day 28: left out like a
    # stayer's would be, or the data's last 30 days would hold churners only); c2 on day 1 (horizon
    # past the end, no churn: unknown, left out) and on day -5 (negative)
    columns = {
        "customer": np.array([0, 0, 2, 2]),
        "t_us": np.array([day(-5), day(1), day(1), day(-5)]),
        "churn_risk_14d": np.array([0.9, 0.9, 0.2, 0.1]),
        "churn_risk_30d": np.array([0.9, 0.9, 0.2, 0.1]),
        "customer_health_score": np.array([10.0, 10.0, 80.0, 90.0]),
    }
    stats = model_stats(columns, POP, None)
    assert stats["churn_30d"]["examples"] == 2 and stats["churn_30d"]["auc_roc"] == 1.0
    assert stats["churn_30d"]["churn_rate"] == 0.5
    # at 14 days all four are known and negative (c0 churns 25 and 19 days after): no AUC
    assert stats["churn_14d"]["examples"] == 4 and stats["churn_14d"]["auc_roc"] is None
    assert stats["health_mae"] is None and "n/a" in stats["health_mae_note"]
    targets = seed_targets(
        {
            "IB_CALL_SPIKE": {
                "precision": 0.8,
                "recall": 0.5,
                "false_positive_rate": 0.2,
                "false_alert_share": 0.1,
            }
        },
        stats,
    )
    assert [(t["metric"], t["pass"]) for t in targets] == [
        ("ib_call_spike_precision", True),
        ("ib_call_spike_recall", False),
        ("critical_alert_false_positive_rate", False),
        ("critical_alert_false_share", True),
        ("churn_auc_roc_14d", None),
        ("churn_auc_roc_30d", True),
        ("health_score_mae", None),
    ]


def test_volume_counts_each_customer_only_while_they_are_there() -> None:
    from jobs.backtest.metrics import customer_weeks

    # c0 from day 0 to its churn on day 20, c1 from day 14 to the end (day 28), c2 never scored
    weeks = customer_weeks(np.array([day(0), day(14), day(28)]), np.array([day(20), NEVER, NEVER]), day(28))
    assert weeks == pytest.approx((20 + 14) / 7)
    pop = Population(POP.customers, POP.churn_us, START, day(28), customer_weeks=weeks)
    stats = alert_stats(np.array([0, 1]), np.array([day(2), day(15)]), pop)
    assert stats["alerts_per_1000_customers_per_week"] == pytest.approx(2 / (weeks / 1000), rel=1e-3)


def test_a_customer_who_churned_and_came_back_counts_at_the_first_churn() -> None:
    from features.churn_outcomes import ChurnTimes

    # c3 churned on day 12 and signed up again: the outcomes file says null, the log has the event
    times = ChurnTimes({"c0": [day(20)], "c1": [day(70)], "c3": [day(12)]})
    pop = Population(POP.customers, POP.churn_us, START, day(50), churn_times=times)  # alerts settled
    assert (
        pop.churners == 3 and pop.non_churners == 1
    )  # c0, c1 (after the data) and c3 churned; only c2 never did
    stats = alert_stats(np.array([3, 3]), np.array([day(2), day(15)]), pop)
    assert stats["customers_confirmed"] == 1 and stats["precision"] == 1.0
    assert stats["false_alert_share"] == 0.5  # the day-15 alert came after the churn, before nothing
    from jobs.backtest.metrics import churn_labels

    y, known = churn_labels(pop, np.array([3, 3]), np.array([day(1), day(13)]), 14)
    assert y.tolist() == [True, False] and known.tolist() == [True, True]


def test_the_summary_table_says_how_many_customers_precision_was_read_on() -> None:
    from jobs.backtest.report import format_summary

    pop = Population(["c0", "c1", "c2", "c3"], np.array([day(20), day(35), NEVER, NEVER]), START, day(40))
    stats = alert_stats(np.array([0, 1, 3]), np.array([day(2), day(25), day(20)]), pop)
    text = format_summary({"alerts": {"by_type": {"HIGH_CHURN_RISK": stats}}, "targets": []})
    header, _, row = text.splitlines()[:3]
    assert "judged" in header and row.split()[:5] == ["HIGH_CHURN_RISK", "3", "3", "131.25", "1"]
    assert "judged: customers with a settled alert" in text
