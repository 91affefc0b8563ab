"""`churn-worker config show|validate`."""

from __future__ import annotations

import json
from pathlib import Path

from worker.settings import load_settings, redacted


def run_config_show(config_file: Path | None, as_json: bool) -> int:
    data = redacted(load_settings(config_file))
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        for key, value in sorted(data.items()):
            print(f"{key} = {json.dumps(value)}")
    return 0


def run_config_validate(config_file: Path) -> int:
    load_settings(config_file)  # raises ConfigError naming the key and reason
    print(f"{config_file}: valid")
    return 0
