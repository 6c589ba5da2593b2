"""The run folder: what a run writes and where.

::

    RUN_DIR/
      config.yaml          resolved configuration (every field)
      argv.txt             the command line that started the run
      env.json             versions and device
      split_manifest.json  long-tailed train / validation indices, class counts, sha256
      metrics.jsonl        one JSON record per epoch (train loss/acc, validation metrics, lr)
      results.json         last-epoch test metrics (and the last validation metrics)
      checkpoints/last.pt  written atomically after every epoch (resume point)
      checkpoints/best_val_stage1.pt   stage-1 weights with the best validation balanced accuracy
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ccsam.config.io import config_to_yaml, load_config_file
from ccsam.config.schema import RunConfig
from ccsam.atomic_io import atomic_write_bytes, atomic_write_text
from ccsam.errors import RunDirError


def default_run_path(config: RunConfig) -> Path:
    """``<out_dir>/<name>-<UTC timestamp>``: a fresh folder name for a new run."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(config.out_dir) / f"{config.name}-{stamp}"


class RunDir:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    manifest_path = property(lambda self: self.path / "split_manifest.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    results_path = property(lambda self: self.path / "results.json")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.pt")
    best_val_checkpoint = property(lambda self: self.path / "checkpoints" / "best_val_stage1.pt")

    @classmethod
    def create(cls, path: str | Path, config: RunConfig, argv: Sequence[str]) -> RunDir:
        """Make a new run folder and write the resolved config, argv and environment into it.

        Refuses a folder that already holds files, so nothing of an earlier run is overwritten.
        """
        run = cls(path)
        if run.path.exists() and any(run.path.iterdir()):
            raise RunDirError(
                f"run folder '{run.path}' already exists and is not empty; choose another --out, "
                f"or continue it with `ccsam train --resume {run.path}`"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, config_to_yaml(config))
        atomic_write_text(run.path / "argv.txt", " ".join(argv) + "\n")
        env = {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cuda_available": torch.cuda.is_available(),
            "created_utc": datetime.now(timezone.utc).isoformat(),
        }
        atomic_write_text(run.path / "env.json", json.dumps(env, indent=2) + "\n")
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run folder; one clear error if it is not one."""
        run = cls(path)
        if not run.config_path.is_file():
            raise RunDirError(f"'{run.path}' is not a ccsam run folder (no config.yaml); pass a folder made by `ccsam train`")
        return run

    def remove_if_unstarted(self) -> None:
        """Delete a folder that :meth:`create` made but no epoch ever wrote to (set-up failed)."""
        created = {"config.yaml", "argv.txt", "env.json", "split_manifest.json"}
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} <= created:
            for name in created:
                (self.path / name).unlink(missing_ok=True)
            self.path.rmdir()

    def load_config(self) -> RunConfig:
        return load_config_file(self.config_path)

    def append_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def keep_metrics_before(self, epoch: int) -> None:
        """Drop records of epochs >= ``epoch`` (written after the checkpoint a resume starts from)."""
        kept = [r for r in self.read_metrics() if r["epoch"] < epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.results_path, json.dumps(results, indent=2) + "\n")

    def read_results(self) -> dict[str, Any]:
        if not self.results_path.is_file():
            raise RunDirError(f"'{self.path}' has no results.json yet; the run has not finished")
        return json.loads(self.results_path.read_text())
