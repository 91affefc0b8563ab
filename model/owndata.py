"""Examples from a team's own history: event paths + an outcomes file in, `Examples` out.

`build_examples` is what `churn-model train --events`, `evaluate --events` and `compare` call: it
splits the log by customer (`model.logsplit`, shards in a scratch directory removed afterwards),
checks the outcomes against it, places the honest split's time cut, picks how densely to sample
training instants, and folds the shards (`model.examples`), in process or on Dask.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from features.churn_outcomes import ChurnTimes, Outcomes, OutcomesError, check_against_events, load_outcomes
from features.eventfile import event_sources
from features.exceptions import EventParseError
from features.shards import shard_of
from features.state import DAY_US
from features.store import DEFAULT_RETENTION
from model.examples import (
    Examples,
    FoldTask,
    SamplePlan,
    ShardExamples,
    fold_shard,
    merge_shards,
    scratch_dir,
    thin,
)
from model.exceptions import DataError
from model.logsplit import LogSummary, ShardRef, split_log
from model.splits import ROLES, SplitPlan, choose_cut_day, latest_customers
from model.survivorship import censor_survivor_history
from plumbing.parallel import Engine, map_shards

MIN_LABELLED_DAYS = 7  # a log must have at least this many days with a known 30-day outcome


@dataclass(frozen=True)
class BuildOptions:
    mode: str = "training"  # training (split roles, sampled) | evaluation (every instant)
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    cut_fraction: float = 0.6  # share of labelled activity before the time cut
    holdout: str = "latest"  # latest | random: which customers validation and test draw from
    max_train_rows: int = 240_000  # training instants are sampled down to about this many
    max_holdout_rows: int = 400_000  # validation / test instants per role, before sampling kicks in
    retention: timedelta = DEFAULT_RETENTION
    on_error: str = "skip"  # skip | stop, for bad lines
    allow_unknown_outcomes: bool = False
    excluded: frozenset[str] = field(default_factory=frozenset)
    shards: int | None = None  # None: by input size (a divisor of 64, as the backtest's)
    scratch: Path | None = None
    workers: int = 1  # 1: in process; more: a local Dask cluster of that many processes
    scheduler: str | None = None  # an existing Dask cluster instead


@dataclass
class BuildReport:
    summary: dict[str, Any]
    split: SplitPlan
    every: dict[str, int]
    warnings: list[str]
    outcomes: Outcomes
    churn: ChurnTimes  # every churn instant: outcomes and customer_churned events
    start_us: int  # the first and latest event time of the log
    end_us: int


def build_examples(
    events: str | Path | Sequence[str | Path],
    outcomes: Path,
    options: BuildOptions = BuildOptions(),
    progress: bool = False,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> tuple[Examples, BuildReport]:
    """Examples of every active customer at its daily scoring instants (sampled for training)."""
    try:
        sources = event_sources(events)
        loaded = load_outcomes(Path(outcomes))
    except (EventParseError, OutcomesError) as exc:
        raise DataError(str(exc)) from None
    with scratch_dir(options.scratch) as work:
        engine = Engine(options.workers, options.scheduler)
        try:
            summary, refs = split_log(sources, work, engine, options.shards, options.on_error, progress, say)
        except EventParseError as exc:  # a file that cannot be read to its end (torn gzip, not text)
            raise DataError(f"unreadable event file: {exc.error_detail}") from None
        if summary.events == 0 or summary.last_us is None:
            raise DataError(f"no events in {', '.join(summary.sources)}: the log is empty")
        try:
            warnings = check_against_events(
                loaded, summary.first_sign_up, summary.customers, options.allow_unknown_outcomes
            )
        except OutcomesError as exc:
            raise DataError(str(exc)) from None
        for warning in warnings:
            say(f"warning: {warning}")
        labelled_days = (
            (summary.last_us - summary.first_us) // DAY_US - 30 if summary.first_us is not None else 0
        )
        if labelled_days < MIN_LABELLED_DAYS:
            raise DataError(
                f"the log spans {(summary.last_us - (summary.first_us or 0)) / DAY_US:.0f} days; 30-day churn is known "
                f"only for instants 30 days before its end, so it needs at least {30 + MIN_LABELLED_DAYS} days"
            )
        churn = ChurnTimes.join(loaded, summary.churn_events)
        split = _split(summary, options)
        every = {role: 1 for role in ROLES}
        shard_customers: dict[int, set[str]] = {}
        for cid in summary.customers:
            shard_customers.setdefault(shard_of(cid, refs[0].shards), set()).add(cid)

        def task(ref: ShardRef) -> FoldTask:
            mine = shard_customers.get(ref.shard, set())
            return FoldTask.of(
                ref,
                summary,
                {c: t for c, t in loaded.churned_at_us.items() if c in mine},
                SamplePlan(every, split),
                options.retention,
            )

        first = fold_shard(task(refs[0]))
        if options.mode == "training":
            # Shards are random sets of customers: the first one's exact count of instants per role,
            # times the number of shards, sets the sampling; its own rows are thinned to it.
            every = _sampling(first, len(refs), split, options)
            first = thin(first, SamplePlan(every, split))
        parts = [
            first,
            *map_shards(
                fold_shard, [task(ref) for ref in refs[1:]], engine, desc="examples", progress=progress
            ),
        ]
        examples = merge_shards(parts, summary, split)
    assert summary.last_us is not None
    survivors = censor_survivor_history(examples.t_us, examples.y, summary.last_us)
    if survivors is not None:
        warnings.append(survivors.warning())
        say(f"warning: {survivors.warning()}")
    examples.summary.update(
        {
            "outcomes": str(outcomes),
            "sampling_every_days": every,
            "split": split.describe(),
            "excluded_customers": sum(1 for cid in summary.customers if cid in options.excluded),
            "survivor_history": survivors.describe() if survivors is not None else None,
        }
    )
    if len(examples) == 0:
        excluded = examples.summary["excluded_customers"]
        if excluded and excluded == len(summary.customers):
            raise DataError(
                f"every customer of the log ({excluded}) was in the bundle's training data and is left out: "
                "nothing to measure; evaluate on a log of other customers, or pass --include-training-customers "
                "to measure on them anyway (an optimistic result)"
            )
        raise DataError(
            "no active customer at any scoring instant of the log: nothing to learn or measure"
            + (
                f" ({excluded} of its {len(summary.customers)} customers were in the bundle's training data "
                "and left out: --include-training-customers keeps them)"
                if excluded
                else ""
            )
        )
    assert summary.first_us is not None
    return examples, BuildReport(
        examples.summary, split, every, warnings, loaded, churn, summary.first_us, summary.last_us
    )


def _split(summary: LogSummary, options: BuildOptions) -> SplitPlan:
    assert summary.last_us is not None
    if options.mode == "evaluation":
        return SplitPlan(cut_day=summary.first_day, mode="evaluation", excluded=options.excluded)
    test, validation = options.test_fraction, options.validation_fraction
    if not (test >= 0 and validation > 0 and test + validation < 1):
        raise DataError("validation and test fractions must be positive and leave customers to train on")
    cut = choose_cut_day(summary.day_events, summary.last_us, options.cut_fraction)
    held_out = None
    if options.holdout == "latest":
        held_out = latest_customers(
            {cid: span[0] for cid, span in summary.customers.items()}, test + validation
        )
    elif options.holdout != "random":
        raise DataError(f"holdout {options.holdout!r}: use latest or random")
    return SplitPlan(
        cut_day=cut,
        validation_fraction=validation,
        test_fraction=test,
        excluded=options.excluded,
        held_out=held_out,
    )


def _sampling(part: ShardExamples, shards: int, split: SplitPlan, options: BuildOptions) -> dict[str, int]:
    """Every how many days each role keeps an instant, from the first shard's instants (all kept)."""
    counts = Counter(split.role(c) for c in part.customer)
    every = {}
    for role, cap in (
        ("train", options.max_train_rows),
        ("validation", options.max_holdout_rows),
        ("test", options.max_holdout_rows),
    ):
        every[role] = max(1, math.ceil(counts.get(role, 0) * shards / cap))
    return every
