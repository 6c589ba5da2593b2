"""CC-SAM at iNaturalist's 8,142 classes: one head-only step stays O(B^2 + B C + B d) in memory.

Each step (plain CE for reference, CC-SAM stage 1 with and without mixup targets, stage 2) runs in its
own forked child of one single-threaded process (``benchmarks/ccsam_many_classes.py --memory all``),
which reports the growth of its peak resident set over one forward + backward after set-up. The
bound is ``4 bytes x (16 (B^2 + B C + B d) + C d) + 16 MiB``: the ``C d`` term is the head's weight
gradient (plain CE needs it too), the factor 16 leaves about 2x room over the measured 6-9 ``[B, C]``
float buffers alive at the peak, the 16 MiB absorb allocator noise. C stays at 8,142; B = 128 and
d = 256 keep the test to a few seconds (the benchmark runs B = 512, d = 2048).

The sizes are chosen so that the bound can fail: one copy of the head per class present in the batch
(``P C d`` floats) would need several times the bound, a ``C x C x d`` tensor thousands of times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "ccsam_many_classes.py"
B, C, D = 128, 8142, 256
MODES = ("ce", "stage1", "stage1_mixup", "stage2")


def _bound_bytes(batch: int, classes: int, dim: int) -> int:
    """The documented bound, written out independently of the benchmark's constant."""
    return 4 * (16 * (batch * batch + batch * classes + batch * dim) + classes * dim) + 16 * 2**20


@pytest.fixture(scope="module")
def measurements() -> dict[str, dict]:
    """One child process imports torch once and forks a measuring child per step."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, str(SCRIPT), "--memory", "all", "--batch", str(B), "--classes", str(C),
               "--dim", str(D)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {r["mode"]: r for r in map(json.loads, done.stdout.strip().splitlines())}


def test_bound_would_catch_per_class_head_copies() -> None:
    # A long-tailed batch of 128 from 8,142 classes holds dozens of classes; 16 copies of W exceed the bound.
    assert 16 * 4 * C * D > _bound_bytes(B, C, D)
    assert 4 * C * C * D > 500 * _bound_bytes(B, C, D)


@pytest.mark.parametrize("mode", MODES)
def test_one_head_step_stays_within_the_bound(measurements: dict[str, dict], mode: str) -> None:
    result = measurements[mode]
    assert (result["B"], result["C"], result["d"]) == (B, C, D)
    growth = result["peak_growth_bytes"]
    assert growth > 4 * C * D // 2, "the measurement must at least see the head's weight gradient"
    bound = _bound_bytes(B, C, D)
    assert growth <= bound, f"{mode}: {growth / 2**20:.1f} MiB > {bound / 2**20:.1f} MiB"
    assert result["bound_bytes"] == _bound_bytes(B, C, D)  # the benchmark states the same bound
