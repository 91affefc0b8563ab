"""The settings, read once at the entry point: the only module that reads `CHURN_*` variables.

`Settings` is the worker's (docs/contracts.md, Configuration). Lowest to highest: defaults, a TOML
or YAML file (`--config FILE` or `CHURN_CONFIG`), environment variables `CHURN_*` (nested with
`__`, e.g. `CHURN_ALERTS__IB_CALL_SPIKE__MIN_CALLS_14D=3`). `ModelSettings` holds the few `CHURN_*`
variables the model commands read (the bundle cache, the retrain task's defaults). AWS access uses
the standard chain (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL[_<SERVICE>]`): botocore reads
those itself, `plumbing.awsenv` what it does not, so no keys ever live here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from plumbing.awsenv import aws_endpoint_url, aws_region
from worker import faultpoints
from worker.alerts.budgets import BudgetsConfig
from worker.alerts.config import AlertsConfig
from worker.alerts.experiment import ExperimentConfig
from worker.config_file import key_line, parse_config, read_config_text, to_toml
from worker.exceptions import ConfigError

ENV_PREFIX = "CHURN_"
CONFIG_VARIABLE = "CHURN_CONFIG"  # the config file itself: a local path or an s3://bucket/key object


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
    budgets: BudgetsConfig = BudgetsConfig()  # [budgets.<name>] tables (worker/alerts/budgets.py)

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
    served_sample: float = Field(
        0.01,
        ge=0,
        le=1,
        description="share of scored customer-days logged to s3://<archive bucket>/served/ (worker/served_log.py); needs the archive",
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

    @field_validator("kinesis_start_timestamp")
    @classmethod
    def _iso_instant(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO-8601 instant: {value!r} (e.g. 2026-11-27T00:00:00Z)") from None
        if moment.tzinfo is None:
            raise ValueError(f"{value!r} needs a UTC offset or Z, e.g. 2026-11-27T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Settings that contradict each other, whatever source each came from: refused when loaded,
        so `config validate` and `run` refuse the same things."""
        problems = []
        at_timestamp = self.source == "kinesis" and self.kinesis_start_position == "AT_TIMESTAMP"
        if at_timestamp and not self.kinesis_start_timestamp:
            problems.append("CHURN_KINESIS_START_POSITION=AT_TIMESTAMP needs CHURN_KINESIS_START_TIMESTAMP")
        if self.shadow_endpoint_name and not (self.shadow_topic_arn or self.archive_s3_uri):
            problems.append(
                "CHURN_SHADOW_ENDPOINT_NAME needs a shadow log: set CHURN_SHADOW_TOPIC_ARN, or "
                "CHURN_ARCHIVE_S3_URI (shadow alerts then go to its bucket under shadow/)"
            )
        if self.shadow_endpoint_name and self.shadow_endpoint_name == self.endpoint_name:
            problems.append(
                "CHURN_SHADOW_ENDPOINT_NAME is the live endpoint (CHURN_ENDPOINT_NAME): name the candidate"
            )
        for name, topic in (
            ("CHURN_CONTROL_TOPIC_ARN", self.control_topic_arn),
            ("CHURN_SHADOW_TOPIC_ARN", self.shadow_topic_arn),
        ):
            if topic and topic == self.alerts_topic_arn:
                problems.append(
                    f"{name} is the retention topic (CHURN_ALERTS_TOPIC_ARN): give it a topic of its own"
                )
        for name in type(self.alerts).model_fields:
            rule = self.alerts.rule(name)
            for tier, merged in [(None, rule), *((t, rule.for_tier(t)) for t in rule.by_tier)]:
                hours = merged.resolve_after_hours
                if hours is not None and hours < self.rescore_interval_hours:
                    where = f"alerts.{name}" + (f".by_tier.{tier}" if tier else "")
                    problems.append(
                        f"{where}.resolve_after_hours ({hours:g}) is shorter than CHURN_RESCORE_INTERVAL_HOURS "
                        f"({self.rescore_interval_hours:g}): a quiet customer's alert would resolve before "
                        "anyone scored them again"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

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


class ConfigErrors(ConfigError):
    """Every problem found while loading the settings: the message is the first (one line, as every
    error), `problems` all of them (`config validate` prints each on its own line)."""

    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more: `churn-worker config validate` lists them)"
        super().__init__(problems[0] + (more if len(problems) > 1 else ""))
        self.problems = problems


def known_variables() -> set[str]:
    """Every `CHURN_*` name a setting reads (nested settings by their prefix, `CHURN_ALERTS__`)."""
    names = {CONFIG_VARIABLE}
    for model in (Settings, ModelSettings):
        for field, info in model.model_fields.items():
            nested = isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
            names.add(f"{ENV_PREFIX}{field.upper()}{'__' if nested else ''}")
    return names


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One problem per `CHURN_*` variable no setting reads: a misspelt name would otherwise be
    ignored, and the worker run on a default the operator meant to change."""
    known = known_variables()
    exact = sorted(name for name in known if not name.endswith("__"))
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        if any(upper.startswith(prefix) for prefix in known if prefix.endswith("__")):
            continue  # nested: the nested model refuses a misspelt key itself
        guess = difflib.get_close_matches(upper, exact, n=1)
        hint = (
            f": did you mean {guess[0]}?" if guess else ": no setting reads it (docs/contracts.md lists them)"
        )
        problems.append(f"{name}: unknown setting{hint}")
    return problems


def config_source(config_file: Path | str | None) -> str | None:
    """`--config FILE`, else CHURN_CONFIG (a path or an s3://bucket/key object), else None."""
    if config_file:
        return str(config_file)
    return os.environ.get(CONFIG_VARIABLE) or None


def read_config_values(source: str) -> dict[str, Any]:
    """A config file's settings as written (no defaults, no environment): what `tune` carries over."""
    return parse_config(read_config_text(source), source)


def load_settings(config_file: Path | str | None = None) -> Settings:
    """Defaults < config file (`config_file` or CHURN_CONFIG, local or s3://) < CHURN_* variables.
    Every problem (an unknown variable, a bad value from the file or the environment, settings
    that contradict each other) is found before any is raised: `ConfigErrors` carries them all."""
    source = config_source(config_file)
    problems = unknown_variables(os.environ)
    text, values = "", {}
    if source:
        text = read_config_text(source)
        values = parse_config(text, source)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems += [_describe(error, source, text) for error in exc.errors(include_url=False)]
    if problems:
        raise ConfigErrors(problems)
    return settings


def _describe(error: ErrorDetails, source: str | None, text: str) -> str:
    """One problem, named where it came from: the variable, or the file and line."""
    loc = [str(part) for part in error["loc"]]
    message = error["msg"].removeprefix("Value error, ")
    if not loc:
        return f"settings: {message}"
    key = ".".join(loc)
    variable = next(
        (
            name
            for name in (ENV_PREFIX + "__".join(loc[:i]).upper() for i in range(len(loc), 0, -1))
            if name in {n.upper() for n in os.environ}
        ),
        None,
    )
    if variable or not source:
        return f"settings: {key}: {message}" + (f" ({variable})" if variable else "")
    line = key_line(text, source, loc)
    return f"config file {source}{f', line {line}' if line else ''}: {key}: {message}"


def missing_for_run(settings: Settings) -> list[str]:
    """The resources `run` needs named (the deployment passes them in the environment)."""
    missing = []
    if settings.source == "sqs" and not settings.sqs_queue_url:
        missing.append("CHURN_SQS_QUEUE_URL")
    if settings.source == "kinesis" and not settings.kinesis_stream:
        missing.append("CHURN_KINESIS_STREAM")
    if not settings.dlq_url:
        missing.append("CHURN_DLQ_URL")
    if not settings.alerts_topic_arn:
        missing.append("CHURN_ALERTS_TOPIC_ARN")
    return missing


def check_runnable(settings: Settings) -> None:
    """Fail fast, naming the setting, before `run` opens anything."""
    missing = missing_for_run(settings)
    if missing:
        raise ConfigError(
            f"set {', '.join(missing)} (or run `churn-worker bootstrap` and use the names it prints)"
        )


def redacted(settings: Settings) -> dict[str, Any]:
    """Effective settings for `config show`; nothing secret is stored here, but URLs may carry tokens."""
    data = settings.model_dump(mode="json")
    for key, value in data.items():
        if isinstance(value, str) and "@" in value and "://" in value:
            scheme, rest = value.split("://", 1)
            data[key] = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return data


def settings_file(settings: Settings, source: str | None) -> str:
    """`config show`: the effective settings as a TOML file `config validate` accepts, where they
    came from and the AWS chain's region and endpoint as comments."""
    header = [
        "Effective settings of churn-worker (defaults < config file < CHURN_* variables), secrets redacted.",
        f"config file: {source or 'none'}",
        f"AWS region: {settings.aws_region}; endpoint: {aws_endpoint_url() or 'AWS default'}",
        "",
    ]
    return to_toml(redacted(settings), header)
