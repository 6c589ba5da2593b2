"""The CC-SAM talk's analyses on Fashion-MNIST-LT IR 100 (CPU), on the comparison's schedule.

1. Motivation: random weight perturbation, 1-D landscapes and per-class sharpness of CE, LDAM-DRW and
   CC-SAM (the seed-0 runs of benchmarks/compare.py; test metrics over all its seeds).
2. Naive flattening: SWA, SN, GP and MP applied in stage 1 of CE and of LDAM-DRW.
3. Ablation: CC-SAM's class-conditional perturbation with stage1.radius none / dir_only / mag_only / ccsam
   (noise_scale 1e-2, the first release's value, so that the perturbation is not negligible).

Usage:
    python benchmarks/analysis_fmnist.py --compare-runs runs/compare --out runs/analysis \
        --reports benchmarks/results/analysis
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccsam.cli.main import main as ccsam

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import schedule_overrides  # noqa: E402

FLATTENING = {"swa": ["stage1.swa=true"], "sn": ["stage1.spectral_norm=true"],
              "gp": ["stage1.flattening=gp"], "mp": ["stage1.flattening=mp"]}
ABLATION = ["none", "dir_only", "mag_only", "ccsam"]


def _train(preset: str, name: str, out: Path, extra: list[str], args: argparse.Namespace) -> Path:
    run = out / name
    if not (run / "results.json").is_file():
        overrides = [f"data.root={args.data_root}", "device=cpu", f"name={name}",
                     *schedule_overrides(preset, args.epochs, args.stage2_epochs), *extra]
        if ccsam(["train", "--preset", preset, "--out", str(run), "--no-progress", *overrides]) != 0:
            raise SystemExit(f"training {name} failed")
    return run


def _analyse(runs: list[Path]) -> None:
    for command, options in (("probe", ["--draws", "5"]), ("landscape", []),
                             ("sharpness", ["--iterations", "15", "--max-per-class", "64"])):
        todo = [str(r) for r in runs if not (r / "analysis" / f"{command}.json").is_file()]
        if todo and ccsam([command, *todo, *options]) != 0:
            raise SystemExit(f"{command} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--compare-runs", default="runs/compare")
    parser.add_argument("--out", default="runs/analysis")
    parser.add_argument("--reports", default="benchmarks/results/analysis")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--stage2-epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--parts", nargs="+", default=["motivation", "flattening", "ablation"])
    args = parser.parse_args()
    out, reports, compare = Path(args.out), Path(args.reports), Path(args.compare_runs)
    if "motivation" in args.parts:
        runs = sorted(p for m in ("ce", "ldam-drw", "ccsam") for p in compare.glob(f"fmnist-lt-{m}-seed*"))
        _analyse([r for r in runs if r.name.endswith("-seed0")])  # analyses on seed 0; the table uses all seeds
        ccsam(["report", *map(str, runs), "--out", str(reports / "motivation"),
               "--title", "Motivation: are long-tailed models in sharp minima? (Fashion-MNIST-LT IR 100)"])
    if "flattening" in args.parts:
        runs = [p for m in ("ce", "ldam-drw") for p in sorted(compare.glob(f"fmnist-lt-{m}-seed0"))]
        for base in ("ce", "ldam-drw"):
            for op, extra in FLATTENING.items():
                runs.append(_train(f"fmnist-lt-{base}", f"fmnist-lt-{base}+{op}", out / "flattening", extra, args))
        ccsam(["report", *map(str, runs), "--out", str(reports / "flattening"),
               "--title", "Naive flattening on DLTR methods (stage 1, seed 0; Fashion-MNIST-LT IR 100)"])
    if "ablation" in args.parts:
        runs = []
        for mode in ABLATION:
            for seed in args.seeds:
                extra = ["stage1.noise_scale=1e-2", f"stage1.radius={mode}", f"seed={seed}"]
                runs.append(_train("fmnist-lt-ccsam", f"ccsam-{mode}", out / "ablation" / f"seed{seed}", extra, args))
        ccsam(["report", *map(str, runs), "--out", str(reports / "ablation"),
               "--title", "CC-SAM ablation: magnitude and direction of the class-conditional perturbation"])


if __name__ == "__main__":
    main()
