"""Alert thresholds, cooldowns and on/off switches: `[alerts.<type>]` in the config file.

Every number the seed's `route_alerts` hard-codes lives here with the seed's value as its default,
and the seed's comparison kept (">=" for call counts, strict "<" / ">" elsewhere; each field's
description says which). Unknown keys fail fast (`extra="forbid"`), so a typo in the file is an
error naming the key rather than a silently ignored threshold. Environment variables override the
file: `CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D=3`, `CHURN_ALERTS__FIRST_SESSION_RISK__ENABLED=false`.

Per segment: `[alerts.<type>.by_tier.<tier>]` overrides any key of the rule for customers of that
tier (`budget`, `standard`, `premium`: the one customer attribute the events carry); the merged
table is validated like the rule itself, so an override that breaks a rule's own constraint is
refused naming the tier. Customers of unknown tier get the rule's own keys.

The lifecycle (`worker.alerts.lifecycle`): each rule may name an escalation threshold beyond its
alert threshold (`escalate_above`, `escalate_below`, `escalate_at_calls_14d`: an open alert is
escalated once when a later scoring crosses it) and `resolve_after_hours` (an open alert resolves
once its condition has been clear that long; such a rule re-fires only on a new crossing after the
resolution, never on cooldown expiry). Both unset (the default): the rule behaves as before, one
alert per cooldown window.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

MAX_COOLDOWN_HOURS = 24 * 365
Tier = Literal["budget", "standard", "premium"]
TIER_NAMES: tuple[str, ...] = ("budget", "standard", "premium")  # features.events.TIERS, in order


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
    resolve_after_hours: float | None = Field(
        default=None,
        gt=0,
        le=MAX_COOLDOWN_HOURS,
        description="an open alert resolves once its condition has been clear this long; unset: never",
    )
    by_tier: dict[Tier, dict[str, Any]] = Field(
        default_factory=dict, description="per-tier overrides of this rule's keys"
    )
    _tiers: dict[str, RuleConfig] = PrivateAttr(default_factory=dict)

    @property
    def cooldown(self) -> timedelta:
        return timedelta(hours=self.cooldown_hours)

    @property
    def resolve_after(self) -> timedelta | None:
        """The lifecycle's clear time, or None: no lifecycle (one alert per cooldown window)."""
        return None if self.resolve_after_hours is None else timedelta(hours=self.resolve_after_hours)

    @property
    def escalation(self) -> float | None:
        """The rule's escalation threshold, whatever its key is called (None: no escalation)."""
        return None

    @model_validator(mode="after")
    def _tier_overrides(self) -> Self:
        """Each `[...by_tier.<tier>]` merged over the rule's own keys, validated as the rule is."""
        for tier, override in self.by_tier.items():
            if "by_tier" in override:
                raise ValueError(f"by_tier.{tier}: a tier's override cannot have tiers of its own")
            try:
                merged = type(self).model_validate({**self.model_dump(exclude={"by_tier"}), **override})
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                raise ValueError(f"by_tier.{tier}{'.' + where if where else ''}: {message}") from None
            self._tiers[tier] = merged
        return self

    def for_tier(self, tier: str | None) -> Self:
        """The rule as it applies to a customer of `tier` (None or an unknown tier: the rule's own)."""
        merged = self._tiers.get(tier or "")
        return merged if isinstance(merged, type(self)) else self


def _escalation_beyond(threshold: float, escalation: float | None, above: bool, key: str) -> None:
    if escalation is None:
        return
    if above and escalation <= threshold:
        raise ValueError(
            f"{key} must be above the alert threshold ({threshold:g}), or every alert is escalated"
        )
    if not above and escalation >= threshold:
        raise ValueError(
            f"{key} must be below the alert threshold ({threshold:g}), or every alert is escalated"
        )


class IbCallSpikeConfig(RuleConfig):
    min_calls_14d: int = Field(default=2, ge=1, le=1000, description="alert when ib_call_count_14d >= this")
    escalate_at_calls_14d: int | None = Field(
        default=None, ge=2, le=1000, description="escalate an open alert when ib_call_count_14d >= this"
    )
    cooldown_hours: float = Field(default=168, gt=0, le=MAX_COOLDOWN_HOURS)

    @property
    def escalation(self) -> float | None:
        return None if self.escalate_at_calls_14d is None else float(self.escalate_at_calls_14d)

    @model_validator(mode="after")
    def _escalates_beyond(self) -> Self:
        _escalation_beyond(self.min_calls_14d, self.escalate_at_calls_14d, True, "escalate_at_calls_14d")
        return self


class HighChurnRiskConfig(RuleConfig):
    min_churn_risk_30d: float = Field(default=0.6, ge=0, lt=1, description="alert when churn_risk_30d > this")
    escalate_above: float | None = Field(
        default=None, gt=0, lt=1, description="escalate an open alert when churn_risk_30d > this"
    )
    cooldown_hours: float = Field(default=72, gt=0, le=MAX_COOLDOWN_HOURS)

    @property
    def escalation(self) -> float | None:
        return self.escalate_above

    @model_validator(mode="after")
    def _escalates_beyond(self) -> Self:
        _escalation_beyond(self.min_churn_risk_30d, self.escalate_above, True, "escalate_above")
        return self


class HealthScoreCriticalConfig(RuleConfig):
    max_health_score: float = Field(
        default=40, gt=0, le=100, description="alert when customer_health_score < this"
    )
    escalate_below: float | None = Field(
        default=None, gt=0, le=100, description="escalate an open alert when customer_health_score < this"
    )
    cooldown_hours: float = Field(default=72, gt=0, le=MAX_COOLDOWN_HOURS)

    @property
    def escalation(self) -> float | None:
        return self.escalate_below

    @model_validator(mode="after")
    def _escalates_beyond(self) -> Self:
        _escalation_beyond(self.max_health_score, self.escalate_below, False, "escalate_below")
        return self


class FirstSessionRiskConfig(RuleConfig):
    max_first_session_success_prob: float = Field(
        default=0.5, gt=0, le=1, description="alert when first_session_success_prob < this"
    )
    only_before_first_session: bool = Field(
        default=True,
        description="skip customers who already had a first session: the prediction is no longer actionable",
    )
    escalate_below: float | None = Field(
        default=None, gt=0, le=1, description="escalate an open alert when first_session_success_prob < this"
    )
    cooldown_hours: float = Field(default=168, gt=0, le=MAX_COOLDOWN_HOURS)

    @property
    def escalation(self) -> float | None:
        return self.escalate_below

    @model_validator(mode="after")
    def _escalates_beyond(self) -> Self:
        _escalation_beyond(self.max_first_session_success_prob, self.escalate_below, False, "escalate_below")
        return self


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
    escalate_below: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="escalate an open alert when predicted_session_velocity < this",
    )
    cooldown_hours: float = Field(default=168, gt=0, le=MAX_COOLDOWN_HOURS)

    @property
    def escalation(self) -> float | None:
        return self.escalate_below

    @model_validator(mode="after")
    def _is_a_drop(self) -> Self:
        if self.max_predicted_velocity >= self.min_session_frequency_30d:
            raise ValueError(
                "max_predicted_velocity must be below min_session_frequency_30d, or the rule fires on no drop"
            )
        _escalation_beyond(self.max_predicted_velocity, self.escalate_below, False, "escalate_below")
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

    def cooldown(self, alert_type: str, tier: str | None = None) -> timedelta:
        return self.rule(alert_type).for_tier(tier).cooldown

    def resolve_after(self, alert_type: str, tier: str | None = None) -> timedelta | None:
        return self.rule(alert_type).for_tier(tier).resolve_after

    @property
    def lifecycle(self) -> bool:
        """Whether any rule (or tier) escalates or resolves: readers of alert logs then see
        escalation and resolution messages beside the alerts."""
        rules = [self.rule(name) for name in type(self).model_fields]
        return any(
            r.escalation is not None or r.resolve_after_hours is not None
            for rule in rules
            for r in (rule, *(rule.for_tier(t) for t in rule.by_tier))
        )
