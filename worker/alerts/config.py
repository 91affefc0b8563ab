"""Alert thresholds, cooldowns and on/off switches: `[alerts.<type>]` in the config file.

Every number the seed's `route_alerts` hard-codes lives here with the seed's value as its default,
and the seed's comparison kept (">=" for call counts, strict "<" / ">" elsewhere; each field's
description says which). Unknown keys fail fast (`extra="forbid"`), so a typo in the file is an
error naming the key rather than a silently ignored threshold. Environment variables override the
file: `CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D=3`, `CHURN_ALERTS__FIRST_SESSION_RISK__ENABLED=false`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_COOLDOWN_HOURS = 24 * 365


class RuleConfig(BaseModel):
    """What every rule has: an on/off switch and a cooldown (one alert per customer per window)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    cooldown_hours: float = Field(
        default=168,
        gt=0,
        le=MAX_COOLDOWN_HOURS,
        description="at most one alert of this type per customer per window",
    )

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)


class IbCallSpikeConfig(RuleConfig):
    min_calls_14d: int = Field(default=2, ge=1, le=1000, description="alert when ib_call_count_14d >= this")
    cooldown_hours: float = Field(default=168, gt=0, le=MAX_COOLDOWN_HOURS)


class HighChurnRiskConfig(RuleConfig):
    min_churn_risk_30d: float = Field(default=0.6, ge=0, lt=1, description="alert when churn_risk_30d > this")
    cooldown_hours: float = Field(default=72, gt=0, le=MAX_COOLDOWN_HOURS)


class HealthScoreCriticalConfig(RuleConfig):
    max_health_score: float = Field(
        default=40, gt=0, le=100, description="alert when customer_health_score < this"
    )
    cooldown_hours: float = Field(default=72, gt=0, le=MAX_COOLDOWN_HOURS)


class FirstSessionRiskConfig(RuleConfig):
    max_first_session_success_prob: float = Field(
        default=0.5, gt=0, le=1, description="alert when first_session_success_prob < this"
    )
    only_before_first_session: bool = Field(
        default=True,
        description="skip customers who already had a first session: the prediction is no longer actionable",
    )
    cooldown_hours: float = Field(default=168, gt=0, le=MAX_COOLDOWN_HOURS)


class SessionVelocityDropConfig(RuleConfig):
    max_predicted_velocity: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="sessions per week; alert when predicted_session_velocity < this",
    )
    min_session_frequency_30d: float = Field(
        default=2.0, gt=0, le=100, description="sessions per week; ... and session_frequency_30d > this"
    )
    cooldown_hours: float = Field(default=168, gt=0, le=MAX_COOLDOWN_HOURS)

    @model_validator(mode="after")
    def _is_a_drop(self) -> Self:
        if self.max_predicted_velocity >= self.min_session_frequency_30d:
            raise ValueError(
                "max_predicted_velocity must be below min_session_frequency_30d, or the rule fires on no drop"
            )
        return self

    @property
    def min_drop_percent(self) -> int:
        """The drop every alert of this rule implies: the seed's 1.0 vs 2.0 sessions/week is "50%+"."""
        return int((1 - self.max_predicted_velocity / self.min_session_frequency_30d) * 100 + 1e-9)


class AlertsConfig(BaseModel):
    """The five seed rules, each under its own table: `[alerts.ib_call_spike]`, ..."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ib_call_spike: IbCallSpikeConfig = IbCallSpikeConfig()
    high_churn_risk: HighChurnRiskConfig = HighChurnRiskConfig()
    health_score_critical: HealthScoreCriticalConfig = HealthScoreCriticalConfig()
    first_session_risk: FirstSessionRiskConfig = FirstSessionRiskConfig()
    session_velocity_drop: SessionVelocityDropConfig = SessionVelocityDropConfig()

    def rule(self, alert_type: str) -> RuleConfig:
        """The settings of one alert type, by its name (`IB_CALL_SPIKE`) or its table (`ib_call_spike`)."""
        rule = getattr(self, alert_type.lower(), None)
        if not isinstance(rule, RuleConfig):
            raise KeyError(f"no alert type {alert_type!r}")
        return rule

    def cooldown(self, alert_type: str) -> timedelta:
        return self.rule(alert_type).cooldown
