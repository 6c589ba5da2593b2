"""``ccsam tune``: search each method's hyper-parameters on the validation split, then train the choice
with N seeds and evaluate the test split once per seed (``ccsam.tuning``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ccsam.data.build import DATA_ROOT_ENV

_EPILOG = """The study file (YAML) declares the budget (`trials`, the same for every method), the final
`seeds`, the proxy schedule (`search_overrides`), and per method a preset and a typed `space`, e.g.
  methods:
    ce:
      preset: fmnist-lt-ce
      space:
        stage1.lr: {type: float, low: 0.02, high: 0.3, log: true}
    sam:
      preset: fmnist-lt-sam
      space:
        stage1.optimizer.rho: {type: float, low: 0.02, high: 1.0, log: true}
Run it again to continue a killed study (SQLite storage in STUDY_DIR/study.db). With --records DIR the
study's JSON records (spec, spaces, trials, choices, per-seed results) are copied into DIR after every
phase: commit DIR, and on a new machine the same command rebuilds STUDY_DIR from it first (finished
trials and seeds are not trained again)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune methods on the validation split (Optuna), then N seeds on the test split",
        description="Search phase: Optuna TPE trials on the proxy schedule, scored by validation balanced "
        "accuracy every epoch (median / successive-halving pruning); the test split is never evaluated. "
        "Final phase: the best trial's values on the full schedule, one run per seed, test evaluated once "
        "per seed. Everything is recorded in STUDY_DIR. Needs `pip install 'ccsam[tune]'`.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, metavar="FILE", help="study file (YAML)")
    p.add_argument("--study-dir", required=True, metavar="DIR", help="study folder (created or continued)")
    p.add_argument("--method", action="append", default=None, metavar="NAME",
                   help="only this method (repeatable; default: every method of the study file)")
    p.add_argument("--phase", choices=("search", "final", "all"), default="all",
                   help="search only, final only (needs the search's choice), or both (default)")
    p.add_argument("--records", default=None, metavar="DIR",
                   help="keep the study's JSON records in DIR (copied after every phase) and rebuild what "
                   "STUDY_DIR lacks from them before starting")
    p.add_argument("--data-root", default=None, help=f"folder holding the data sets (sets ${DATA_ROOT_ENV})")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from ccsam.tuning import export_records, load_study_spec, restore_study, run_final, run_search

    if args.data_root:
        os.environ[DATA_ROOT_ENV] = str(Path(args.data_root).expanduser())
    spec = load_study_spec(args.spec)
    methods = args.method or list(spec.methods)
    if args.records and Path(args.records).is_dir():
        restored = restore_study(spec, args.records, args.study_dir)
        if any(restored.values()):
            print(f"restored from {args.records}: {restored['files']} record files, {restored['trials']} trials, "
                  f"{restored['seeds']} finished seeds")
    try:
        for method in methods:
            if args.phase in ("search", "all"):
                choice = run_search(spec, args.study_dir, method)
                print(f"{method}: chose trial {choice['trial']} (validation {100 * choice['validation']:.2f}) "
                      f"{choice['params']}")
                if args.records:
                    export_records(args.study_dir, args.records)
            if args.phase in ("final", "all"):
                final = run_final(spec, args.study_dir, method)
                tops = [100 * r["test"]["top1"] for r in final["per_seed"].values()]
                print(f"{method}: test top-1 per seed {', '.join(f'{t:.2f}' for t in tops)}")
                if args.records:
                    export_records(args.study_dir, args.records)
    finally:  # an interrupted or failed phase is recorded up to its last finished trial or seed
        if args.records and Path(args.study_dir).is_dir():
            export_records(args.study_dir, args.records)
    return 0
