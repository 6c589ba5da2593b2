"""One head-only training step at iNaturalist 2018 sizes: plain CE vs CC-SAM stage 1 vs CC-SAM stage 2.

The step is what the engine's objectives do after the backbone (``ErmObjective``,
``CcsamStage1Objective``, ``CcsamStage2Objective`` on a ``Classifier`` whose backbone is the identity,
so the "images" are the ``[B, d]`` features): forward, loss, backward. Defaults are iNat's C = 8142
classes, ResNet-50's d = 2048 and B = 512. For each step the script reports the time (minimum, the
least disturbed by other work on a shared machine, and mean +- std of ``--repeats`` timed steps after
one warm-up, interleaved over the modes) and the peak memory growth of
one step, measured in a forked child per step as the growth of ``ru_maxrss`` over the step (glibc is told
to serve every block above 128 KiB with its own mmap, so freed tensors leave the resident set at once),
against the ``O(B^2 + B C + B d)`` bound of ``tests/training/test_many_classes_memory.py``.

Usage:
    python benchmarks/ccsam_many_classes.py                     # B 512, C 8142, d 2048, 1 thread
    python benchmarks/ccsam_many_classes.py --memory all        # memory only, one JSON line per step
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from ccsam.data.augment import MixedBatch
from ccsam.models import Classifier
from ccsam.training.objectives import CcsamStage1Objective, CcsamStage2Objective, ErmObjective

MODES = ("ce", "stage1", "stage1_mixup", "stage2")
BYTES_PER_ELEMENT = 4  # float32
#: Peak growth of one step must stay below 4 bytes x (BOUND_FACTOR (B^2 + B C + B d) + C d) + slack: the
#: C d term is the head's weight gradient that plain CE needs too; everything else must be O(B^2 + BC + Bd).
BOUND_FACTOR = 16
BOUND_SLACK_BYTES = 16 * 2**20


def memory_bound_bytes(batch: int, classes: int, dim: int) -> int:
    """The documented bound on the peak memory growth of one head-only step, in bytes."""
    scaled = BOUND_FACTOR * (batch * batch + batch * classes + batch * dim) + classes * dim
    return BYTES_PER_ELEMENT * scaled + BOUND_SLACK_BYTES


def build(batch: int, classes: int, dim: int, seed: int = 0) -> tuple[Classifier, MixedBatch, MixedBatch,
                                                                          torch.Tensor]:
    """A head on identity features, a batch (and its mixup version), long-tailed training counts.

    Every tensor is made in place (no transient copies), so the set-up does not raise the memory
    high-water mark above what stays allocated.
    """
    g = torch.Generator().manual_seed(seed)
    model = Classifier(torch.nn.Identity(), dim, classes)
    counts = torch.rand(classes, generator=g).pow_(4).mul_(1000).floor_().add_(2)
    labels = torch.multinomial(counts, batch, replacement=True, generator=g)
    features = torch.randn(batch, dim, generator=g)
    plain = MixedBatch(features, labels, labels, 1.0)
    mixed = MixedBatch(features, labels, labels.roll(1), 0.8)
    return model, plain, mixed, counts


def step(mode: str, model: Classifier, plain: MixedBatch, mixed: MixedBatch, counts: torch.Tensor) -> None:
    """Forward + backward of one head-only step of ``mode``."""
    if mode == "ce":
        out = ErmObjective()(model, plain)
    elif mode in ("stage1", "stage1_mixup"):
        batch = mixed if mode == "stage1_mixup" else plain
        out = CcsamStage1Objective(counts, flat_ratio=0.3, noise_scale=0.1)(model, batch)
    elif mode == "stage2":
        out = CcsamStage2Objective(counts, alpha=0.5, div=2.0, step=1.0)(model, plain)
    else:
        raise ValueError(f"unknown mode {mode!r} (valid: {', '.join(MODES)})")
    out.loss.backward()
    model.zero_grad(set_to_none=True)


def measure_memory(mode: str, batch: int, classes: int, dim: int) -> dict[str, float | int | str]:
    """In this process: peak resident-set growth of one step after set-up and a tiny warm-up step."""
    step(mode, *build(8, 5, 4))  # library initialisation is not part of the step (cheap if done already)
    parts = build(batch, classes, dim)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step(mode, *parts)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # KiB on Linux
    return {"mode": mode, "B": batch, "C": classes, "d": dim, "peak_growth_bytes": growth,
            "bound_bytes": memory_bound_bytes(batch, classes, dim)}


def memory_in_children(modes: tuple[str, ...], batch: int, classes: int, dim: int) -> list[dict]:
    """:func:`measure_memory` of each mode in its own forked child (its own high-water mark), one after
    another; the parent has imported torch and run the tiny warm-up steps already, so no child pays
    for them. Returns the children's results in ``modes`` order."""
    for mode in modes:
        step(mode, *build(8, 5, 4))
    results = []
    for mode in modes:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: measure, report through the pipe, leave without running atexit handlers
            os.close(read)
            try:
                os.write(write, json.dumps(measure_memory(mode, batch, classes, dim)).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not payload:
            raise RuntimeError(f"memory measurement of {mode!r} failed (wait status {status})")
        results.append(json.loads(payload))
    return results


def memory_in_child(batch: int, classes: int, dim: int) -> dict[str, dict]:
    """Every mode's :func:`measure_memory` from a fresh single-threaded process (``--memory all``),
    with glibc serving blocks above 128 KiB by mmap so that freed tensors leave the resident set."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="1")
    command = [sys.executable, os.path.abspath(__file__), "--memory", "all", "--batch", str(batch),
               "--classes", str(classes), "--dim", str(dim)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return {r["mode"]: r for r in map(json.loads, done.stdout.strip().splitlines())}


def time_steps(batch: int, classes: int, dim: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per step for every mode: one warm-up each, then ``repeats`` rounds interleaving the modes."""
    parts = build(batch, classes, dim)
    for mode in MODES:
        step(mode, *parts)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            start = time.perf_counter()
            step(mode, *parts)
            times[mode].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--classes", type=int, default=8142)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory", choices=(*MODES, "all"),
                        help="print memory measurements (one JSON line per mode) and exit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory:
        modes = MODES if args.memory == "all" else (args.memory,)
        for result in memory_in_children(modes, args.batch, args.classes, args.dim):
            print(json.dumps(result))
        return
    b, c, d = args.batch, args.classes, args.dim
    times = time_steps(b, c, d, args.repeats)
    memory = memory_in_child(b, c, d)
    cpu = platform.processor() or platform.machine()
    print(f"# head-only step, B {b}, C {c}, d {d}: torch {torch.__version__}, {cpu}, "
          f"{args.threads} thread(s), fp32, {args.repeats} timed repeats after 1 warm-up")
    print()
    print("| step | ms min | ms mean +- std | min / CE min | peak growth MiB | bound MiB | "
          "(growth - 4 C d) / 4 (B^2 + BC + Bd) |")
    print("|---|---|---|---|---|---|---|")
    scale = BYTES_PER_ELEMENT * (b * b + b * c + b * d)
    head_grad = BYTES_PER_ELEMENT * c * d
    fastest_ce = min(times["ce"])
    for mode in MODES:
        fastest, mean = min(times[mode]), statistics.mean(times[mode])
        std = statistics.stdev(times[mode]) if args.repeats > 1 else 0.0
        grown = int(memory[mode]["peak_growth_bytes"])
        bound = int(memory[mode]["bound_bytes"])
        print(f"| {mode} | {1000 * fastest:.0f} | {1000 * mean:.0f} +- {1000 * std:.0f} | "
              f"{fastest / fastest_ce:.2f} | {grown / 2**20:.1f} | {bound / 2**20:.0f} | "
              f"{(grown - head_grad) / scale:.1f} |")

if __name__ == "__main__":
    main()
