"""checkov over every template, offline, once per source: `make lint` runs it in the tools venv.

    python infra/checkov_all.py infra/*.yaml Dockerfile

checkov evaluates conditions with the parameters' defaults, so the resources a `Source: kinesis`
deployment creates (stream, lease table, the task role's Kinesis statement) would never be
checked. Each template with a `Source` parameter is therefore checked twice: as written (sqs) and
with the default switched to kinesis. Skipped checks are only those skipped inline in a template,
each with its reason (`Metadata: checkov: skip:`). No network: checkov's guideline download is off.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE_DEFAULT = re.compile(r"(?m)^(  Source:\n(?:    .*\n)*?    Default: )sqs$")


def checkov(path: Path, label: str) -> bool:
    framework = "dockerfile" if path.name == "Dockerfile" else "cloudformation"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    result = subprocess.run(
        ["checkov", "--quiet", "--compact", "--skip-download", "--framework", framework, "-f", str(path)],
        env=env,
        capture_output=True,
        text=True,
    )
    summary = re.search(r"Passed checks: \d+, Failed checks: \d+, Skipped checks: \d+", result.stdout)
    print(f"checkov {label}: {summary.group(0) if summary else 'no checks apply to these resource types'}")
    if result.returncode != 0:
        print(result.stdout, result.stderr, sep="\n")
    return result.returncode == 0


def main(paths: list[str]) -> int:
    ok = True
    for name in paths:
        path = Path(name)
        ok &= checkov(path, str(path))
        text = path.read_text()
        if SOURCE_DEFAULT.search(text):
            with tempfile.TemporaryDirectory() as tmp:
                variant = Path(tmp) / path.name
                variant.write_text(SOURCE_DEFAULT.sub(r"\1kinesis", text))
                ok &= checkov(variant, f"{path} (Source=kinesis)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
