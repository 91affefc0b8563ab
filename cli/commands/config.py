"""`churn-worker config show|validate`.

`show` prints the effective settings as a TOML file that `validate` (and `run --config`) accepts.
`validate` loads a file exactly as `run` loads its settings (the file, then the CHURN_* variables of
this environment over it, every value and every combination checked) and lists every problem with
its file, key and line, or its variable. The resources `run` also needs named (queue, topic, ...)
normally come from the deployment's environment: when they are missing here, `validate` says so
without failing, since the file is not at fault.
"""

from __future__ import annotations

import json
import sys

from worker.settings import (
    ConfigErrors,
    config_source,
    load_settings,
    missing_for_run,
    redacted,
    settings_file,
)


def run_config_show(config_file: str | None, as_json: bool) -> int:
    settings = load_settings(config_file)
    if as_json:
        print(json.dumps(redacted(settings), indent=2, sort_keys=True))
    else:
        print(settings_file(settings, config_source(config_file)), end="")
    return 0


def run_config_validate(config_file: str) -> int:
    try:
        settings = load_settings(config_file)
    except ConfigErrors as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{config_file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{config_file}: valid")
    missing = missing_for_run(settings)
    if missing:
        print(f"note: `run` also needs {', '.join(missing)}, from the environment (not set here)")
    return 0
