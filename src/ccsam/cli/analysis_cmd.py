"""``ccsam probe | landscape | sharpness | report``: flatness analyses of run folders and the report."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ccsam.analysis.runs import landscape_run, probe_run, sharpness_run
from ccsam.cli.argtypes import SEED_MAX, int_in_range, number_in_range
from ccsam.reporting.report import build_report
from ccsam.training.run_dir import RunDir, RunDirError

#: Defaults of the analyses' options, shown in ``--help`` and quoted by README.md.
SIGMAS = (1e-3, 5e-3, 1e-2, 5e-2)
DRAWS = 5
POINTS = 51
SPAN = 1.0
ITERATIONS = 20
MAX_PER_CLASS = 128

_SEED = int_in_range(0, SEED_MAX)


def _runs(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--force", action="store_true", help="replace an existing analysis file")
    p.add_argument("--data-root", default=None, help="where the data set lives now, if it moved")
    p.add_argument("--logit-scale", type=number_in_range(0, above=True), default=None,
                   help="multiplier of the head's logits analysed, > 0 (default: the run's eval.logit_scale, as "
                        "its evaluation; LDAM / GCL cosine heads need it)")
    p.add_argument("--threads", type=int_in_range(1), default=None, metavar="N",
                   help="torch CPU threads, >= 1: runtime.threads for this analysis (speed only; results may differ "
                   "by float rounding; default: the run's runtime.threads)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    probe = sub.add_parser("probe", help="loss under random weight perturbation (same draws for every run)",
                           description="For each run: training / test loss change under Gaussian weight noise, "
                           "overall and per class group, over a sigma sweep; writes RUN_DIR/analysis/probe.json.")
    _runs(probe)
    probe.add_argument("--sigmas", type=number_in_range(0), nargs="+", default=list(SIGMAS), metavar="SIGMA",
                       help="noise scales, each >= 0 (default: " + " ".join(f"{s:g}" for s in SIGMAS) + ")")
    probe.add_argument("--draws", type=int_in_range(1), default=DRAWS,
                       help=f"noise draws per sigma, >= 1 (default: {DRAWS})")
    probe.add_argument("--mode", choices=("isotropic", "magnitude"), default="isotropic",
                       help="noise std sigma, or sqrt(sigma^2 w^2 + eps^2) (Jiang et al. 2020) (default: isotropic)")
    probe.add_argument("--eps", type=number_in_range(0), default=0.0,
                       help="magnitude mode: additive floor, >= 0 (default: 0; spec: 1e-3)")
    probe.add_argument("--seed", type=_SEED, default=0, help="seed of the draws, >= 0 (default: 0)")
    landscape = sub.add_parser("landscape", help="1-D loss curve along a filter-normalised random direction",
                               description="For each run: training loss at w + a d for a in [-span, span], d a "
                               "filter-normalised Gaussian direction (BN and biases zeroed; same seed for every "
                               "run); writes RUN_DIR/analysis/landscape.json.")
    _runs(landscape)
    landscape.add_argument("--points", type=int_in_range(1), default=POINTS,
                           help=f"points on the curve, >= 1 (default: {POINTS})")
    landscape.add_argument("--span", type=number_in_range(0, above=True), default=SPAN,
                           help=f"the curve covers [-span, span], span > 0 (default: {SPAN:g})")
    landscape.add_argument("--seed", type=_SEED, default=0, help="seed of the direction, >= 0 (default: 0)")
    landscape.add_argument("--surface", type=int_in_range(2), default=None, metavar="POINTS",
                           help="also the 2-D loss surface on a POINTS x POINTS grid, POINTS >= 2 (contour in "
                           "the report; default: none)")
    sharpness = sub.add_parser("sharpness", help="top Hessian eigenvalue of every class's loss",
                               description="For each run: power iteration on Hessian-vector products of each "
                               "class's training loss, for the head alone and the whole model; writes "
                               "RUN_DIR/analysis/sharpness.json.")
    _runs(sharpness)
    sharpness.add_argument("--iterations", type=int_in_range(1), default=ITERATIONS,
                           help=f"power-iteration steps per class at most, >= 1 (default: {ITERATIONS})")
    sharpness.add_argument("--max-per-class", type=int_in_range(1), default=MAX_PER_CLASS,
                           help=f"training images per class at most, >= 1 (default: {MAX_PER_CLASS})")
    report = sub.add_parser("report", help="Markdown report with tables and figures over run folders",
                            description="Tables (mean ± std over seeds, grouped by run name and a hash of the "
                            "config without the seed; folders that are not finished runs are skipped and named; "
                            "runs on different data sets are refused) and PNG figures: "
                            "per-class accuracy against class size, reliability diagrams, confusion matrices and, "
                            "where analyses exist, probe spreads, landscapes and per-class sharpness.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", required=True, help="folder to create for report.md and figures/")
    report.add_argument("--title", default="ccsam report")


def _open_runs(paths: Sequence[str]) -> list[RunDir]:
    """Every run folder, checked before the first analysis starts (a typo in the last one should not
    surface after the first has run); a ``key=value`` argument gets the hint that these commands take
    options, not config overrides."""
    for path in paths:
        if "=" in path and not Path(path).exists():
            key = path.split("=", 1)[0]
            hint = " (use --threads N)" if key in ("runtime.threads", "threads") else ""
            raise RunDirError(f"'{path}' is not a run folder: analysis commands take no config overrides, "
                              f"only the options in their --help{hint}")
    return [RunDir.open(path) for path in paths]


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.command == "report":
        print(build_report([Path(p) for p in args.run_dirs], Path(args.out), title=args.title))
        return 0
    for run_dir in _open_runs(args.run_dirs):
        if args.command == "probe":
            written = probe_run(run_dir, sigmas=args.sigmas, draws=args.draws, mode=args.mode, seed=args.seed,
                                eps=args.eps, force=args.force, data_root=args.data_root,
                                logit_scale=args.logit_scale, threads=args.threads)
        elif args.command == "landscape":
            written = landscape_run(run_dir, points=args.points, span=args.span, seed=args.seed,
                                    surface_points=args.surface, force=args.force, data_root=args.data_root,
                                    logit_scale=args.logit_scale, threads=args.threads)
        else:
            written = sharpness_run(run_dir, iterations=args.iterations, max_per_class=args.max_per_class,
                                    force=args.force, data_root=args.data_root, logit_scale=args.logit_scale,
                                    threads=args.threads)
        print(written)
    return 0
