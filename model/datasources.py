"""Where training data comes from: an event log with outcomes, the simulator, or the seed's generator.

- `events`: a team's own history (`churn-model train --events PATH --outcomes FILE`), through
  `model.owndata.build_examples`: honest split (train before the time cut; validation and test
  after it, on other customers), labels from events and outcomes only.
- `simulated`: the simulator writes an event log and outcomes (cached under the model cache) and
  the very same path reads them: the default bundle learns exactly as a user's would.
- `seed`: the spec's segment generator (26 features, the rest zero; rows, no customers or time).
- `synthetic`: random rows for fast tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.registry import FEATURE_NAMES
from model.bundle import cache_dir
from model.exceptions import DataError, UsageError

if TYPE_CHECKING:
    from model.examples import Examples
    from model.owndata import BuildReport

N_FEATURES = len(FEATURE_NAMES)
DEFAULT_CUSTOMERS = 6000
DEFAULT_DAYS = 120


@dataclass(frozen=True)
class DataParams:
    source: str = "simulated"  # simulated | events | seed | synthetic (tests only)
    customers: int | None = None  # simulated: customers; seed / synthetic: rows
    days: int | None = None
    seed: int = 42
    test_fraction: float = 0.15
    validation_fraction: float = 0.15
    cut_fraction: float = 0.6
    holdout: str = "latest"  # latest | random (model/splits.py)
    max_train_rows: int = 240_000
    events: tuple[str, ...] = ()
    outcomes: str | None = None
    allow_unknown_outcomes: bool = False
    on_error: str = "skip"
    workers: int = 1  # examples on a local Dask cluster of this many processes (1: in process)
    scheduler: str | None = None


@dataclass
class Arrays:
    x: np.ndarray  # float32 [n, 150], registry order
    y: dict[str, np.ndarray]  # NaN where a label is unknown
    groups: np.ndarray | None = None  # customer per row, when known

    def take(self, rows: np.ndarray) -> Arrays:
        return Arrays(
            self.x[rows],
            {k: np.asarray(v)[rows] for k, v in self.y.items()},
            None if self.groups is None else self.groups[rows],
        )


@dataclass
class TrainingData:
    train: Arrays  # the training customers' instants before the time cut (or all rows, without time)
    validation: Arrays | None  # None: the fit splits some training rows off
    examples: Examples | None = None  # of event sources (every role)
    build: BuildReport | None = None
    events: tuple[str, ...] = ()
    outcomes: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    train_every_instant: Arrays | None = None  # the training customers' instants before and after the cut


def split_rows(data: Arrays, fraction: float, seed: int) -> tuple[Arrays, Arrays]:
    """(kept, held out): whole customers when rows know their customer, else random rows."""
    rng = np.random.default_rng(seed)
    if data.groups is not None:
        customers = np.unique(data.groups)
        held = set(
            rng.choice(customers, size=max(1, round(len(customers) * fraction)), replace=False).tolist()
        )
        mask = np.fromiter((g in held for g in data.groups), dtype=bool, count=len(data.groups))
    else:
        mask = np.zeros(len(data.x), dtype=bool)
        mask[rng.permutation(len(data.x))[: max(1, round(len(data.x) * fraction))]] = True
    return data.take(np.flatnonzero(~mask)), data.take(np.flatnonzero(mask))


def synthetic_arrays(rows: int, seed: int) -> Arrays:
    """Random registry-shaped rows with a planted churn signal: for fast tests, not for models."""
    from features.registry import FEATURE_INDEX

    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, size=(rows, N_FEATURES)).astype(np.float32)
    calls, sessions = FEATURE_INDEX["ib_call_count_14d"], FEATURE_INDEX["session_count_7d"]
    x[:, calls] = rng.poisson(0.8, rows)
    risk = 1 / (1 + np.exp(-(1.5 * (x[:, calls] - 1) - 0.8 * (x[:, sessions] - 2))))
    churn30 = (rng.random(rows) < risk).astype(np.float32)
    y: dict[str, np.ndarray] = {
        "first_session_success": (rng.random(rows) < 0.7).astype(np.float32),
        "session_velocity": x[:, sessions] / 2,
        "churn_risk_14d": churn30 * (rng.random(rows) < 0.6),
        "churn_risk_30d": churn30,
        "supply_demand": rng.normal(size=(rows, 20)).astype(np.float32),
        "health_score": (100 * (1 - risk)).astype(np.float32),
    }
    return Arrays(x=x, y=y, groups=np.arange(rows))


def simulator_version() -> str:
    """A digest of the simulator's source: a cached simulated log goes stale when it changes."""
    import hashlib

    return hashlib.sha256(Path(__file__).with_name("simulator.py").read_bytes()).hexdigest()[:8]


def simulated_log(
    customers: int, days: int, seed: int, *, cache: Path, progress: bool = False
) -> tuple[Path, Path]:
    """(events, outcomes) of a simulation, written once under the model cache and reused."""
    from model.simulator import simulate, write_simulation

    directory = cache / "logs"
    events = directory / f"sim-c{customers}-d{days}-s{seed}-{simulator_version()}.jsonl.gz"
    outcomes = events.with_name(events.name.replace(".jsonl.gz", ".outcomes.jsonl"))
    if events.exists() and outcomes.exists():
        return events, outcomes
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".partial-{os.getpid()}"
    partial.mkdir(exist_ok=True)
    paths = write_simulation(simulate(customers, days, seed, progress=progress), partial / events.name)
    paths["outcomes"].replace(outcomes)
    paths["truth"].replace(events.with_name(events.name.replace(".jsonl.gz", ".truth.npz")))
    paths["events"].replace(events)  # last: its presence says the set is complete
    partial.rmdir()
    return events, outcomes


def arrays_of(examples: Examples) -> Arrays:
    return Arrays(x=examples.x.astype(np.float32), y=dict(examples.y), groups=examples.customer.astype(str))


def load_training_data(
    params: DataParams,
    progress: bool = False,
    say: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    cache: Path | None = None,
) -> TrainingData:
    """`cache`: the model cache a simulated log is kept in (the commands pass the configured one;
    None: the default, `cache_dir(None)`)."""
    if params.source == "synthetic":
        data = synthetic_arrays(params.customers or 300, params.seed)
        train, test = split_rows(data, params.test_fraction, params.seed)
        return TrainingData(train, None, summary={"test": test})
    if params.source == "seed":
        from model.seed_data import seed_arrays

        x26, y = seed_arrays(n_samples=params.customers or 10_000, seed=params.seed)  # one row per "customer"
        x = np.zeros((len(x26), N_FEATURES), dtype=np.float32)
        x[:, : x26.shape[1]] = x26  # the seed's 26 features are the registry's first 26; the rest stay 0
        data = Arrays(x=x, y={k: np.asarray(v, dtype=np.float32) for k, v in y.items()})
        train, test = split_rows(data, params.test_fraction, params.seed)
        return TrainingData(train, None, summary={"test": test})
    if params.source == "simulated":
        events, outcomes = simulated_log(
            params.customers or DEFAULT_CUSTOMERS,
            params.days or DEFAULT_DAYS,
            params.seed,
            cache=cache if cache is not None else cache_dir(None),
            progress=progress,
        )
        return _from_events(params, (str(events),), str(outcomes), progress, say)
    if params.source == "events":
        if not params.events or not params.outcomes:
            raise UsageError("training on events needs both --events PATH and --outcomes FILE")
        return _from_events(params, params.events, params.outcomes, progress, say)
    raise UsageError(
        f"unknown data source {params.source!r}: use simulated, seed, or --events with --outcomes"
    )


def _from_events(
    params: DataParams, events: tuple[str, ...], outcomes: str, progress: bool, say: Callable[[str], None]
) -> TrainingData:
    from model.owndata import BuildOptions, build_examples

    options = BuildOptions(
        validation_fraction=params.validation_fraction,
        test_fraction=params.test_fraction,
        cut_fraction=params.cut_fraction,
        holdout=params.holdout,
        max_train_rows=params.max_train_rows,
        on_error=params.on_error,
        allow_unknown_outcomes=params.allow_unknown_outcomes,
        workers=params.workers,
        scheduler=params.scheduler,
    )
    examples, build = build_examples(list(events), Path(outcomes), options, progress, say)
    train, validation = examples.where("train", after_cut=False), examples.where("validation")
    for name, part in (("training", train), ("validation", validation)):
        labels = part.y["churn_risk_30d"]
        known = labels[~np.isnan(labels)]
        if len(np.unique(known)) < 2:
            raise DataError(
                f"the {name} rows ({len(part):,}) have no {'churn' if not known.any() else 'stayer'} with a known "
                "30-day outcome: the log needs more customers, more churn, or more days"
            )
    every_instant = examples.where("train")
    return TrainingData(
        arrays_of(train),
        arrays_of(validation),
        examples,
        build,
        events,
        outcomes,
        examples.summary,
        arrays_of(every_instant) if len(every_instant) > len(train) else None,
    )
