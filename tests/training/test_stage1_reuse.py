"""``ccsam train --stage1-from RUN``: stage 2 on another run's stage 1 gives bit for bit what training the
new config from scratch gives, and a config that declares another stage 1 is refused before anything is
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import synthetic_overrides

from ccsam.cli.main import main
from ccsam.config import resolve_config
from ccsam.errors import RunDirError
from ccsam.training.run_dir import RunDir
from ccsam.training.stage1_reuse import check_stage1_source
from ccsam.training.trainer import Trainer

TIMINGS = ("time_s", "img_per_s", "data_wait_s")
CRT = ["stage2.method={name: retrain, reinit_head: true}", "stage2.sampler=class_balanced", "stage2.lr=0.05"]


def _train(out: Path, preset: str, overrides: list[str], *extra: str) -> int:
    return main(["train", "--preset", preset, "--out", str(out), "--no-progress", *extra, *overrides])


def _same_run(a: Path, b: Path) -> None:
    """Two run folders trained the same numbers: results, per-epoch records (timings aside), weights."""
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    ra.pop("train_time_s"), rb.pop("train_time_s")
    assert ra == rb
    ma, mb = ([{k: v for k, v in r.items() if k not in TIMINGS} for r in RunDir(p).read_metrics()] for p in (a, b))
    assert ma == mb
    wa, wb = (torch.load(p / "checkpoints" / "last.pt", weights_only=True)["model"] for p in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_stage2_on_a_two_stage_runs_stage1_equals_training_from_scratch(
    tmp_path: Path, capsys, trained_stages
) -> None:
    base = synthetic_overrides()
    assert _train(tmp_path / "ccsam", "fmnist-lt-ccsam", base) == 0  # stage 1 + CC-SAM stage 2
    assert (tmp_path / "ccsam" / "checkpoints" / "stage1_end.pt").is_file()
    assert _train(tmp_path / "crt-scratch", "fmnist-lt-ccsam", [*base, *CRT]) == 0
    capsys.readouterr()
    trained_stages.clear()
    assert _train(tmp_path / "crt-reused", "fmnist-lt-ccsam", [*base, *CRT],
                  "--stage1-from", str(tmp_path / "ccsam")) == 0
    assert trained_stages == [2, 2]  # stage 1 is not trained again
    assert f"stage 1 from {tmp_path / 'ccsam'}" in capsys.readouterr().out
    _same_run(tmp_path / "crt-scratch", tmp_path / "crt-reused")
    record = json.loads((tmp_path / "crt-reused" / "stage1_from.json").read_text())
    assert record == {"source": str((tmp_path / "ccsam").resolve()), "checkpoint": "stage1_end.pt",
                      "stage1_epochs": 2}
    # A run started that way is a source in turn; stage 2 from the best-validation stage-1 weights too.
    best_val = [*base, *CRT, "stage2.init_from=best_val"]
    assert _train(tmp_path / "best-scratch", "fmnist-lt-ccsam", best_val) == 0
    trained_stages.clear()
    assert _train(tmp_path / "best-chained", "fmnist-lt-ccsam", best_val,
                  "--stage1-from", str(tmp_path / "crt-reused")) == 0
    assert trained_stages == [2, 2]
    _same_run(tmp_path / "best-scratch", tmp_path / "best-chained")


def test_stage2_on_a_stage1_only_run_equals_training_from_scratch(tmp_path: Path, trained_stages) -> None:
    ce = synthetic_overrides(**{"stage2.epochs": 0})
    assert _train(tmp_path / "ce", "fmnist-lt-ce", ce) == 0
    assert not (tmp_path / "ce" / "checkpoints" / "stage1_end.pt").exists()  # last.pt is its stage-1 end
    with_crt = [*synthetic_overrides(), *CRT]
    assert _train(tmp_path / "scratch", "fmnist-lt-ce", with_crt) == 0
    trained_stages.clear()
    assert _train(tmp_path / "reused", "fmnist-lt-ce", with_crt, "--stage1-from", str(tmp_path / "ce")) == 0
    assert trained_stages == [2, 2]
    _same_run(tmp_path / "scratch", tmp_path / "reused")


def test_another_stage1_or_an_unfinished_source_is_refused_before_anything_is_written(
    tmp_path: Path, capsys
) -> None:
    ce = synthetic_overrides(**{"stage2.epochs": 0})
    assert _train(tmp_path / "ce", "fmnist-lt-ce", ce) == 0
    capsys.readouterr()
    other = [*synthetic_overrides(**{"stage1.lr": 0.05}), *CRT]
    assert _train(tmp_path / "new", "fmnist-lt-ce", other, "--stage1-from", str(tmp_path / "ce")) == 2
    err = capsys.readouterr().err
    assert "declares another stage 1 (stage1.lr differ)" in err and "Traceback" not in err
    assert not (tmp_path / "new").exists()
    no_stage2 = synthetic_overrides(**{"stage2.epochs": 0})
    assert _train(tmp_path / "new", "fmnist-lt-ce", no_stage2, "--stage1-from", str(tmp_path / "ce")) == 2
    assert "stage2.epochs=0" in capsys.readouterr().err

    cfg = resolve_config("fmnist-lt-ce", ce)  # a stage-1-only run stopped after 1 of its 2 epochs
    half = RunDir.create(tmp_path / "half", cfg, ["test"])
    Trainer(cfg, half, progress=False).fit(stop_at=1)
    with pytest.raises(RunDirError, match="holds no finished stage 1"):
        check_stage1_source(half, resolve_config("fmnist-lt-ce", [*synthetic_overrides(), *CRT]))
