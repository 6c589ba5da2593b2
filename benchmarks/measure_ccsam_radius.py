"""How large is the CC-SAM radius the tuned study trained with? The rho of a magnitude-matched dir_only ablation.

The issue-12 study's `radius-dir_only` row fixes ``|eps_{c,t}| = 1`` (the slides' "fixed magnitude 1"), while
the tuned closed-form radius ``rho_c = s k^(1/4) sqrt(||theta|| / (2 ||g_c||)) (n_c - 1)^(-1/4)`` is set by
``noise_scale`` s = 4.8e-4: that row changes the size of the perturbation as well as its shape across
classes. This script trains stage 1 of the tuned `ccsam-released` configuration (seed 0, training split only:
no validation or test metric is read) and records every radius the head perturbation uses, per sample and
per head tensor (W and b), at every step. Declared before measuring: the matched constant is the mean over
all of them (steps, samples, both tensors), so that the average perturbation a training sample sees is the
same and only its spread over classes and steps differs. The output also lists the per-class and per-tensor
means.

Usage:
    python benchmarks/measure_ccsam_radius.py --data-root ../shared/data --out benchmarks/results/...json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import ccsam.method.head as head_module
from ccsam.data.build import DATA_ROOT_ENV
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer
from ccsam.tuning import load_study_spec
from ccsam.tuning.study import final_run_config, migrated_params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fmnist_tuned_study import RECORDS, _spec_tree  # noqa: E402

METHOD = "ccsam-released"


class RadiusLog:
    """Sums of the radii the head perturbation computed, per class and per call site (W first, then b).

    A sample's class is read from its training count ``n_i`` (the radius's third argument), which identifies
    the class when every class has its own count, as on an exponential long-tailed profile."""

    def __init__(self, class_counts: list[int]) -> None:
        if len(set(class_counts)) != len(class_counts):
            raise ValueError("classes with equal training counts cannot be told apart by their radius")
        self.class_counts = torch.tensor(class_counts, dtype=torch.float64)
        self.sums = torch.zeros(2, len(class_counts), dtype=torch.float64)
        self.counts = torch.zeros(2, len(class_counts), dtype=torch.float64)
        self.calls = 0

    def wrap(self, radius_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def recorded(*args: Any, **kwargs: Any) -> torch.Tensor:
            rho = radius_fn(*args, **kwargs)
            tensor = self.calls % 2  # class_conditional_logits asks for W's radius, then b's
            sample_counts = torch.as_tensor(args[2], dtype=torch.float64).reshape(-1, 1)
            labels = (sample_counts == self.class_counts).double().argmax(1)
            self.sums[tensor].index_add_(0, labels, rho.detach().double().reshape(-1))
            self.counts[tensor].index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
            self.calls += 1
            return rho

        return recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default=None, help=f"sets ${DATA_ROOT_ENV}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="measure the first N epochs (default: all of stage 1)")
    parser.add_argument("--out", required=True, help="JSON file for the measured radii")
    args = parser.parse_args()
    if args.data_root:
        os.environ[DATA_ROOT_ENV] = str(Path(args.data_root).expanduser())
    spec = load_study_spec(_spec_tree(False))
    choice = json.loads((RECORDS / METHOD / "choice.json").read_text())
    params = migrated_params(choice["params"])
    cfg = final_run_config(spec, METHOD, params, args.seed, [], "radius-probe")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, RunDir.create(Path(tmp) / "run", cfg, sys.argv), progress=False)
        log = RadiusLog(trainer.data.class_counts.tolist())
        head_module.ccsam_radius = log.wrap(head_module.ccsam_radius)  # type: ignore[assignment]
        epochs = cfg.stage1.epochs if args.epochs is None else min(args.epochs, cfg.stage1.epochs)
        trainer.fit(stop_at=epochs)  # stage 1 only; no evaluation of the test split
    if log.calls == 0:
        sys.exit("the CC-SAM radius was never computed: the configuration does not perturb the head")
    overall = float(log.sums.sum() / log.counts.sum())
    result = {
        "command": "python benchmarks/measure_ccsam_radius.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()} / {os.cpu_count()} CPUs, torch {torch.__version__}, device {cfg.device}",
        "method": METHOD,
        "seed": args.seed,
        "params": params,
        "epochs_measured": epochs,
        "radius_calls": log.calls,
        "matched_rho": overall,
        "rule": "mean over stage-1 steps, training samples and both head tensors (W, b) of rho_{y_i,t}",
        "mean_by_tensor": {"W": float(log.sums[0].sum() / log.counts[0].sum()),
                           "b": float(log.sums[1].sum() / log.counts[1].sum())},
        "mean_by_class": {"W": (log.sums[0] / log.counts[0]).tolist(), "b": (log.sums[1] / log.counts[1]).tolist()},
        "samples_by_class": log.counts[0].tolist(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("matched_rho", "mean_by_tensor")}, indent=2))


if __name__ == "__main__":
    main()
