"""`plumbing.parallel`: shard work in process or on a local Dask cluster, same results, killed
workers retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from plumbing.parallel import Engine, map_shards
from tests.shard_tasks import fail_on, square, square_but_die_once


def test_in_process_and_on_two_dask_workers_give_the_same_results_in_shard_order() -> None:
    items = list(range(12))
    assert map_shards(square, items, Engine(workers=1)) == [i * i for i in items]
    assert map_shards(square, items, Engine(workers=2)) == [i * i for i in items]


def test_a_worker_killed_mid_shard_is_replaced_and_its_shard_runs_again(tmp_path: Path) -> None:
    items = [(i, str(tmp_path)) for i in range(6)]
    assert map_shards(square_but_die_once, items, Engine(workers=2)) == [i * i for i in range(6)]
    assert (tmp_path / "died-3").exists()  # it did die once


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_shard_raises_its_own_error(workers: int) -> None:
    with pytest.raises(ValueError, match="shard 2 is broken"):
        map_shards(fail_on, list(range(4)), Engine(workers=workers))
