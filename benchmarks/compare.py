"""Fashion-MNIST-LT IR 100: every method preset on one identical schedule, several seeds, one table.

Usage:
    python benchmarks/compare.py --data-root ../shared/data --out runs/compare \
        --table benchmarks/results/fmnist-lt-compare.md

Each run is an ordinary run folder (config, manifest, metrics, results); runs that already have a
results.json are not repeated, so an interrupted comparison continues where it stopped. The table
reports last-epoch test metrics, mean +- std over seeds; nothing is selected on the test split.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ccsam.config import resolve_config
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from summarize_runs import summarize  # noqa: E402

METHODS = ["ce", "ce-mixup", "focal", "ldam-drw", "balanced-softmax", "posthoc-la", "crt", "tau-norm", "mislas",
           "gcl", "sam", "imbsam", "ccsam"]


def schedule_overrides(preset: str, epochs: int, stage2_epochs: int) -> list[str]:
    """The shared schedule: stage 1 ``epochs`` with x0.1 decays at 80% and 90%, stage 2 where the method
    has one; LDAM's DRW switch moves with the first decay."""
    first, second = int(0.8 * epochs), int(0.9 * epochs)
    overrides = [f"stage1.epochs={epochs}", f"stage1.milestones=[{first}, {second}]", "stage1.warmup_epochs=2"]
    if resolve_config(preset).stage2.epochs:
        overrides.append(f"stage2.epochs={stage2_epochs}")
    if "ldam" in preset:
        overrides.append(f"stage1.loss.drw.start_epoch={first}")
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--table", default="benchmarks/results/fmnist-lt-compare.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--stage2-epochs", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    for method in args.methods:
        preset = f"fmnist-lt-{method}"
        for seed in args.seeds:
            run_path = out / f"{preset}-seed{seed}"
            if (run_path / "results.json").is_file():
                continue
            overrides = [f"data.root={args.data_root}", f"seed={seed}", "device=cpu",
                         *schedule_overrides(preset, args.epochs, args.stage2_epochs)]
            config = resolve_config(preset, overrides)
            if run_path.exists():  # an interrupted run: continue it
                results = train(config, RunDir.open(run_path), resume=True, progress=False)
            else:
                results = train(config, RunDir.create(run_path, config, ["compare.py", *overrides]), progress=False)
            print(f"{preset} seed {seed}: top-1 {100 * results['test']['top1']:.2f}", flush=True)
    wall = (time.perf_counter() - start) / 60
    runs = sorted(out.glob("fmnist-lt-*-seed*"))
    header = (
        f"# Fashion-MNIST-LT IR 100: method comparison\n\n"
        f"Command: `python benchmarks/compare.py --data-root ../shared/data --out {args.out} --seeds "
        f"{' '.join(map(str, args.seeds))} --epochs {args.epochs} --stage2-epochs {args.stage2_epochs}`\n\n"
        f"Machine: {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"this invocation's wall time {wall:.1f} min.\n\n"
        f"Schedule (all methods): small CNN (width 32), batch 64, SGD 0.9, lr 0.1, wd 2e-4, {args.epochs} stage-1 "
        f"epochs (warm-up 2, x0.1 at {int(0.8 * args.epochs)} and {int(0.9 * args.epochs)}), "
        f"{args.stage2_epochs} stage-2 epochs for two-stage methods. Last-epoch test metrics "
        f"(10,000 balanced test images), mean ± std over seeds.\n\n"
    )
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(header + summarize(runs))
    print(json.dumps({"table": args.table, "runs": len(runs), "minutes": round(wall, 1)}))


if __name__ == "__main__":
    main()
