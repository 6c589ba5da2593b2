"""``ccsam train``: preset + overrides -> a new run folder, or ``--resume`` an existing one."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ccsam.atomic_io import check_writable
from ccsam.config import DEFAULT_PRESET, known_keys, resolve_config
from ccsam.config.schema import RunConfig
from ccsam.config.unions import UNIONS
from ccsam.data.build import resolve_data_root
from ccsam.distributed import is_main
from ccsam.distributed.launch import shared_path, torchrun_session
from ccsam.errors import ConfigError, InterruptedRun
from ccsam.reporting import format_results_table
from ccsam.training.run_dir import RunDir, default_run_path
from ccsam.training.stage1_reuse import check_stage1_source, start_from_stage1
from ccsam.training.trainer import Trainer

_EPILOG = """overrides: KEY=VALUE with dotted keys, checked against the config schema, anywhere, e.g.
  ccsam train --preset fmnist-lt-ccsam stage1.epochs=5 --no-progress stage1.flat_ratio=0.5 seed=1
sections: {sections}
choices with their own fields: {unions}
  a name alone takes the choice's defaults; its fields follow in either order, e.g.
  stage1.optimizer=sam stage1.optimizer.rho=0.1 or stage2.method=retrain stage2.method.reinit_head=true;
  a mapping sets the choice and its fields at once: 'stage2.method={{name: retrain, reinit_head: true}}'.
`ccsam presets --show NAME` prints every key of a preset with its value.
A NaN / infinite loss stops the run (exit 3) unless runtime.on_nonfinite=skip."""

_FILE_DATASETS = ("cifar10", "cifar100", "fashion_mnist")


def add_parser(sub: argparse._SubParsersAction) -> None:
    sections = ", ".join(k for k in known_keys() if "." not in k)
    p = sub.add_parser(
        "train",
        help="train a preset (default: digits-lt, CPU, about a minute)",
        description="Train one run: stage 1 (ERM or CC-SAM), then the optional CC-SAM stage 2. "
        "Prints the last-epoch test many/medium/few table.",
        epilog=_EPILOG.format(sections=sections, unions=", ".join(UNIONS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", default=None, help=f"preset name or YAML file (default: {DEFAULT_PRESET})")
    p.add_argument("--data-root", default=None,
                   help="folder that holds the data set (sets data.root, stored as an absolute path); with "
                   "--resume: where the data set lives now, checked against the run's split manifest")
    p.add_argument("--data-cache", default=None, metavar="FILE",
                   help="train from a `ccsam data export` file instead of the data set (sets data.cache); "
                   "with --resume: where the run's cache file is now, checked against its split manifest")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (sets runtime.compile)")
    p.add_argument("--out", default=None, help="run folder to create (default: <out_dir>/<name>-<time>)")
    p.add_argument("--overwrite", action="store_true",
                   help="reuse --out if it is a run folder that never completed an epoch "
                   "(never one with results)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run (one with no completed epoch restarts at epoch 0)")
    p.add_argument("--stage1-from", default=None, metavar="RUN_DIR",
                   help="train only stage 2, starting from the end of RUN_DIR's stage 1 (the new config may "
                   "differ from RUN_DIR's only in stage2.*, logging.* and where it runs); the result equals "
                   "training the new config from scratch")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (see below)")


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """``data.root`` (or, for file data sets, the root it falls back to), ``data.cache`` and a
    ``model.pretrained`` file as absolute paths, so the run folder works from any working directory."""
    data = config.data
    update: dict[str, Any] = {}
    if data.root is not None or (data.dataset in _FILE_DATASETS and data.cache is None):
        update["root"] = str(resolve_data_root(data).resolve())
    if data.cache is not None:
        update["cache"] = str(Path(data.cache).expanduser().resolve())
    config = config.model_copy(update={"data": data.model_copy(update=update)}) if update else config
    weights = config.model.pretrained
    if weights is not None and Path(weights).expanduser().is_file():  # a file, not a torchvision name
        model = config.model.model_copy(update={"pretrained": str(Path(weights).expanduser().resolve())})
        config = config.model_copy(update={"model": model})
    return config


def _relocated(config: RunConfig, data_root: str | None, data_cache: str | None) -> RunConfig:
    """The run's config reading its data from where it lives now: a data-set folder or a cache file."""
    if data_root and data_cache:
        raise ConfigError("--resume reads its data from one place: pass --data-root or --data-cache, not both")
    if data_root:
        update = {"root": str(Path(data_root).expanduser().resolve()), "cache": None}
    elif data_cache:
        update = {"cache": str(Path(data_cache).expanduser().resolve())}
    else:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update=update)})


def _until_done(run_dir: RunDir, fit: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    try:
        results = fit()
    except KeyboardInterrupt:
        raise InterruptedRun(f"interrupted; continue with `ccsam train --resume {run_dir.path}`") from None
    assert results is not None
    return results


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Train (or resume) one run; under torchrun every rank runs this and rank 0 writes and prints."""
    progress = not args.no_progress
    if args.overwrite and not args.out and not args.resume:
        raise ConfigError("--overwrite replaces the folder named by --out; without --out a new time-stamped "
                          "folder is made anyway, so drop --overwrite or add --out FOLDER")
    if args.resume:
        if args.preset or args.overrides or args.out or args.compile or args.overwrite or args.stage1_from:
            raise ConfigError("--resume takes the run folder's own config; drop --preset/--out/--overwrite/"
                              "--stage1-from/overrides (only --data-root or --data-cache may say where the data "
                              "lives now)")
        run_dir = RunDir.open(args.resume)
        config = _relocated(run_dir.load_config(), args.data_root, args.data_cache)
        with torchrun_session(config.device):
            check_writable(run_dir.path)
            trainer = Trainer(config, run_dir, progress=progress,
                              load_pretrained_weights=not run_dir.last_checkpoint.exists())
            trainer.resume(refuse_finished=True)
            _print_results(_until_done(run_dir, trainer.fit), run_dir)
        return 0
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={Path(args.data_root).expanduser()}")
    if args.data_cache:
        overrides.append(f"data.cache={Path(args.data_cache).expanduser()}")
    if args.compile:
        overrides.append("runtime.compile=true")
    config = with_absolute_paths(resolve_config(args.preset, overrides))
    source = RunDir.open(args.stage1_from) if args.stage1_from else None
    if source is not None:  # refuse before anything is created
        check_stage1_source(source, config)
    with torchrun_session(config.device):
        # One folder for every rank (the default name has a timestamp): rank 0's, checked there.
        path = shared_path(lambda: RunDir.check_new(
            Path(args.out) if args.out else default_run_path(config), overwrite=args.overwrite
        ).path)
        # Reads and checks the data before anything is written.
        trainer = Trainer(config, RunDir(path), progress=progress, load_pretrained_weights=source is None)
        run_dir = RunDir(shared_path(
            lambda: RunDir.create(path, config, ["ccsam", *argv], overwrite=args.overwrite).path
        ))
        if source is not None:
            shared_path(lambda: _started_from(source, run_dir, config))
            trainer.resume()  # at the first stage-2 epoch, with the source's stage-1 state
        if is_main():
            print(f"run folder: {run_dir.path}" + (f" (stage 1 from {source.path})" if source else ""))
        _print_results(_until_done(run_dir, trainer.fit), run_dir)
    return 0


def _started_from(source: RunDir, run_dir: RunDir, config: RunConfig) -> Path:
    start_from_stage1(source, run_dir, config)
    return run_dir.path


def _print_results(results: dict, run_dir: RunDir) -> None:
    if is_main():
        print(format_results_table(results))
        print(f"results: {run_dir.results_path}")
