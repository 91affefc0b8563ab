"""`churn-worker backtest EVENTS... --out DIR`: the live pipeline over history, in process, on event time.

EVENTS are event paths as every command takes them (files, directories, globs, `s3://` prefixes;
`features.eventfile`), listed and checked with every other argument before anything is trained.

Writes DIR/alerts.jsonl (the bodies production would have published, in order), DIR/report.json
and DIR/report.html. With `--outcomes`, the report measures each alert type and the model against
what happened, and the seed's targets pass or fail. The model runs in process (the default bundle,
or `--bundle DIR`; the default bundle is trained first when it is not cached yet, a few minutes);
`--endpoint NAME` scores with a deployed SageMaker endpoint instead, through the worker's own client.
See `jobs.backtest` for how the clock and the batches work.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cli.commands.checks import writable_dir
from features.churn_outcomes import Outcomes, load_outcomes
from features.eventfile import EventSource, check_has_events, describe_paths, event_sources
from features.shards import GROUPS, total_bytes
from jobs.backtest.report import build_report, format_summary, write_report
from jobs.backtest.runner import BacktestOptions, BacktestResult, run_backtest
from jobs.backtest.scorer import BundleScorer, EndpointScorer, bundle_dir_or_default, bundle_version
from jobs.backtest.source import HOUR_US
from jobs.html import backtest_page
from plumbing.parallel import default_workers
from worker.exceptions import UsageError
from worker.settings import Settings

AUTO_PARALLEL_BYTES = 64 * 1024 * 1024  # below this a Dask cluster's start-up costs more than it saves


@dataclass(frozen=True)
class BacktestRequest:
    events: str | Path | Sequence[str | Path]  # event paths: files, directories, globs, s3:// prefixes
    out_dir: Path
    outcomes: Path | None = None
    endpoint: str | None = None
    bundle: Path | None = None
    on_error: str = "stop"
    batch_hours: float = 24.0
    as_json: bool = False
    workers: int | None = None  # None: one per core for large inputs, else in process
    scheduler: str | None = None
    shards: int | None = None

    @property
    def events_text(self) -> str:
        return describe_paths(self.events)


def check_request(request: BacktestRequest, out_option: str = "--out") -> list[EventSource]:
    """Every argument, before the default bundle is trained or anything is backtested: the options,
    the outcomes file's existence, that the output directory can be written, and the event paths
    (listed, and read up to their first valid event: `no events in PATH` otherwise). Returns the
    event files (or S3 objects), listed once."""
    if request.endpoint and request.bundle:
        raise UsageError(
            "--endpoint and --bundle are alternatives: score with a deployed endpoint or a local bundle"
        )
    if not 0 < request.batch_hours <= 24 * 7:
        raise UsageError(f"--batch-hours {request.batch_hours}: must be above 0 and at most 168")
    if request.shards is not None and GROUPS % request.shards:
        raise UsageError(f"--shards {request.shards}: must divide {GROUPS} (1, 2, 4, 8, 16, 32 or 64)")
    if request.outcomes is not None and not request.outcomes.is_file():
        raise UsageError(f"--outcomes {request.outcomes}: no such file")
    writable_dir(request.out_dir, out_option)
    sources = event_sources(request.events)
    check_has_events(request.events, request.on_error, sources)
    return sources


def engine_workers(request: BacktestRequest, sources: Sequence[EventSource]) -> int:
    """--workers, or by default one per core when the input is large enough to gain from it."""
    if request.workers is not None:
        return request.workers
    return default_workers() if total_bytes(sources) >= AUTO_PARALLEL_BYTES else 1


async def backtest_once(
    settings: Settings, request: BacktestRequest, alerts_out: Path, sources: Sequence[EventSource]
) -> tuple[BacktestResult, str, str | None]:
    """Run the loop with the scorer the request names: (result, scoring label, model version).
    Without --endpoint or --bundle, the cached default bundle (trained first if missing)."""
    options = BacktestOptions(
        alerts=settings.alerts,
        retention=settings.retention,
        on_error=request.on_error,
        window_us=round(request.batch_hours * HOUR_US),
        workers=engine_workers(request, sources),
        scheduler=request.scheduler,
        shards=request.shards,
        experiment=settings.experiment,
    )
    if request.endpoint:
        result = await run_backtest(sources, EndpointScorer(settings, request.endpoint), alerts_out, options)
        return result, f"endpoint {request.endpoint}", result.log.model_version
    bundle = bundle_dir_or_default(request.bundle)
    result = await run_backtest(sources, BundleScorer(str(bundle)), alerts_out, options)
    return result, "in process", result.log.model_version or bundle_version(bundle)


async def run_backtest_command(settings: Settings, request: BacktestRequest) -> int:
    sources = check_request(request)
    outcomes: Outcomes | None = load_outcomes(request.outcomes) if request.outcomes else None  # fail fast
    request.out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result, scoring, model_version = await backtest_once(
        settings, request, request.out_dir / "alerts.jsonl", sources
    )
    seconds = time.perf_counter() - started
    report = build_report(
        result,
        outcomes,
        settings.alerts,
        events=request.events_text,
        scoring=scoring,
        model_version=model_version,
        batch_hours=request.batch_hours,
        budgets=settings.budgets,
    )
    write_report(report, request.out_dir / "report.json")
    (request.out_dir / "report.html").write_text(backtest_page(report), encoding="utf-8")
    rate = result.events_read / seconds if seconds > 0 else 0.0
    if request.as_json:
        print(
            json.dumps(
                {
                    "out": str(request.out_dir),
                    "events": result.events_read,
                    "alerts": len(result.alerts.types),
                    "seconds": round(seconds, 2),
                    "targets": report.get("targets"),
                }
            )
        )
    else:
        print(format_summary(report))
        print(
            f"\n{result.events_read:,} events, {len(result.alerts.types):,} alerts in {seconds:.1f} s "
            f"({rate:,.0f} events/s); wrote {request.out_dir}/alerts.jsonl, report.json, report.html"
        )
    if result.bad_lines:
        print(f"skipped {result.bad_lines} bad lines", file=sys.stderr)
    return 0
