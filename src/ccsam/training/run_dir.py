"""The run folder: what a run writes and where.

::

    RUN_DIR/
      config.yaml          resolved configuration (every field)
      argv.txt             the command line that started the run
      env.json             versions (ccsam, git commit, torch, CUDA, cuDNN) and device
      split_manifest.json  long-tailed train / validation indices, class counts, sha256
      metrics.jsonl        one JSON record per epoch (train loss/acc, validation metrics, lr)
      results.json         last-epoch test metrics (and the last validation metrics)
      checkpoints/last.pt  written atomically after every epoch (resume point)
      checkpoints/best_val_stage1.pt   stage-1 weights with the best validation balanced accuracy
      checkpoints/stage1_end.pt        two-stage runs: the state at the end of stage 1 (--stage1-from)
      stage1_from.json     a run started from another run's stage 1: the source run and checkpoint
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ccsam import strict_json
from ccsam.atomic_io import atomic_write_bytes, atomic_write_text, check_writable
from ccsam.config.io import config_to_yaml, load_config_file
from ccsam.config.schema import RunConfig
from ccsam.errors import RunDirError
from ccsam.training.environment import environment

__all__ = ["RunDir", "atomic_write_bytes", "atomic_write_text", "default_run_path"]

_logger = logging.getLogger(__name__)
# What a run writes before its first epoch completes; a folder holding only these can be restarted.
_SETUP_FILES = frozenset(
    {"config.yaml", "argv.txt", "env.json", "split_manifest.json", "metrics.jsonl", "stage1_from.json"}
)


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
    # The state at the end of stage 1 of a two-stage run (last.pt moves on): `ccsam train --stage1-from`.
    stage1_checkpoint = property(lambda self: self.path / "checkpoints" / "stage1_end.pt")

    @classmethod
    def check_new(cls, path: str | Path, *, overwrite: bool = False) -> RunDir:
        """Refuse ``path`` unless a new run may be written there; writes nothing.

        A missing or empty folder is fine. With ``overwrite``, so is a run folder that never completed
        an epoch (its set-up files are replaced); a folder with completed epochs or other files never is.
        The folder (or its nearest existing parent) must be writable.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise RunDirError(f"'{run.path}' is a file, not a folder; choose another --out")
        if run.path.is_dir() and not run._holds_only_setup_temps():
            unstarted = run.is_unstarted()
            if not (overwrite and unstarted):
                fix = ("it never completed an epoch: continue it with `ccsam train --resume {p}` (starts at "
                       "epoch 0) or replace it with --overwrite" if unstarted else
                       "choose another --out, or continue it with `ccsam train --resume {p}`")
                raise RunDirError(f"run folder '{run.path}' already exists and is not empty; "
                                  + fix.format(p=run.path))
        check_writable(run.path)
        return run

    @classmethod
    def create(
        cls, path: str | Path, config: RunConfig, argv: Sequence[str], *, overwrite: bool = False
    ) -> RunDir:
        """Make a new run folder and write the resolved config, argv and environment into it.

        Refuses a folder that already holds files, so nothing of an earlier run is overwritten; with
        ``overwrite``, a run folder that never completed an epoch is cleared and reused.
        """
        run = cls.check_new(path, overwrite=overwrite)
        if run.path.is_dir() and run._holds_only_setup_temps():
            run.remove_stale_temp_files()  # a kill while the folder was being made
        elif overwrite and run.path.is_dir():
            run.clear_unstarted()
        run.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_path, config_to_yaml(config))
        atomic_write_text(run.path / "argv.txt", " ".join(argv) + "\n")
        atomic_write_text(run.path / "env.json", strict_json.dumps(environment(), indent=2) + "\n")
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run folder; one clear error if it is not one."""
        run = cls(path)
        if not run.config_path.is_file():
            raise RunDirError(
                f"'{run.path}' is not a ccsam run folder (no config.yaml); pass a folder made by `ccsam train`"
            )
        return run

    def _temp_files(self) -> list[Path]:
        """Temporary files of interrupted atomic writes (``.NAME.xxxx`` beside ``NAME``)."""
        folders = [self.path, self.path / "checkpoints", self.path / "analysis"]
        return [p for folder in folders if folder.is_dir() for p in folder.iterdir()
                if p.is_file() and p.name.startswith(".") and p.name.count(".") >= 2]

    def _holds_only_setup_temps(self) -> bool:
        """Empty, or only temporary files of the set-up files (a kill inside :meth:`create`)."""
        return all(p.is_file() and p.name.startswith(tuple(f".{n}." for n in _SETUP_FILES))
                   for p in self.path.iterdir())

    def is_unstarted(self) -> bool:
        """A ccsam run folder with no completed epoch: only set-up files (and stale temporary files)."""
        if not self.config_path.is_file() or self.last_checkpoint.exists():
            return False
        temps = set(self._temp_files())
        names = {p.name for p in self.path.iterdir() if p not in temps}
        checkpoints = self.path / "checkpoints"
        # best_val_stage1.pt and stage1_end.pt are written before last.pt (inside an epoch, or by
        # --stage1-from): alone they mark no completed epoch
        allowed = temps | {self.best_val_checkpoint, self.stage1_checkpoint}
        if checkpoints.is_dir() and any(p not in allowed for p in checkpoints.iterdir()):
            return False
        return names - {"checkpoints"} <= _SETUP_FILES

    def clear_unstarted(self) -> None:
        """Delete the files of a run folder that never completed an epoch (refuses any other folder)."""
        if not self.is_unstarted():
            raise RunDirError(f"'{self.path}' holds completed epochs or other files; it was not cleared")
        for temp in self._temp_files():
            temp.unlink()
        for name in _SETUP_FILES:
            (self.path / name).unlink(missing_ok=True)
        self.best_val_checkpoint.unlink(missing_ok=True)
        self.stage1_checkpoint.unlink(missing_ok=True)
        if (self.path / "checkpoints").is_dir():
            (self.path / "checkpoints").rmdir()

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the temporary files a killed atomic write left behind; returns what was removed."""
        removed = self._temp_files()
        for temp in removed:
            temp.unlink()
        if removed:
            _logger.info("removed %d stale temporary file(s) of an interrupted write in %s",
                         len(removed), self.path)
        return removed

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
            handle.write(strict_json.dumps(record) + "\n")

    def read_metrics(self, *, drop_torn_tail: bool = False) -> list[dict[str, Any]]:
        """The per-epoch records. A last line cut short by a kill is dropped when ``drop_torn_tail`` is
        set (resume rewrites the file anyway); any other unreadable line is one clear error."""
        if not self.metrics_path.is_file():
            return []
        lines = self.metrics_path.read_text(errors="replace").splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if drop_torn_tail and number == len(lines):
                    _logger.info("dropped the incomplete last line of %s (written when the run stopped)",
                                 self.metrics_path)
                    continue
                raise RunDirError(
                    f"'{self.metrics_path}' line {number} is not valid JSON (truncated or edited); restore "
                    "the file from the run that wrote it, or delete that line"
                ) from None
        return records

    def keep_metrics_before(self, epoch: int) -> None:
        """Drop records of epochs >= ``epoch`` (written after the checkpoint a resume starts from)."""
        kept = [r for r in self.read_metrics(drop_torn_tail=True) if r.get("epoch", epoch) < epoch]
        atomic_write_text(self.metrics_path, "".join(strict_json.dumps(r) + "\n" for r in kept))

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.results_path, strict_json.dumps(results, indent=2) + "\n")

    def read_results(self) -> dict[str, Any]:
        if not self.results_path.is_file():
            raise RunDirError(f"'{self.path}' has no results.json yet; the run has not finished")
        try:
            results = json.loads(self.results_path.read_text(errors="replace"))
        except json.JSONDecodeError as exc:
            raise RunDirError(f"'{self.results_path}' is not valid JSON ({exc.msg}, line {exc.lineno}); "
                              "restore it, or re-create it with `ccsam eval`") from None
        if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
            raise RunDirError(f"'{self.results_path}' is not a ccsam results file (no test metrics)")
        return results
