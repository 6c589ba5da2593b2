"""Stage 2 on another run's stage 1 (``ccsam train --stage1-from RUN``).

Decoupled methods (cRT, LWS, MiSLAS and GCL stage 2, CC-SAM stage 2) retrain the classifier of a finished
backbone, and comparing them means training the same stage 1 once per stage 2. A new run that declares
the same stage 1 as a finished run (every key but ``stage2.*``, ``logging.*`` and the machine keys of
:data:`~ccsam.config.schema.MACHINE_KEYS`) can start from that run's end-of-stage-1 checkpoint instead:
the checkpoint (model, optimiser, sampler, RNG states, counters), the best-validation stage-1 weights and
the stage-1 lines of ``metrics.jsonl`` are copied into the new run folder, which then resumes at the first
stage-2 epoch. Resume is exact, so the result is bit for bit what training the new run from scratch
gives, in a fraction of the time.
"""

from __future__ import annotations

import json
from pathlib import Path

from ccsam import strict_json
from ccsam.atomic_io import atomic_copy_file, atomic_write_text
from ccsam.config import config_differences
from ccsam.config.schema import MACHINE_KEYS, RunConfig
from ccsam.errors import ConfigError, RunDirError
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.run_dir import RunDir

__all__ = [
    "STAGE2_ONLY_KEYS", "check_stage1_source", "stage1_checkpoint", "stage1_differences", "start_from_stage1",
]

# Keys a run may change and still share another run's stage 1: its stage 2, its logs, where it runs.
STAGE2_ONLY_KEYS: tuple[tuple[str, ...], ...] = (("stage2",), ("logging",), *MACHINE_KEYS)


def stage1_checkpoint(source: RunDir) -> Path:
    """The checkpoint holding the end of ``source``'s stage 1: ``checkpoints/stage1_end.pt`` of a
    two-stage run, or ``checkpoints/last.pt`` of a stage-1-only run that finished its stage 1."""
    if source.stage1_checkpoint.is_file():
        return source.stage1_checkpoint
    cfg = source.load_config()
    if cfg.stage1.epochs == 0:
        raise RunDirError(f"'{source.path}' has no stage 1 (stage1.epochs=0); pass a run that trained one")
    if cfg.stage2.epochs == 0 and source.last_checkpoint.is_file():
        if load_checkpoint(source.last_checkpoint, required=("epoch",))["epoch"] >= cfg.stage1.epochs:
            return source.last_checkpoint
    raise RunDirError(
        f"'{source.path}' holds no finished stage 1 (no checkpoints/stage1_end.pt, and not a stage-1-only run "
        "with all its epochs done); finish it with `ccsam train --resume`, or pass another run"
    )


def stage1_differences(source: RunConfig, target: RunConfig) -> list[str]:
    """Keys outside :data:`STAGE2_ONLY_KEYS` in which ``target`` declares another stage 1 than ``source``."""
    return config_differences(source, target, STAGE2_ONLY_KEYS)


def check_stage1_source(source: RunDir, cfg: RunConfig) -> Path:
    """The stage-1 checkpoint of ``source`` that ``cfg`` may start from; ConfigError when ``cfg`` declares
    another stage 1 or no stage 2, RunDirError when ``source`` has no finished stage 1."""
    if cfg.stage2.epochs == 0:
        raise ConfigError("--stage1-from trains only stage 2, but stage2.epochs=0; set stage2.epochs")
    differ = stage1_differences(source.load_config(), cfg)
    if differ:
        shown = ", ".join(differ[:5]) + (", ..." if len(differ) > 5 else "")
        raise ConfigError(
            f"--stage1-from '{source.path}': this run declares another stage 1 ({shown} differ); only "
            "stage2.*, logging.* and where it runs may change (see `ccsam presets --show` of both)"
        )
    return stage1_checkpoint(source)


def start_from_stage1(source: RunDir, run: RunDir, cfg: RunConfig) -> None:
    """Make ``run`` (created with ``cfg``, no epoch trained) continue from the end of ``source``'s stage 1
    (checked by :func:`check_stage1_source`): copies the stage-1 checkpoint as ``checkpoints/last.pt``, the
    best-validation stage-1 weights, the stage-1 lines of ``metrics.jsonl``, and writes
    ``stage1_from.json`` (source, checkpoint, stage-1 epochs)."""
    checkpoint = check_stage1_source(source, cfg)
    if not run.is_unstarted():
        raise RunDirError(f"'{run.path}' has trained epochs already; --stage1-from needs a new run folder")
    # Everything else first and last.pt last, each atomically: a kill in between leaves an unstarted folder
    # (replaced by the next try), never a started one with a damaged checkpoint or missing records.
    atomic_write_text(
        run.path / "stage1_from.json",
        json.dumps({"source": str(source.path.resolve()), "checkpoint": checkpoint.name,
                    "stage1_epochs": cfg.stage1.epochs}, indent=2) + "\n",
    )
    stage1_records = [r for r in source.read_metrics() if r.get("stage") == 1]
    atomic_write_text(run.metrics_path, "".join(strict_json.dumps(r) + "\n" for r in stage1_records))
    if source.best_val_checkpoint.is_file():
        atomic_copy_file(source.best_val_checkpoint, run.best_val_checkpoint)
    atomic_copy_file(checkpoint, run.stage1_checkpoint)  # so this run can be a source in turn
    atomic_copy_file(checkpoint, run.last_checkpoint)
