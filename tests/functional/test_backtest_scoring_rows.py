"""In-process scores depend on a row's own features only: not on which rows share its call, their
number or order, TensorFlow's thread count, nor on a training run earlier in the same process
(model/server.py LocalPredictor). What a sharded backtest needs to give the same bytes for 1 and N
workers: the in-process run may have trained the default bundle first, a Dask worker never has."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from jobs.backtest.scorer import InProcessScorer
from model.server import BLOCK_ROWS
from tests.unit.test_trees import feature_rows

ROOT = Path(__file__).resolve().parents[2]


def scores(scorer: InProcessScorer, x: np.ndarray) -> list[dict]:
    return asyncio.run(scorer.score(x))


def test_a_row_scores_the_same_alone_in_any_group_and_any_order(tiny_bundle: Path) -> None:
    scorer = InProcessScorer.from_bundle_dir(tiny_bundle)
    x = feature_rows(301, 17).astype(np.float64)
    together = scores(scorer, x)
    # Sizes around the kernels' register blocks and SCORING_ROWS: before fixed blocks, rows in the
    # leftover of a call whose height was not a multiple of 8 (or a lone row) differed in the last bits.
    for size in (1, 2, 3, 7, 9, 63, BLOCK_ROWS + 1, 117):
        for start in (0, 5, 130):
            assert scores(scorer, x[start : start + size]) == together[start : start + size], (size, start)
    order = np.random.default_rng(3).permutation(len(x))
    shuffled = scores(scorer, x[order])
    assert [shuffled[int(np.flatnonzero(order == i)[0])] for i in range(len(x))] == together


def test_a_dask_worker_scores_as_a_process_that_trained_first(tiny_bundle: Path, tmp_path: Path) -> None:
    """An in-process backtest may train the default bundle first (training switches op determinism
    on for the rest of its process) and uses TensorFlow's default threads; a Dask worker never
    trained and has one thread. Both must give the same bytes."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # what model/training.py fit_model does
    x = feature_rows(200, 19).astype(np.float64)
    np.save(tmp_path / "rows.npy", x)
    here = scores(InProcessScorer.from_bundle_dir(tiny_bundle), x)
    program = (
        "import asyncio, json, sys, numpy as np\n"
        "from jobs.backtest.scorer import bundle_scorer\n"
        f"out = asyncio.run(bundle_scorer({str(tiny_bundle)!r}).score(np.load({str(tmp_path / 'rows.npy')!r})))\n"
        f"open({str(tmp_path / 'one.json')!r}, 'w').write(json.dumps(out))\n"
    )
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "one.json").read_text()) == json.loads(json.dumps(here))
