"""Offline work over customer shards, on Dask: one engine for backtest, tune and training examples.

Everything offline (a backtest, tune's backtest pass, training examples) is independent per
customer, so a log split by customer hash (`features.eventfile.customer_shard`) is folded shard by
shard with the same code a single process runs, and the results are merged in a fixed order. This
module only runs a function over shards:

- `workers == 1` and no scheduler: in this process, one shard after another, no cluster (what the
  commands did before Dask, and what the tests exercise most).
- otherwise on `dask.distributed`: the cluster at `scheduler` (`--scheduler ADDRESS` or
  `CHURN_DASK_SCHEDULER`, e.g. a cluster on ECS/Fargate started with dask-cloudprovider), or an
  embedded `LocalCluster` of `workers` processes with one thread each (the model in process is
  CPU-bound Python and TensorFlow: processes, not threads, and one intra-op thread per process so
  two workers do not fight over two cores).

A worker process that dies mid-task (killed, out of memory) is replaced by its nanny and Dask runs
its task again elsewhere; shard functions are pure (same shard in, same result out), so a retried
shard changes nothing. Results come back in shard order whatever order they finished in.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

# Each worker process: one thread for TensorFlow and BLAS (the cluster has one process per core).
WORKER_ENV = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def default_workers() -> int:
    """One worker process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Engine:
    """Where shard work runs: `workers` local processes, or an existing cluster's `scheduler`."""

    workers: int = 1
    scheduler: str | None = None

    @property
    def in_process(self) -> bool:
        return self.workers <= 1 and not self.scheduler

    def describe(self) -> str:
        if self.scheduler:
            return f"Dask cluster at {self.scheduler}"
        if self.in_process:
            return "in process"
        return f"{self.workers} local Dask worker processes"


def map_shards(
    function: Callable[[T], R],
    items: Sequence[T],
    engine: Engine,
    *,
    desc: str = "shards",
    progress: bool | None = None,
) -> list[R]:
    """`[function(item) for item in items]`, on `engine`, in the items' order, with a progress bar
    over shards. `function` must be importable by name (a module-level function) and its items and
    results picklable. The first shard that raises stops the job and its exception is raised here."""
    show = sys.stderr.isatty() if progress is None else progress
    if engine.in_process:
        results: list[R] = []
        for item in tqdm(items, desc=desc, unit="shard", file=sys.stderr, disable=not show):
            results.append(function(item))
        return results
    with _client_for(engine) as client:
        from distributed import as_completed

        # A worker process has no logging set up: structlog's default would print every INFO line
        # (an "alert published" per alert) that this process was told to keep quiet.
        level = logging.getLogger().getEffectiveLevel()
        task = functools.partial(_at_log_level, function, level)
        futures = client.map(task, list(items), pure=False)
        try:
            with tqdm(total=len(futures), desc=desc, unit="shard", file=sys.stderr, disable=not show) as bar:
                for future in as_completed(futures):
                    if future.status == "error":
                        future.result()  # raises the shard's exception, with its traceback
                    bar.update(1)
            gathered: list[R] = client.gather(futures)
            return gathered
        finally:
            client.cancel(futures)


# Clusters kept open by `started` for the map_shards calls of one job, by engine.
_started: dict[Engine, Any] = {}


@contextlib.contextmanager
def started(engine: Engine) -> Iterator[None]:
    """One cluster for every `map_shards` call on `engine` inside the block (a job that reads, then
    folds, would otherwise start a cluster per step: seconds of process start-up and imports each).
    Enter it outside a running event loop (e.g. through `asyncio.to_thread`); nothing to do in process."""
    if engine.in_process or engine in _started:
        yield
        return
    with _client(engine) as client:
        _started[engine] = client
        try:
            yield
        finally:
            del _started[engine]


@contextlib.contextmanager
def _client_for(engine: Engine) -> Iterator[Any]:
    if engine in _started:
        yield _started[engine]
    else:
        with _client(engine) as client:
            yield client


def _at_log_level(function: Callable[[T], R], level: int, item: T) -> R:
    """Run `function(item)` in a worker process with its logs filtered at the caller's level."""
    import structlog

    if logging.getLogger().getEffectiveLevel() != level or not structlog.is_configured():
        logging.getLogger().setLevel(level)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    return function(item)


@contextlib.contextmanager
def _client(engine: Engine) -> Iterator[Any]:
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - the model extra brings it
        raise RuntimeError(
            f"running on {engine.describe()} needs Dask ({exc.name} missing): pip install -e '.[model]', "
            "or pass --workers 1"
        ) from None
    # Clients are closed explicitly, not used as context managers: `with Client` sets a context
    # variable that must be reset in the same context, and `started` may open and close in two threads.
    if engine.scheduler:
        client = Client(engine.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    with (
        _quiet_dask_logs(),
        LocalCluster(
            n_workers=engine.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,  # no spilling or pausing: a shard's memory is bounded by its size, not by Dask
            env=WORKER_ENV,
            silence_logs=logging.ERROR,
        ) as cluster,
    ):
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()


@contextlib.contextmanager
def _quiet_dask_logs() -> Iterator[None]:
    """Dask logs every worker start and stop at INFO and warns when a worker is restarted; the
    progress bar says what matters, and a killed worker's task is retried without our help."""
    loggers = [
        logging.getLogger(name)
        for name in (
            "distributed",
            "distributed.nanny",
            "distributed.scheduler",
            "distributed.worker",
            "distributed.core",
        )
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
