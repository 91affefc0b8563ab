"""The A/B holdout's assignment and the uplift analysis: known effects recovered, censoring, power."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.uplift import DAY_US, AlertRow, format_uplift, pairs_for_power, uplift
from worker.alerts.experiment import CONTROL, TREATMENT, ExperimentConfig, assign_arm


def test_no_experiment_means_every_alert_is_treatment() -> None:
    assert {assign_arm(f"c-{i}", "HIGH_CHURN_RISK", ExperimentConfig()) for i in range(100)} == {TREATMENT}


def test_assignment_is_stable_per_pair_near_the_fraction_and_new_with_a_new_salt() -> None:
    half = ExperimentConfig(control_fraction=0.5, salt="a")
    arms = [assign_arm(f"c-{i}", "IB_CALL_SPIKE", half) for i in range(10_000)]
    assert arms == [assign_arm(f"c-{i}", "IB_CALL_SPIKE", half) for i in range(10_000)]
    assert 0.48 < arms.count(CONTROL) / len(arms) < 0.52
    other = [
        assign_arm(f"c-{i}", "IB_CALL_SPIKE", ExperimentConfig(control_fraction=0.5, salt="b"))
        for i in range(10_000)
    ]
    agreement = np.mean([a == b for a, b in zip(arms, other, strict=True)])
    assert 0.45 < agreement < 0.55  # independent of the first split


def _experiment(
    rng: np.random.Generator, n: int, control_rate: float, effect: float
) -> tuple[list[AlertRow], dict[str, int]]:
    """n alerted customers, half in control; churn within 30 days at control_rate, minus effect if treated."""
    rows, churned = [], {}
    for i in range(n):
        arm = CONTROL if i % 2 else TREATMENT
        rate = control_rate - (effect if arm == TREATMENT else 0.0)
        rows.append(AlertRow(f"c-{i}", "HIGH_CHURN_RISK", 10 * DAY_US, arm))
        if rng.random() < rate:
            churned[f"c-{i}"] = 10 * DAY_US + int(rng.integers(1, 30)) * DAY_US
    return rows, churned


def test_a_known_treatment_effect_is_recovered_within_its_confidence_interval() -> None:
    rng = np.random.default_rng(5)
    rows, churned = _experiment(rng, 8_000, control_rate=0.40, effect=0.10)
    report = uplift(rows, churned, end_us=100 * DAY_US)
    s = report["by_type"]["HIGH_CHURN_RISK"]
    assert s["ci_low"] <= -0.10 <= s["ci_high"]
    assert s["ci_high"] < 0 and s["p_value"] < 0.001  # clearly churn prevented
    assert "HIGH_CHURN_RISK" in format_uplift(report)


def test_the_interval_covers_the_truth_about_95_times_in_100() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        rows, churned = _experiment(rng, 600, control_rate=0.30, effect=0.05)
        s = uplift(rows, churned, end_us=100 * DAY_US)["by_type"]["ALL"]
        covered += s["ci_low"] <= -0.05 <= s["ci_high"]
    assert 0.90 <= covered / 200 <= 0.99


def test_pairs_whose_horizon_passes_the_end_of_the_data_are_censored_not_stayed() -> None:
    rows = [
        AlertRow("a", "IB_CALL_SPIKE", 10 * DAY_US, TREATMENT),
        AlertRow("b", "IB_CALL_SPIKE", 90 * DAY_US, CONTROL),
        AlertRow("c", "IB_CALL_SPIKE", 90 * DAY_US, CONTROL),
        AlertRow("a", "IB_CALL_SPIKE", 50 * DAY_US, TREATMENT),
        AlertRow("d", "IB_CALL_SPIKE", 20 * DAY_US, CONTROL),
    ]
    # "c" churned before the end, but its horizon is not over: censored like "b", whose stayers
    # cannot be known yet (counting "c" alone would read the data's last 30 days as all churn)
    churned = {"c": 95 * DAY_US, "d": 40 * DAY_US}
    s = uplift(rows, churned, end_us=100 * DAY_US)["by_type"]["IB_CALL_SPIKE"]
    assert s["treatment"] == {
        "pairs": 1,
        "churned": 0,
        "churn_rate": 0.0,
    }  # "a" counts once, from its first alert
    assert s["control"] == {"pairs": 1, "churned": 1, "churn_rate": 1.0}
    assert s["censored"] == 2 and s["small_sample"]


@pytest.mark.parametrize(("p1", "effect", "expected"), [(0.5, 0.1, 388), (0.2, 0.05, 906)])
def test_pairs_for_power_matches_the_textbook_formula(p1: float, effect: float, expected: int) -> None:
    assert abs(pairs_for_power(p1, effect) - expected) <= 3  # type: ignore[operator]
    assert pairs_for_power(0.0, 0.1) is None


def test_shadow_precision_reads_settled_alerts_only_and_recall_every_churner() -> None:
    from jobs.shadow_compare import compare

    # "a": alerted on day 10, churned on day 20 (settled, confirmed); "b": day 80, churned on day
    # 90, before the end but inside its 30 days (censored for precision, caught for recall); "c":
    # day 85, no churn so far (censored, not counted false)
    rows = [
        AlertRow("a", "HIGH_CHURN_RISK", 10 * DAY_US, TREATMENT),
        AlertRow("b", "HIGH_CHURN_RISK", 80 * DAY_US, TREATMENT),
        AlertRow("c", "HIGH_CHURN_RISK", 85 * DAY_US, TREATMENT),
    ]
    churned = {"a": 20 * DAY_US, "b": 90 * DAY_US}
    side = compare(rows, rows, churned, end_us=100 * DAY_US)["by_type"]["HIGH_CHURN_RISK"]["shadow"]
    assert side["precision"] == 1.0 and side["recall"] == 1.0 and side["customers_confirmed"] == 1
