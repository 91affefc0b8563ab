"""Config files: read from a local path or an `s3://` object, parsed as TOML or YAML by suffix,
a key's line found for error messages, and settings written back as TOML.

`CHURN_CONFIG` names the file the deployed tasks read: the service stack passes an `s3://` object
(the tuned thresholds `churn-worker tune` wrote), a laptop a local path. Every way a file can be
wrong (missing, unreadable, not UTF-8, not TOML/YAML, not a table) is a `ConfigError` naming it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from plumbing.awsenv import aws_region
from plumbing.retry import error_text
from worker.exceptions import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")
_TOML_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\s\"-]+?)\s*\]\s*(#.*)?$")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"-]+)\s*=")


def is_s3(source: str) -> bool:
    return source.startswith("s3://")


def read_config_text(source: str) -> str:
    """The file's text, from a local path or an `s3://bucket/key` object."""
    data = _read_s3(source) if is_s3(source) else _read_local(Path(source))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {source}: not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None


def _read_local(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None


def _read_s3(uri: str) -> bytes:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ConfigError(f"config object {uri!r}: expected s3://bucket/key")
    try:
        response = boto3.client("s3", region_name=aws_region()).get_object(Bucket=bucket, Key=key)
        return bytes(response["Body"].read())
    except (ClientError, BotoCoreError) as exc:
        raise ConfigError(
            f"config object {uri}: {error_text(exc)}; check that it exists and that this role may read it"
        ) from None


def parse_config(text: str, source: str) -> dict[str, Any]:
    """TOML, or YAML when the name ends in .yaml/.yml; the top level must be a table."""
    is_yaml = source.lower().endswith(YAML_SUFFIXES)
    try:
        data = yaml.safe_load(text) if is_yaml else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        kind = "YAML" if is_yaml else "TOML"
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file {source}: not valid {kind}: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {source}: expected a table of settings at the top level")
    return data


def key_line(text: str, source: str, loc: Sequence[str | int]) -> int | None:
    """The 1-based line that sets `loc` (e.g. ("alerts", "ib_call_spike", "min_calls_14d")), or the
    line of its nearest enclosing table; None when the file does not name it."""
    path = [str(part) for part in loc]
    if not path:
        return None
    if source.lower().endswith(YAML_SUFFIXES):
        return _yaml_line(text, path)
    return _toml_line(text, path)


def _toml_line(text: str, path: list[str]) -> int | None:
    table: list[str] = []
    best: tuple[int, int] | None = None  # (how much of the path it names, line)
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TOML_TABLE.match(line)
        if header:
            table = [part.strip().strip('"') for part in header.group(1).split(".")]
            if path[: len(table)] == table and (best is None or len(table) > best[0]):
                best = (len(table), number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            full = table + [part.strip('"') for part in key.group(1).split(".")]
            if path[: len(full)] == full and (best is None or len(full) > best[0]):
                best = (len(full), number)
    return best[1] if best else None


def _yaml_line(text: str, path: list[str]) -> int | None:
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in path:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                line, node = key.start_mark.line + 1, value
                break
        else:
            break
    return line


def to_toml(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """Settings as a TOML file: scalars first, then one [table] per nested mapping; None left out
    (unset). What `config show` prints and `config validate` reads back."""
    lines = [f"# {line}" if line else "#" for line in header]
    lines += _toml_table(data, [])
    return "\n".join(lines).strip() + "\n"


def _toml_table(data: Mapping[str, Any], path: list[str]) -> list[str]:
    scalars = [(k, v) for k, v in data.items() if v is not None and not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    lines = [f"[{'.'.join(path)}]"] if path and scalars else []
    lines += [f"{key} = {_toml_value(value)}" for key, value in scalars]
    for key, value in tables:
        inner = _toml_table(value, [*path, key])
        if inner:
            lines += ["", *inner]
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's
