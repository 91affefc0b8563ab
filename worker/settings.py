"""The settings, read once at the entry point: the only module that reads `CHURN_*` variables.

`Settings` is the worker's (docs/contracts.md, Configuration). Lowest to highest: defaults, a TOML
or YAML file (`--config FILE` or `CHURN_CONFIG`), environment variables `CHURN_*` (nested with
`__`, e.g. `CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D=3`). `ModelSettings` holds the few `CHURN_*`
variables the model commands read (the bundle cache, the retrain task's defaults). AWS access uses
the standard chain (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL[_<SERVICE>]`): botocore reads
those itself, `plumbing.awsenv` what it does not, so no keys ever live here.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from plumbing.awsenv import aws_endpoint_url, aws_region
from worker import faultpoints
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig
from worker.exceptions import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHURN_", env_nested_delimiter="__", frozen=True, extra="forbid", case_sensitive=False
    )

    source: Literal["sqs", "kinesis"] = "sqs"
    sqs_queue_url: str | None = None
    kinesis_stream: str | None = None
    dlq_url: str | None = None
    table_prefix: str = Field("churn-", pattern=r"^[A-Za-z0-9_.-]{0,200}$")
    alerts_topic_arn: str | None = None
    endpoint_name: str = "churn-health"
    retention_days: int = Field(35, ge=31, le=365, description="events older than this are rejected")
    alerts: AlertsConfig = AlertsConfig()  # [alerts.<type>] tables; CHURN_ALERTS__<TYPE>__<KEY>

    # Runtime knobs (defaults suit ECS; the local stack and tests shorten the waits).
    sqs_pollers: int = Field(4, ge=1, le=64, description="concurrent long-polling receivers")
    sqs_wait_seconds: int = Field(20, ge=0, le=20, description="SQS long-poll wait")
    sqs_visibility_timeout: int = Field(
        60, ge=5, le=43200, description="seconds a received batch stays hidden"
    )
    sqs_max_receive_count: int = Field(50, ge=5, description="redrive to the DLQ after this many deliveries")
    kinesis_start_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    kinesis_start_timestamp: str | None = None
    kinesis_shards: int = Field(4, ge=1, description="shard count when bootstrap creates the stream")
    kinesis_lease_seconds: float = Field(
        10.0, gt=0, description="a shard lease not renewed for this long may be taken"
    )
    kinesis_poll_seconds: float = Field(1.0, gt=0, description="wait between empty GetRecords on a shard")
    worker_id: str | None = Field(None, description="lease owner name (default: host name + process id)")
    health_host: str = Field(
        "127.0.0.1", description="0.0.0.0 to let Prometheus scrape from outside the task"
    )
    health_port: int = Field(
        8081, ge=0, le=65535, description="HTTP /healthz, /readyz, /metrics; 0 = any free port"
    )
    emf_interval_seconds: float = Field(
        0, ge=0, description="seconds between CloudWatch EMF metric lines on stdout (worker/emf.py); 0 = off"
    )
    shutdown_grace_seconds: float = Field(25.0, gt=0, le=120, description="finish in-flight work within this")
    scoring_max_attempts: int = Field(4, ge=1, le=10)
    scoring_circuit_open_seconds: float = Field(
        30,
        gt=0,
        le=600,
        description="after repeated endpoint failures, calls fail fast this long before one probe",
    )
    batch_max_records: int = Field(
        100, ge=1, le=10000, description="records gathered into one pipeline batch"
    )
    batch_linger_ms: float = Field(
        50, ge=0, le=5000, description="how long a batch waits for more deliveries"
    )
    dask_scheduler: str | None = Field(
        None, description="Dask scheduler address for backtest / tune (--scheduler overrides it)"
    )
    alert_claim_lease_seconds: float = Field(
        120,
        gt=0,
        description="how long a claimed, unsent alert is reserved for its worker before another may send it",
    )
    sqs_retention_seconds: int = Field(
        345_600,
        ge=3_600,
        le=1_209_600,
        description="how long the input queue keeps a message (bootstrap sets it)",
    )

    # Re-scoring without events, and scoring decoupled from acknowledgement.
    rescore_interval_hours: float = Field(
        24, gt=0, le=24 * 30, description="every active customer is scored at least this often, events or not"
    )
    rescore_batch_size: int = Field(
        100, ge=1, le=1000, description="due customers claimed and scored per sweep step"
    )
    rescore_tick_seconds: float = Field(
        5, gt=0, le=600, description="pause between sweeps when nobody is due"
    )
    rescore_lease_seconds: float = Field(
        120, gt=0, le=3600, description="a claimed due customer is due again after this if its worker died"
    )
    # Closing the loop: the event archive, the shadow model, the A/B holdout.
    archive_s3_uri: str | None = Field(
        None,
        description="s3://bucket/prefix/: every accepted event archived there (gzip JSON Lines by event date)",
    )
    shadow_endpoint_name: str | None = Field(
        None,
        description="a second SageMaker endpoint scoring every batch in the background; its alerts go to the shadow log",
    )
    shadow_topic_arn: str | None = Field(
        None,
        description="SNS topic for shadow alerts (else s3://<archive bucket>/shadow/); never the retention topic",
    )
    shadow_timeout_seconds: float = Field(
        5,
        gt=0,
        le=60,
        description="a shadow scoring taking longer is abandoned (the live path never waits for it)",
    )
    control_topic_arn: str | None = Field(
        None,
        description="SNS topic for control-arm alerts (audit); unset: they are only recorded in the ledger",
    )
    experiment: ExperimentConfig = ExperimentConfig()  # [experiment]: control_fraction, salt

    fault_kill_at: str | None = Field(
        None,
        description="fault injection only: exit 137 at this kill point (worker/faultpoints.py), e.g. after_publish@2",
    )

    @field_validator("fault_kill_at")
    @classmethod
    def _known_kill_point(cls, value: str | None) -> str | None:
        if value:
            faultpoints.parse(value)  # refuses unknown points; the runtime arms it
        return value

    @field_validator("archive_s3_uri")
    @classmethod
    def _archive_uri(cls, value: str | None) -> str | None:
        if not value:
            return None
        from worker.archive import parse_s3_uri

        try:
            bucket, prefix = parse_s3_uri(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return f"s3://{bucket}/{prefix}"

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @property
    def rescore_interval(self) -> timedelta:
        return timedelta(hours=self.rescore_interval_hours)

    @property
    def aws_region(self) -> str:
        return aws_region() or "us-east-1"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init carries the config file's values (see load_settings); env overrides them.
        return env_settings, init_settings


class ModelSettings(BaseSettings):
    """The `CHURN_*` variables of the model commands (`churn-model`), apart from the worker's
    `Settings`: no config file, and a worker setting that does not validate never stops a training
    run. The retrain task gets them from infra/service.yaml's TrainerTaskDefinition; they are the
    defaults of `churn-model retrain`'s options. An empty variable counts as unset."""

    model_config = SettingsConfigDict(env_prefix="CHURN_", frozen=True, extra="ignore", case_sensitive=False)

    model_cache: str | None = Field(
        default=None, description="default bundles and simulated logs (default ~/.cache/churn-alerts)"
    )
    archive_s3_uri: str | None = Field(
        default=None, description="the worker's event archive: retrain's --events"
    )
    endpoint_name: str | None = Field(default=None, description="retrain's --endpoint")
    model_bucket: str | None = Field(default=None, description="retrain's --bucket: packages and bundles")
    sagemaker_role_arn: str | None = Field(default=None, description="retrain's --role-arn")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML or YAML file to a dict, or a ConfigError naming the file and the problem."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"config file {path}: not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {exc}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a table of settings at the top level")
    return data


def load_settings(config_file: Path | None = None) -> Settings:
    """Defaults < config file (`config_file` or CHURN_CONFIG) < CHURN_* environment variables."""
    path = config_file or (Path(os.environ["CHURN_CONFIG"]) if os.environ.get("CHURN_CONFIG") else None)
    values = read_config_file(path) if path else {}
    try:
        return Settings(**values)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key = ".".join(str(part) for part in error["loc"])
        where = f"config file {path}" if path else "settings"
        raise ConfigError(f"{where}: {key}: {error['msg']}") from None


def redacted(settings: Settings) -> dict[str, Any]:
    """Effective settings for `config show`; nothing secret is stored here, but URLs may carry tokens."""
    data = settings.model_dump(mode="json")
    for key, value in data.items():
        if isinstance(value, str) and "@" in value and "://" in value:
            scheme, rest = value.split("://", 1)
            data[key] = f"{scheme}://***@{rest.split('@', 1)[1]}"
    data["aws_region"] = settings.aws_region
    data["aws_endpoint_url"] = aws_endpoint_url()
    return data
