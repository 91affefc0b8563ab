"""Alert routing: the seed's five rules as pure functions (no I/O, no clock), and the alert itself.

`route_alerts` turns one customer's features and the model's prediction into alerts; whether an
alert is actually sent (cooldowns, churned customers, redeliveries) is the ledger's business
(`worker.alerts.ledger`), publishing is the publisher's (`worker.alerts.publisher`).

When the model endpoint is down (`predictions is None`) only rules that need no model run
(IB_CALL_SPIKE) and their alerts say `"scoring": "rules_only"`, with every model-derived field
(`model_version`, `churn_risk`, `churn_probability`, `score`, `top_risk_factors`, `predictions`)
null. Scored alerts say `"scoring": "model"`. Every alert also says what produced it (`trigger`:
`event`, or `rescore` for a quiet customer scored without one), its experiment `arm` (`treatment`,
or `control` for the holdout of an experiment: `worker.alerts.experiment`) and the `feature_hash`
of the features it was computed from.

What a person acts on (docs/contracts.md, Alerts), beside the seed's fields:
- `status`: `open` for the alert itself; `escalated` and `resolved` for the later messages of the
  same alert (same `alert_id`: `worker.alerts.lifecycle`).
- `changes`, `previous_score_at`, `previous_churn_probability`, `what_changed`: the inputs that
  moved the score most since the customer's previous scoring (`worker.alerts.changes`).
- `budget`: the capacity budget the alert went out under (`worker.alerts.budgets`), or null.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from worker.alerts.config import AlertsConfig
from worker.alerts.exceptions import InvalidPredictionError, MissingFeatureError

TOP_RISK_FACTORS = 3
SUBJECT_COUNT = (
    20  # supply_demand_scores: one per subject, in the order of docs/contracts.md, Customer events
)
# A served model's float32 arithmetic can land a hair outside a bounded output (a sigmoid's
# 1.0000001): that much is clipped into range; anything further is a broken answer for that row.
PROBABILITY_TOLERANCE = 1e-3
HEALTH_TOLERANCE = 0.1
_PROBABILITIES = ("first_session_success_prob", "churn_risk_14d", "churn_risk_30d")


class AlertType(StrEnum):
    IB_CALL_SPIKE = "IB_CALL_SPIKE"
    HIGH_CHURN_RISK = "HIGH_CHURN_RISK"
    HEALTH_SCORE_CRITICAL = "HEALTH_SCORE_CRITICAL"
    FIRST_SESSION_RISK = "FIRST_SESSION_RISK"
    SESSION_VELOCITY_DROP = "SESSION_VELOCITY_DROP"


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"


@dataclass(frozen=True)
class AlertSpec:
    severity: Severity
    recommendation: str
    expected_impact: str | None


# Severities, recommendations and expected impacts exactly as the seed's route_alerts has them.
SPECS: dict[AlertType, AlertSpec] = {
    AlertType.IB_CALL_SPIKE: AlertSpec(
        Severity.CRITICAL, "Assign retention specialist within 24 hours", "Reduce churn probability by 40%"
    ),
    AlertType.HIGH_CHURN_RISK: AlertSpec(
        Severity.HIGH, "Offer discount or free session credit", "Reduce churn by 35%"
    ),
    AlertType.HEALTH_SCORE_CRITICAL: AlertSpec(
        Severity.HIGH, "Proactive outreach + personalized recovery plan", None
    ),
    AlertType.FIRST_SESSION_RISK: AlertSpec(Severity.MEDIUM, "Match with top-rated tutor (>4.5 stars)", None),
    AlertType.SESSION_VELOCITY_DROP: AlertSpec(Severity.MEDIUM, "Send re-engagement email campaign", None),
}


def iso(moment: datetime) -> str:
    """UTC, `Z`-suffixed ISO-8601: the one spelling used in bodies and in alert ids."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class FeatureImportance(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    feature: str = Field(min_length=1)
    importance: float


class Prediction(BaseModel):
    """One instance of the endpoint's response (docs/contracts.md, The model endpoint)."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    first_session_success_prob: float = Field(ge=0, le=1)
    predicted_session_velocity: float  # sessions per week; a linear head, so unbounded
    churn_risk_14d: float = Field(ge=0, le=1)
    churn_risk_30d: float = Field(ge=0, le=1)
    supply_demand_scores: tuple[float, ...] = Field(min_length=SUBJECT_COUNT, max_length=SUBJECT_COUNT)
    customer_health_score: float = Field(ge=0, le=100)
    feature_importance: tuple[FeatureImportance, ...] = ()
    model_version: str | None = None
    feature_hash: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Prediction:
        """Validate a decoded response object; InvalidPredictionError names the first bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "response"
            raise InvalidPredictionError(f"model response: {where}: {error['msg']}") from None

    @classmethod
    def from_endpoint(cls, data: Any) -> Prediction:
        """One row of an endpoint's answer: a bounded value within rounding of its range (a
        probability of 1.0000001, a health score of -0.05) is clipped into it; anything else
        outside the contract raises InvalidPredictionError, for the caller to drop this row only."""
        if isinstance(data, dict):
            data = dict(data)
            for name, low, high, tolerance in (
                *((name, 0.0, 1.0, PROBABILITY_TOLERANCE) for name in _PROBABILITIES),
                ("customer_health_score", 0.0, 100.0, HEALTH_TOLERANCE),
            ):
                value = data.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    if low - tolerance <= value < low:
                        data[name] = low
                    elif high < value <= high + tolerance:
                        data[name] = high
        return cls.from_json(data)

    def top_risk_factors(self, n: int = TOP_RISK_FACTORS) -> list[dict[str, Any]]:
        ranked = sorted(self.feature_importance, key=lambda f: f.importance, reverse=True)[:n]
        return [f.model_dump() for f in ranked]

    def body(self) -> dict[str, Any]:
        """The alert body's `predictions` object."""
        return {
            "first_session_success_prob": self.first_session_success_prob,
            "predicted_session_velocity": self.predicted_session_velocity,
            "churn_risk_14d": self.churn_risk_14d,
            "churn_risk_30d": self.churn_risk_30d,
            "customer_health_score": self.customer_health_score,
            "supply_demand_scores": list(self.supply_demand_scores),
            "feature_importance": [f.model_dump() for f in self.feature_importance],
        }


Scoring = Literal["model", "rules_only"]
Trigger = Literal["event", "rescore"]
Arm = Literal["treatment", "control"]
Status = Literal["open", "escalated", "resolved"]
STATUSES: tuple[Status, ...] = ("open", "escalated", "resolved")


class Change(BaseModel):
    """One input that moved since the customer's previous scoring (`worker.alerts.changes`)."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    feature: str = Field(min_length=1)
    label: str
    previous: float
    current: float
    share: float | None = None  # of the churn-risk movement the changed inputs explain; null: not scored


class BudgetTag(BaseModel):
    """The budget an alert went out under (or was deferred by): `worker.alerts.budgets`."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    name: str
    day: str  # the UTC day whose budget it counts against
    max_per_day: int
    expected_value: float


class Alert(BaseModel):
    """One alert. Its id is fixed by its cooldown window, which the ledger decides (`with_window`);
    until then the window is taken to start at `as_of`. `created_at` is set when it is published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_type: AlertType
    customer_id: str = Field(min_length=1)
    as_of: AwareDatetime
    message: str
    predictions: Prediction | None = None
    model_version: str | None = None
    customer_tier: str | None = None
    window_start: AwareDatetime | None = None
    created_at: AwareDatetime | None = None
    trigger: Trigger = "event"
    arm: Arm = "treatment"
    feature_hash: str | None = None
    # The lifecycle (worker.alerts.lifecycle): this message's status, whether the alert has reached
    # its rule's escalation threshold (at routing: this scoring crossed it; stored: it was escalated
    # or opened beyond it), the last scoring its rule fired at (stored alerts), and when it resolved.
    status: Status = "open"
    escalating: bool = False
    escalation_note: str | None = None
    last_firing_at: AwareDatetime | None = None
    resolved_at: AwareDatetime | None = None
    resolve_after_s: float | None = None  # the claim's lifecycle mode (None: cooldown windows)
    # What changed since the previous scoring (worker.alerts.changes).
    changes: tuple[Change, ...] = ()
    previous_score_at: AwareDatetime | None = None
    previous_churn_probability: float | None = None
    what_changed: str | None = None
    # The budget (worker.alerts.budgets): the expected value routing gave it, the budget it counts against.
    expected_value: float = 0.0
    budget: BudgetTag | None = None

    @property
    def severity(self) -> Severity:
        return SPECS[self.alert_type].severity

    @property
    def scoring(self) -> Scoring:
        return "model" if self.predictions is not None else "rules_only"

    @property
    def alert_id(self) -> str:
        start = self.window_start or self.as_of
        return hashlib.sha256(f"{self.customer_id}|{self.alert_type.value}|{iso(start)}".encode()).hexdigest()

    @property
    def message_id(self) -> str:
        """One per message: the alert id for the alert itself, `<alert_id>:<status>` for its
        escalation and its resolution (what a FIFO topic deduplicates on)."""
        return self.alert_id if self.status == "open" else f"{self.alert_id}:{self.status}"

    def subject(self) -> str:
        """A one-line SNS subject (e-mail subscriptions show it): at most 100 printable ASCII characters."""
        head = f"[{self.severity.value}] {self.alert_type.value} {self.customer_id}"
        if self.status != "open":
            head += f" {self.status}"
        tail = self.what_changed or self.message
        text = f"{head}: {tail}".encode("ascii", "replace").decode()
        text = "".join(c if 32 <= ord(c) < 127 else " " for c in text)
        return text if len(text) <= 100 else text[:97] + "..."

    def with_window(self, start: datetime) -> Alert:
        return self.model_copy(update={"window_start": start.astimezone(UTC)})

    def published_at(self, moment: datetime) -> Alert:
        return self.model_copy(update={"created_at": moment.astimezone(UTC)})

    def attributes(self) -> dict[str, str]:
        """SNS message attributes (all String), for subscription filter policies."""
        return {
            "alert_type": self.alert_type.value,
            "severity": self.severity.value,
            "customer_tier": self.customer_tier or "unknown",
            "arm": self.arm,
        }

    def body(self) -> dict[str, Any]:
        """The published JSON body: the keys of docs/contracts.md, Alerts (with `trigger`, `arm`,
        `feature_hash`) plus `scoring`."""
        spec = SPECS[self.alert_type]
        p = self.predictions
        body: dict[str, Any] = {
            "alert_id": self.alert_id,
            "type": self.alert_type.value,
            "severity": spec.severity.value,
            "customer_id": self.customer_id,
            "created_at": iso(self.created_at) if self.created_at else None,
            "as_of": iso(self.as_of),
            "model_version": (self.model_version or p.model_version) if p else None,
            "message": self.message,
            "recommendation": spec.recommendation,
            "expected_impact": spec.expected_impact,
            "churn_risk": p.churn_risk_14d if p else None,
            "churn_probability": p.churn_risk_30d if p else None,
            "score": p.customer_health_score if p else None,
            "top_risk_factors": p.top_risk_factors() if p else None,
            "predictions": p.body() if p else None,
            "scoring": self.scoring,
            "trigger": self.trigger,
            "arm": self.arm,
            "feature_hash": self.feature_hash,
            "status": self.status,
            "changes": [change.model_dump() for change in self.changes],
            "previous_score_at": iso(self.previous_score_at) if self.previous_score_at else None,
            "previous_churn_probability": self.previous_churn_probability,
            "what_changed": self.what_changed,
            "budget": self.budget.model_dump() if self.budget else None,
            "opened_at": iso(self.window_start or self.as_of),
            "resolved_at": iso(self.resolved_at) if self.resolved_at else None,
        }
        shortened: dict[str, Any] = _float32_text(body)
        return shortened

    @classmethod
    def from_body(cls, body: Mapping[str, Any], window_start: datetime, customer_tier: str | None) -> Alert:
        """The alert a stored body describes (the ledger keeps bodies of unsent claims)."""
        predictions = None
        if body.get("predictions") is not None:
            predictions = Prediction.from_json(
                {**body["predictions"], "model_version": body.get("model_version")}
            )

        def instant(key: str) -> datetime | None:
            value = body.get(key)
            return datetime.fromisoformat(value) if value else None

        budget = body.get("budget")
        alert = cls(
            alert_type=AlertType(body["type"]),
            customer_id=body["customer_id"],
            as_of=datetime.fromisoformat(body["as_of"]),
            message=body["message"],
            predictions=predictions,
            model_version=body.get("model_version"),
            customer_tier=customer_tier,
            window_start=window_start,
            trigger=body.get("trigger", "event"),
            arm=body.get("arm", "treatment"),
            feature_hash=body.get("feature_hash"),
            status=body.get("status") or "open",
            resolved_at=instant("resolved_at"),
            changes=tuple(Change.model_validate(c) for c in body.get("changes") or ()),
            previous_score_at=instant("previous_score_at"),
            previous_churn_probability=body.get("previous_churn_probability"),
            what_changed=body.get("what_changed"),
            expected_value=float(budget["expected_value"]) if budget else 0.0,
            budget=BudgetTag.model_validate(budget) if budget else None,
        )
        if alert.alert_id != body["alert_id"]:
            raise ValueError(f"stored alert {body['alert_id']} does not match its window {iso(window_start)}")
        return alert


@dataclass(frozen=True)
class _Input:
    customer_id: str
    features: Mapping[str, float]
    predictions: Prediction | None
    as_of: datetime
    customer_tier: str | None
    model_version: str | None
    trigger: Trigger = "event"
    feature_hash: str | None = None

    def feature(self, name: str) -> float:
        try:
            return float(self.features[name])
        except KeyError:
            raise MissingFeatureError(
                f"alert rules need feature {name!r}; pass every registry feature by name"
            ) from None

    def alert(self, alert_type: AlertType, message: str, escalation_note: str | None = None) -> Alert:
        return Alert(
            alert_type=alert_type,
            customer_id=self.customer_id,
            as_of=self.as_of,
            message=message,
            predictions=self.predictions,
            model_version=self.model_version if self.predictions is not None else None,
            customer_tier=self.customer_tier,
            trigger=self.trigger,
            feature_hash=self.feature_hash,
            escalating=escalation_note is not None,
            escalation_note=escalation_note,
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _ib_call_spike(x: _Input, config: AlertsConfig) -> Alert | None:
    rule = config.ib_call_spike.for_tier(x.customer_tier)
    calls = x.feature("ib_call_count_14d")
    if calls >= rule.min_calls_14d:
        escalate = rule.escalate_at_calls_14d
        note = f"{_number(calls)} calls in 14 days (escalation at {escalate})"
        return x.alert(
            AlertType.IB_CALL_SPIKE,
            f"Customer has made {_number(calls)} calls in 14 days",
            note if escalate is not None and calls >= escalate else None,
        )
    return None


def _high_churn_risk(x: _Input, p: Prediction, config: AlertsConfig) -> Alert | None:
    rule = config.high_churn_risk.for_tier(x.customer_tier)
    risk, threshold = p.churn_risk_30d, rule.min_churn_risk_30d
    if risk > threshold:
        escalate = rule.escalate_above
        note = f"30-day churn risk is {risk:.0%} (escalation above {escalate:.0%})" if escalate else None
        return x.alert(
            AlertType.HIGH_CHURN_RISK,
            f"30-day churn risk is {risk:.0%} (above {threshold:.0%})",
            note if escalate is not None and risk > escalate else None,
        )
    return None


def _health_score_critical(x: _Input, p: Prediction, config: AlertsConfig) -> Alert | None:
    rule = config.health_score_critical.for_tier(x.customer_tier)
    score, threshold = p.customer_health_score, rule.max_health_score
    if score < threshold:
        escalate = rule.escalate_below
        note = f"health score is {score:.0f}/100 (escalation below {escalate:g})" if escalate else None
        return x.alert(
            AlertType.HEALTH_SCORE_CRITICAL,
            f"Customer health score is {score:.0f}/100 (below {threshold:g})",
            note if escalate is not None and score < escalate else None,
        )
    return None


def _first_session_risk(x: _Input, p: Prediction, config: AlertsConfig) -> Alert | None:
    rule = config.first_session_risk.for_tier(x.customer_tier)
    prob = p.first_session_success_prob
    if prob >= rule.max_first_session_success_prob:
        return None
    if rule.only_before_first_session and x.feature("has_first_session") > 0:
        return None  # the first session already happened: nothing left to act on
    escalate = rule.escalate_below
    note = (
        f"first session success probability is {prob:.0%} (escalation below {escalate:.0%})"
        if escalate
        else None
    )
    return x.alert(
        AlertType.FIRST_SESSION_RISK,
        f"First session success probability is {prob:.0%} (below {rule.max_first_session_success_prob:.0%})",
        note if escalate is not None and prob < escalate else None,
    )


def _session_velocity_drop(x: _Input, p: Prediction, config: AlertsConfig) -> Alert | None:
    rule = config.session_velocity_drop.for_tier(x.customer_tier)
    velocity = p.predicted_session_velocity
    if velocity >= rule.max_predicted_velocity:
        return None
    if x.feature("session_frequency_30d") > rule.min_session_frequency_30d:
        escalate = rule.escalate_below
        note = (
            f"predicted {velocity:.2g} sessions a week (escalation below {escalate:g})" if escalate else None
        )
        return x.alert(
            AlertType.SESSION_VELOCITY_DROP,
            f"Session frequency dropped {rule.min_drop_percent}%+",
            note if escalate is not None and velocity < escalate else None,
        )
    return None


RuleOnly = Callable[[_Input, AlertsConfig], "Alert | None"]
ModelRule = Callable[[_Input, Prediction, AlertsConfig], "Alert | None"]

# In the seed's order. Rules that need no model also run when the endpoint is down.
RULES_WITHOUT_MODEL: tuple[tuple[AlertType, RuleOnly], ...] = ((AlertType.IB_CALL_SPIKE, _ib_call_spike),)
RULES_WITH_MODEL: tuple[tuple[AlertType, ModelRule], ...] = (
    (AlertType.HIGH_CHURN_RISK, _high_churn_risk),
    (AlertType.HEALTH_SCORE_CRITICAL, _health_score_critical),
    (AlertType.FIRST_SESSION_RISK, _first_session_risk),
    (AlertType.SESSION_VELOCITY_DROP, _session_velocity_drop),
)


def route_alerts(
    customer_id: str,
    features: Mapping[str, float],
    predictions: Prediction | None,
    config: AlertsConfig,
    as_of: datetime,
    customer_tier: str | None = None,
    model_version: str | None = None,
    *,
    trigger: Trigger = "event",
    feature_hash: str | None = None,
) -> list[Alert]:
    """The alerts one customer's features and prediction call for, in the seed's order.

    `features` by registry name (`dict(zip(FEATURE_NAMES, vector))`); `predictions` None when the
    endpoint could not score (only IB_CALL_SPIKE can fire then); `as_of` the instant the features
    are computed at; `model_version` overrides the prediction's own; `trigger` and `feature_hash`
    are copied into the alerts.
    """
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    x = _Input(
        customer_id,
        features,
        predictions,
        as_of.astimezone(UTC),
        customer_tier,
        model_version,
        trigger,
        feature_hash,
    )

    def enabled(alert_type: AlertType) -> bool:
        return config.rule(alert_type).for_tier(customer_tier).enabled

    alerts: list[Alert | None] = [
        rule(x, config) for alert_type, rule in RULES_WITHOUT_MODEL if enabled(alert_type)
    ]
    if predictions is not None:
        alerts += [
            rule(x, predictions, config) for alert_type, rule in RULES_WITH_MODEL if enabled(alert_type)
        ]
    return [alert for alert in alerts if alert is not None]


_FLOAT32 = struct.Struct("f")


def _as_float32(value: float) -> float:
    return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])


@functools.lru_cache(maxsize=8192)  # an alert's body is built several times (claim, publish, record)
def _shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32 as `value`: 0.7001177, not the 0.7001177072525024
    a float32 reads as in float64. The model's outputs are float32, so nothing of them is lost (the
    inputs' values in `changes` keep 7 significant digits), and the body (published, and kept in the
    claim item) is several hundred bytes shorter. A value beyond float32's range stays as it is."""
    if value != value or value in (float("inf"), float("-inf")):
        return value
    try:
        single = _as_float32(value)
    except OverflowError:
        return value
    if single in (float("inf"), float("-inf")):
        return value
    for digits in (6, 7, 8):
        text = f"{single:.{digits}g}"
        if _as_float32(float(text)) == single:
            return float(text)
    return float(f"{single:.9g}")  # 9 significant digits name every float32


def _float32_text(value: Any) -> Any:
    """`value` with every float in it (dict values, list items) at float32 precision."""
    if type(value) is float:
        return _shortest_float32(value)
    if type(value) is dict:
        return {key: _float32_text(item) for key, item in value.items()}
    if type(value) is list:
        return [_float32_text(item) for item in value]
    return value
