"""Alert thresholds from the settings file and the environment: seed defaults, fail-fast validation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.alerts.config import AlertsConfig
from worker.exceptions import ConfigError
from worker.settings import load_settings


def write(tmp_path: Path, text: str, name: str = "churn.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_seed_thresholds() -> None:
    config = load_settings(None).alerts
    assert config == AlertsConfig()
    assert config.ib_call_spike.min_calls_14d == 2
    assert config.high_churn_risk.min_churn_risk_30d == 0.6
    assert config.health_score_critical.max_health_score == 40
    assert config.first_session_risk.max_first_session_success_prob == 0.5
    assert config.first_session_risk.only_before_first_session is True
    assert config.session_velocity_drop.max_predicted_velocity == 1.0
    assert config.session_velocity_drop.min_session_frequency_30d == 2.0
    hours = {name: getattr(config, name).cooldown_hours for name in type(config).model_fields}
    assert hours == {
        "ib_call_spike": 168,
        "high_churn_risk": 72,
        "health_score_critical": 72,
        "first_session_risk": 168,
        "session_velocity_drop": 168,
    }
    assert all(getattr(config, name).enabled for name in hours)


def test_file_sets_thresholds_cooldowns_and_switches(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[alerts.ib_call_spike]\nmin_calls_14d = 3\ncooldown_hours = 24\n"
        "[alerts.first_session_risk]\nenabled = false\n",
    )
    config = load_settings(path).alerts
    assert config.ib_call_spike.min_calls_14d == 3
    assert config.cooldown("IB_CALL_SPIKE") == timedelta(hours=24)
    assert config.rule("first_session_risk").enabled is False
    assert config.high_churn_risk == AlertsConfig().high_churn_risk  # untouched tables keep defaults


def test_yaml_file_too(tmp_path: Path) -> None:
    path = write(tmp_path, "alerts:\n  health_score_critical:\n    max_health_score: 30\n", "churn.yaml")
    assert load_settings(path).alerts.health_score_critical.max_health_score == 30


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "[alerts.ib_call_spike]\nmin_calls_14d = 5\n[alerts.high_churn_risk]\nmin_churn_risk_30d = 0.7\n",
    )
    monkeypatch.setenv("CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D", "3")
    monkeypatch.setenv("CHURN_ALERTS__SESSION_VELOCITY_DROP__ENABLED", "false")
    config = load_settings(path).alerts
    assert config.ib_call_spike.min_calls_14d == 3
    assert config.high_churn_risk.min_churn_risk_30d == 0.7  # the file's, merged with the environment's
    assert config.session_velocity_drop.enabled is False


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[alerts.ib_call_spike]\nmin_calls_14d = 0",
            r"alerts\.ib_call_spike\.min_calls_14d: .*greater than or equal to 1",
        ),
        (
            "[alerts.high_churn_risk]\nmin_churn_risk_30d = 1.0",
            r"alerts\.high_churn_risk\.min_churn_risk_30d: .*less than 1",
        ),
        (
            "[alerts.health_score_critical]\nmax_health_score = 120",
            r"alerts\.health_score_critical\.max_health_score",
        ),
        (
            "[alerts.first_session_risk]\ncooldown_hours = 0",
            r"alerts\.first_session_risk\.cooldown_hours: .*greater than 0",
        ),
        ("[alerts.first_session_risk]\nenabled = 'sometimes'", r"alerts\.first_session_risk\.enabled"),
        (
            "[alerts.ib_call_spike]\nmin_calls = 3",
            r"alerts\.ib_call_spike\.min_calls: Extra inputs are not permitted",
        ),
        (
            "[alerts.ib_call_spikes]\nmin_calls_14d = 3",
            r"alerts\.ib_call_spikes: Extra inputs are not permitted",
        ),
        (
            "[alerts.session_velocity_drop]\nmax_predicted_velocity = 2.5",
            r"alerts\.session_velocity_drop: .*max_predicted_velocity must be below min_session_frequency_30d",
        ),
    ],
)
def test_an_invalid_file_fails_fast_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_an_invalid_environment_variable_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D", "-1")
    with pytest.raises(ConfigError, match=r"alerts\.ib_call_spike\.min_calls_14d"):
        load_settings(None)


def test_config_is_frozen() -> None:
    config = AlertsConfig()
    with pytest.raises(ValidationError):
        config.ib_call_spike.min_calls_14d = 5  # type: ignore[misc]


def test_rule_lookup_by_alert_type() -> None:
    config = AlertsConfig()
    assert config.rule("HIGH_CHURN_RISK") is config.high_churn_risk
    assert config.cooldown("SESSION_VELOCITY_DROP") == timedelta(days=7)
    with pytest.raises(KeyError):
        config.rule("NOPE")
