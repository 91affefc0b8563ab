"""The seed's five alert rules at and around their thresholds, the alert body and the alert id."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import InvalidPredictionError, MissingFeatureError
from worker.alerts.rules import Alert, AlertType, Prediction, Severity, route_alerts

AS_OF = datetime(2026, 11, 27, 11, 59, 58, tzinfo=UTC)
DEFAULTS = AlertsConfig()

BODY_KEYS = [
    "alert_id",
    "type",
    "severity",
    "customer_id",
    "created_at",
    "as_of",
    "model_version",
    "message",
    "recommendation",
    "expected_impact",
    "churn_risk",
    "churn_probability",
    "score",
    "top_risk_factors",
    "predictions",
    "scoring",
    "trigger",
    "arm",
    "feature_hash",
    # grown on purpose (docs/contracts.md, Alerts): the lifecycle, what changed, the budget
    "status",
    "changes",
    "previous_score_at",
    "previous_churn_probability",
    "what_changed",
    "budget",
    "opened_at",
    "resolved_at",
]
PREDICTION_KEYS = {
    "first_session_success_prob",
    "predicted_session_velocity",
    "churn_risk_14d",
    "churn_risk_30d",
    "customer_health_score",
    "supply_demand_scores",
    "feature_importance",
}


def features(**overrides: float) -> dict[str, float]:
    """A quiet customer who already had a first session; override what a test is about."""
    return {"ib_call_count_14d": 0.0, "session_frequency_30d": 1.5, "has_first_session": 1.0, **overrides}


def response(**overrides: Any) -> dict[str, Any]:
    """A healthy customer's endpoint response (CONTRACTS.md section 3)."""
    return {
        "first_session_success_prob": 0.9,
        "predicted_session_velocity": 2.5,
        "churn_risk_14d": 0.1,
        "churn_risk_30d": 0.2,
        "supply_demand_scores": [0.1 * i for i in range(20)],
        "customer_health_score": 80.0,
        "feature_importance": [
            {"feature": "days_since_last_session", "importance": 0.2},
            {"feature": "ib_call_count_14d", "importance": 0.45},
            {"feature": "payment_success_rate_30d", "importance": 0.05},
            {"feature": "avg_rating_7d", "importance": 0.3},
        ],
        "model_version": "2026-11-27-ab12cd",
        "feature_hash": "f" * 64,
        **overrides,
    }


def prediction(**overrides: Any) -> Prediction:
    return Prediction.from_json(response(**overrides))


def route(
    feats: dict[str, float], pred: Prediction | None, config: AlertsConfig = DEFAULTS, **kwargs: Any
) -> list[Alert]:
    return route_alerts("c-123", feats, pred, config, AS_OF, **kwargs)


def types(alerts: list[Alert]) -> list[AlertType]:
    return [alert.alert_type for alert in alerts]


def config_with(rule: str, **values: Any) -> AlertsConfig:
    return AlertsConfig.model_validate({rule: values})


def test_a_healthy_customer_gets_no_alert() -> None:
    assert route(features(), prediction()) == []


@pytest.mark.parametrize(("calls", "fires"), [(0, False), (1, False), (2, True), (3, True)])
def test_ib_call_spike_at_two_calls_in_fourteen_days(calls: int, fires: bool) -> None:
    alerts = route(features(ib_call_count_14d=calls), prediction())
    assert types(alerts) == ([AlertType.IB_CALL_SPIKE] if fires else [])
    if fires:
        assert alerts[0].severity is Severity.CRITICAL
        assert alerts[0].message == f"Customer has made {calls} calls in 14 days"
        assert alerts[0].body()["churn_risk"] == 0.1  # the seed's churn_risk: the 14-day head


def test_ib_call_spike_threshold_comes_from_config() -> None:
    config = config_with("ib_call_spike", min_calls_14d=3)
    assert route(features(ib_call_count_14d=2), prediction(), config) == []
    assert types(route(features(ib_call_count_14d=3), prediction(), config)) == [AlertType.IB_CALL_SPIKE]


@pytest.mark.parametrize(("risk", "fires"), [(0.59, False), (0.6, False), (0.6001, True), (0.82, True)])
def test_high_churn_risk_above_sixty_percent(risk: float, fires: bool) -> None:
    alerts = route(features(), prediction(churn_risk_30d=risk))
    assert types(alerts) == ([AlertType.HIGH_CHURN_RISK] if fires else [])
    if fires:
        body = alerts[0].body()
        assert body["severity"] == "HIGH"
        assert body["churn_probability"] == risk
        assert body["message"] == f"30-day churn risk is {risk:.0%} (above 60%)"


@pytest.mark.parametrize(("score", "fires"), [(40.01, False), (40.0, False), (39.99, True), (0.0, True)])
def test_health_score_critical_below_forty(score: float, fires: bool) -> None:
    alerts = route(features(), prediction(customer_health_score=score))
    assert types(alerts) == ([AlertType.HEALTH_SCORE_CRITICAL] if fires else [])
    if fires:
        assert alerts[0].severity is Severity.HIGH
        assert alerts[0].body()["score"] == score


@pytest.mark.parametrize(("prob", "fires"), [(0.51, False), (0.5, False), (0.49, True)])
def test_first_session_risk_below_half_before_the_first_session(prob: float, fires: bool) -> None:
    alerts = route(features(has_first_session=0), prediction(first_session_success_prob=prob))
    assert types(alerts) == ([AlertType.FIRST_SESSION_RISK] if fires else [])
    if fires:
        assert alerts[0].severity is Severity.MEDIUM
        assert alerts[0].message == "First session success probability is 49% (below 50%)"


def test_first_session_risk_is_not_actionable_after_the_first_session() -> None:
    pred = prediction(first_session_success_prob=0.2)
    assert route(features(has_first_session=1), pred) == []
    config = config_with("first_session_risk", only_before_first_session=False)
    assert types(route(features(has_first_session=1), pred, config)) == [AlertType.FIRST_SESSION_RISK]


@pytest.mark.parametrize(
    ("velocity", "frequency", "fires"),
    [(0.99, 2.01, True), (1.0, 2.01, False), (0.99, 2.0, False), (0.0, 5.0, True), (1.5, 5.0, False)],
)
def test_session_velocity_drop(velocity: float, frequency: float, fires: bool) -> None:
    alerts = route(features(session_frequency_30d=frequency), prediction(predicted_session_velocity=velocity))
    assert types(alerts) == ([AlertType.SESSION_VELOCITY_DROP] if fires else [])
    if fires:
        assert alerts[0].message == "Session frequency dropped 50%+"


def test_session_velocity_drop_message_follows_its_thresholds() -> None:
    config = config_with("session_velocity_drop", max_predicted_velocity=1.0, min_session_frequency_30d=4.0)
    alerts = route(features(session_frequency_30d=4.5), prediction(predicted_session_velocity=0.5), config)
    assert [a.message for a in alerts] == ["Session frequency dropped 75%+"]


def everything() -> tuple[dict[str, float], Prediction]:
    return (
        features(ib_call_count_14d=2, session_frequency_30d=3.0, has_first_session=0),
        prediction(
            churn_risk_30d=0.82,
            customer_health_score=12.0,
            first_session_success_prob=0.3,
            predicted_session_velocity=0.4,
        ),
    )


def test_all_five_in_the_seed_order_with_its_recommendations() -> None:
    alerts = route(*everything())
    seed = [
        (
            "IB_CALL_SPIKE",
            "CRITICAL",
            "Assign retention specialist within 24 hours",
            "Reduce churn probability by 40%",
        ),
        ("HIGH_CHURN_RISK", "HIGH", "Offer discount or free session credit", "Reduce churn by 35%"),
        ("HEALTH_SCORE_CRITICAL", "HIGH", "Proactive outreach + personalized recovery plan", None),
        ("FIRST_SESSION_RISK", "MEDIUM", "Match with top-rated tutor (>4.5 stars)", None),
        ("SESSION_VELOCITY_DROP", "MEDIUM", "Send re-engagement email campaign", None),
    ]
    got = [
        (b["type"], b["severity"], b["recommendation"], b["expected_impact"])
        for b in (a.body() for a in alerts)
    ]
    assert got == seed


@pytest.mark.parametrize("alert_type", list(AlertType))
def test_a_disabled_rule_never_fires(alert_type: AlertType) -> None:
    config = config_with(alert_type.value.lower(), enabled=False)
    alerts = route(*everything(), config=config)
    assert types(alerts) == [t for t in AlertType if t is not alert_type]


def test_without_a_model_only_the_call_rule_runs_and_says_so() -> None:
    feats, _ = everything()
    alerts = route(feats, None, model_version="2026-11-27-ab12cd")
    assert types(alerts) == [AlertType.IB_CALL_SPIKE]
    body = alerts[0].body()
    assert body["scoring"] == "rules_only"
    for key in (
        "model_version",
        "churn_risk",
        "churn_probability",
        "score",
        "top_risk_factors",
        "predictions",
    ):
        assert body[key] is None, key
    assert body["message"] == "Customer has made 2 calls in 14 days"


def test_body_has_exactly_the_contract_keys() -> None:
    for alert in route(*everything(), customer_tier="premium"):
        body = alert.body()
        assert list(body) == BODY_KEYS
        assert set(body["predictions"]) == PREDICTION_KEYS
        assert body["scoring"] == "model"
        assert body["customer_id"] == "c-123"
        assert body["as_of"] == "2026-11-27T11:59:58Z"
        assert body["created_at"] is None  # stamped when published
        assert body["model_version"] == "2026-11-27-ab12cd"
        assert body["churn_risk"] == 0.1 and body["churn_probability"] == 0.82 and body["score"] == 12.0
        assert len(body["predictions"]["supply_demand_scores"]) == 20


def test_top_risk_factors_are_the_three_most_important_real_features() -> None:
    body = route(features(), prediction(churn_risk_30d=0.9))[0].body()
    assert body["top_risk_factors"] == [
        {"feature": "ib_call_count_14d", "importance": 0.45},
        {"feature": "avg_rating_7d", "importance": 0.3},
        {"feature": "days_since_last_session", "importance": 0.2},
    ]
    assert len(body["predictions"]["feature_importance"]) == 4


def test_model_version_argument_wins_over_the_response() -> None:
    alert = route(features(), prediction(churn_risk_30d=0.9), model_version="v-override")[0]
    assert alert.body()["model_version"] == "v-override"


def test_alert_id_is_sha256_of_customer_type_and_window_start() -> None:
    first = route(features(ib_call_count_14d=2), None)[0]
    again = route(features(ib_call_count_14d=2), None)[0]
    window = datetime(2026, 11, 27, 12, tzinfo=UTC)
    stamped = first.with_window(window)
    expected = hashlib.sha256(b"c-123|IB_CALL_SPIKE|2026-11-27T12:00:00Z").hexdigest()
    assert stamped.alert_id == expected == again.with_window(window).alert_id
    assert stamped.body()["alert_id"] == expected
    assert stamped.with_window(window + timedelta(hours=1)).alert_id != expected
    # Same window, other facts (a later as_of, another prediction): the same alert.
    later = route_alerts(
        "c-123", features(ib_call_count_14d=5), prediction(), DEFAULTS, AS_OF + timedelta(hours=3)
    )[0]
    assert later.with_window(window).alert_id == expected


def test_sns_attributes_name_type_severity_tier_and_arm() -> None:
    alert = route(features(ib_call_count_14d=2), None, customer_tier="premium")[0]
    assert alert.attributes() == {
        "alert_type": "IB_CALL_SPIKE",
        "severity": "CRITICAL",
        "customer_tier": "premium",
        "arm": "treatment",
    }
    assert route(features(ib_call_count_14d=2), None)[0].attributes()["customer_tier"] == "unknown"


def test_body_round_trips_through_storage() -> None:
    window = datetime(2026, 11, 27, 12, tzinfo=UTC)
    for alert in route(*everything(), customer_tier="budget"):
        stamped = alert.with_window(window)
        again = Alert.from_body(stamped.body(), window, "budget")
        assert again.body() == stamped.body()
        assert again.alert_id == stamped.alert_id


def test_published_at_sets_created_at() -> None:
    alert = route(features(ib_call_count_14d=2), None)[0]
    published = alert.published_at(datetime(2026, 11, 27, 13, 0, 1, tzinfo=UTC))
    assert published.body()["created_at"] == "2026-11-27T13:00:01Z"
    assert published.alert_id == alert.alert_id


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"churn_risk_30d": 1.2}, "churn_risk_30d"),
        ({"customer_health_score": 101}, "customer_health_score"),
        ({"supply_demand_scores": [0.0] * 19}, "supply_demand_scores"),
        ({"first_session_success_prob": "high"}, "first_session_success_prob"),
        ({"feature_importance": [{"importance": 0.1}]}, "feature_importance.0.feature"),
        ({"predicted_session_velocity": float("nan")}, "predicted_session_velocity"),
    ],
)
def test_prediction_from_json_names_the_bad_field(change: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidPredictionError, match=names.replace(".", r"\.")):
        Prediction.from_json(response(**change))


def test_prediction_from_json_needs_every_head_and_ignores_extras() -> None:
    data = response(extra_field=1)
    assert Prediction.from_json(data).model_version == "2026-11-27-ab12cd"
    del data["churn_risk_14d"]
    with pytest.raises(InvalidPredictionError, match="churn_risk_14d"):
        Prediction.from_json(data)
    with pytest.raises(InvalidPredictionError):
        Prediction.from_json([1, 2, 3])


def test_a_missing_feature_is_an_error_naming_it() -> None:
    with pytest.raises(MissingFeatureError, match="ib_call_count_14d"):
        route({"session_frequency_30d": 1.0, "has_first_session": 1.0}, prediction())


def test_as_of_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        route_alerts("c-1", features(), None, DEFAULTS, datetime(2026, 11, 27, 12))


def test_alerts_say_what_triggered_them_their_arm_and_feature_hash() -> None:
    feats, pred = everything()
    for alert in route(feats, pred, trigger="rescore", feature_hash="abc123"):
        body = alert.body()
        assert (body["trigger"], body["arm"], body["feature_hash"]) == ("rescore", "treatment", "abc123")
        stored = Alert.from_body(body, alert.as_of, None)
        assert stored.body() == body  # the ledger's stored copy re-publishes the same fields
    assert route(feats, pred)[0].body()["trigger"] == "event"


@pytest.mark.parametrize(
    ("field", "sent", "kept"),
    [
        ("churn_risk_30d", 1.0000001, 1.0),
        ("churn_risk_14d", -1e-7, 0.0),
        ("customer_health_score", 100.05, 100.0),
        ("first_session_success_prob", 0.5, 0.5),
    ],
)
def test_an_endpoint_answer_a_rounding_error_outside_its_range_is_clipped(
    field: str, sent: float, kept: float
) -> None:
    answer = {**prediction().model_dump(), field: sent}
    assert getattr(Prediction.from_endpoint(answer), field) == kept


@pytest.mark.parametrize(
    ("field", "sent"),
    [("churn_risk_30d", 1.5), ("customer_health_score", 140.0), ("churn_risk_14d", float("nan"))],
)
def test_an_endpoint_answer_outside_the_contract_is_refused(field: str, sent: float) -> None:
    with pytest.raises(InvalidPredictionError, match=field):
        Prediction.from_endpoint({**prediction().model_dump(), field: sent})
