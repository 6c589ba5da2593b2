"""``ccsam eval RUN_DIR``: re-evaluate a run's last checkpoint on its test (or validation) split."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ccsam.reporting import format_results_table
from ccsam.training.evaluate_run import check_eval_overrides, evaluate_run
from ccsam.training.run_dir import RunDir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run folder's last checkpoint",
                       description="Rebuild a run's data split and model from its folder, evaluate the "
                       "last checkpoint, and print the many/medium/few table.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--data-root", default=None, help="where the data set lives now, if it moved")
    p.add_argument("overrides", nargs="*", metavar="eval.KEY=VALUE",
                   help="change the prediction rule, e.g. eval.posthoc_tau=1 or eval.tau_norm=0.7; "
                   "runtime.threads=N sets the torch CPU threads (speed only); no other key may change")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    check_eval_overrides(args.overrides)  # before reading the run folder
    run_dir = RunDir.open(args.run_dir)
    results = evaluate_run(run_dir, split=args.split, data_root=args.data_root, eval_overrides=args.overrides)
    print(format_results_table(results, split=args.split))
    return 0
