"""`churn-worker backtest EVENTS --out DIR`: the live pipeline over history, in process, on event time.

Writes DIR/alerts.jsonl (the bodies production would have published, in order), DIR/report.json
and DIR/report.html. With `--outcomes`, the report measures each alert type and the model against
what happened, and the seed's targets pass or fail. The model runs in process (the default bundle,
or `--bundle DIR`); `--endpoint NAME` scores with a deployed SageMaker endpoint instead, through
the worker's own client. See `worker.backtest` for how the clock and the batches work.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from worker.backtest.html import backtest_page
from worker.backtest.outcomes import Outcomes, load_outcomes
from worker.backtest.report import build_report, format_summary, write_report
from worker.backtest.runner import BacktestOptions, BacktestResult, run_backtest
from worker.backtest.scorer import InProcessScorer
from worker.backtest.source import HOUR_US
from worker.exceptions import UsageError
from worker.settings import Settings


@dataclass(frozen=True)
class BacktestRequest:
    events: Path
    out_dir: Path
    outcomes: Path | None = None
    endpoint: str | None = None
    bundle: Path | None = None
    on_error: str = "stop"
    batch_hours: float = 24.0
    as_json: bool = False


def check_request(request: BacktestRequest) -> None:
    if not request.events.is_file():
        raise UsageError(f"{request.events}: no such file")
    if request.outcomes is not None and not request.outcomes.is_file():
        raise UsageError(f"{request.outcomes}: no such file")
    if request.endpoint and request.bundle:
        raise UsageError("--endpoint and --bundle are alternatives: score with a deployed endpoint or a local bundle")
    if not 0 < request.batch_hours <= 24 * 7:
        raise UsageError(f"--batch-hours {request.batch_hours}: must be above 0 and at most 168")
    if request.out_dir.exists() and not request.out_dir.is_dir():
        raise UsageError(f"--out {request.out_dir}: exists and is not a directory")


async def backtest_once(
    settings: Settings, request: BacktestRequest, alerts_out: Path
) -> tuple[BacktestResult, str, str | None]:
    """Run the loop with the scorer the request names: (result, scoring label, model version)."""
    options = BacktestOptions(
        alerts=settings.alerts, retention=settings.retention, on_error=request.on_error,
        window_us=round(request.batch_hours * HOUR_US),
    )  # fmt: skip
    if request.endpoint:
        from worker.aws import AwsClients
        from worker.scoring import SageMakerScorer

        async with AwsClients(settings, "sagemaker-runtime") as aws:
            endpoint = SageMakerScorer(
                aws["sagemaker-runtime"], request.endpoint, max_attempts=settings.scoring_max_attempts
            )
            result = await run_backtest(request.events, endpoint, alerts_out, options)
        return result, f"endpoint {request.endpoint}", result.log.model_version
    scorer = InProcessScorer.from_bundle_dir(request.bundle)
    result = await run_backtest(request.events, scorer, alerts_out, options)
    return result, "in process", scorer.model_version


async def run_backtest_command(settings: Settings, request: BacktestRequest) -> int:
    check_request(request)
    outcomes: Outcomes | None = load_outcomes(request.outcomes) if request.outcomes else None  # fail fast
    request.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result, scoring, model_version = await backtest_once(settings, request, request.out_dir / "alerts.jsonl")
    seconds = time.perf_counter() - started
    report = build_report(
        result, outcomes, settings.alerts, events=str(request.events), scoring=scoring,
        model_version=model_version, batch_hours=request.batch_hours,
    )  # fmt: skip
    write_report(report, request.out_dir / "report.json")
    (request.out_dir / "report.html").write_text(backtest_page(report), encoding="utf-8")
    rate = result.events_read / seconds if seconds > 0 else 0.0
    if request.as_json:
        print(json.dumps({
            "out": str(request.out_dir), "events": result.events_read, "alerts": len(result.alerts.types),
            "seconds": round(seconds, 2), "targets": report.get("targets"),
        }))  # fmt: skip
    else:
        print(format_summary(report))
        print(f"\n{result.events_read:,} events, {len(result.alerts.types):,} alerts in {seconds:.1f} s "
              f"({rate:,.0f} events/s); wrote {request.out_dir}/alerts.jsonl, report.json, report.html")  # fmt: skip
    if result.bad_lines:
        print(f"skipped {result.bad_lines} bad lines", file=sys.stderr)
    return 0
