"""``ccsam train``: preset + overrides -> a new run folder, or ``--resume`` an existing one."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ccsam.config import DEFAULT_PRESET, known_keys, resolve_config
from ccsam.distributed import is_main
from ccsam.distributed.launch import shared_path, torchrun_session
from ccsam.errors import CcsamError, ConfigError
from ccsam.reporting import format_results_table
from ccsam.training.run_dir import RunDir, default_run_path
from ccsam.training.trainer import train

_EPILOG = """overrides: KEY=VALUE with dotted keys, checked against the config schema, e.g.
  ccsam train --preset fmnist-lt-ccsam stage1.epochs=5 stage1.flat_ratio=0.5 seed=1
sections: {sections}
`ccsam presets --show NAME` prints every key of a preset with its value."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    sections = ", ".join(k for k in known_keys() if "." not in k)
    p = sub.add_parser(
        "train",
        help="train a preset (default: digits-lt, CPU, about a minute)",
        description="Train one run: stage 1 (ERM or CC-SAM), then the optional CC-SAM stage 2. "
        "Prints the last-epoch test many/medium/few table.",
        epilog=_EPILOG.format(sections=sections),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=None, help=f"preset name or YAML file (default: {DEFAULT_PRESET})")
    p.add_argument("--data-root", default=None, help="folder that holds the data set (sets data.root)")
    p.add_argument("--data-cache", default=None, metavar="FILE",
                   help="train from a `ccsam data export` file instead of the data set (sets data.cache)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (sets runtime.compile)")
    p.add_argument("--out", default=None, help="run folder to create (default: <out_dir>/<name>-<time>)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (see below)")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Train (or resume) one run; under torchrun every rank runs this and rank 0 writes and prints."""
    if args.resume:
        if args.preset or args.overrides or args.out or args.data_root or args.data_cache or args.compile:
            raise ConfigError(
                "--resume takes the run folder's own config; drop --preset/--out/--data-root/overrides"
            )
        run_dir = RunDir.open(args.resume)
        config = run_dir.load_config()
        with torchrun_session(config.device):
            results = train(config, run_dir, resume=True, progress=not args.no_progress)
            _print_results(results, run_dir)
        return 0
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={Path(args.data_root).expanduser()}")
    if args.data_cache:
        overrides.append(f"data.cache={Path(args.data_cache).expanduser()}")
    if args.compile:
        overrides.append("runtime.compile=true")
    config = resolve_config(args.preset, overrides)
    with torchrun_session(config.device):
        path = shared_path(
            lambda: RunDir.create(args.out or default_run_path(config), config, ["ccsam", *argv]).path
        )
        run_dir = RunDir(path)
        if is_main():
            print(f"run folder: {run_dir.path}")
        try:
            results = train(config, run_dir, progress=not args.no_progress)
        except (CcsamError, FileNotFoundError):
            if is_main():
                run_dir.remove_if_unstarted()  # a set-up error leaves no half-made run folder behind
            raise
        _print_results(results, run_dir)
    return 0


def _print_results(results: dict, run_dir: RunDir) -> None:
    if is_main():
        print(format_results_table(results))
        print(f"results: {run_dir.results_path}")
