"""Schedule points a stage never reaches (milestones, warm-up, DRW start) are named in warnings; the
shipped presets have none."""

from __future__ import annotations

import logging

import pytest

from ccsam.config import list_presets, resolve_config
from ccsam.training.feasibility import schedule_warnings
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer


@pytest.mark.parametrize("preset", [name for name, _ in list_presets()])
def test_shipped_presets_reach_every_point_of_their_schedules(preset):
    assert schedule_warnings(resolve_config(preset)) == []


def test_a_shortened_schedule_names_each_unreached_point(tmp_path, caplog, tiny_overrides):
    overrides = tiny_overrides(**{"stage1.milestones": "[1, 5]", "stage1.warmup_epochs": 2,
                                  "stage1.loss.drw.start_epoch": 7, "stage2.method": "retrain",
                                  "stage2.method.loss.drw.start_epoch": 1})
    lines = schedule_warnings(resolve_config("digits-lt", overrides))
    assert len(lines) == 3
    assert lines[0].startswith("stage1.milestones [5] are at or after its last epoch (2 epochs)")
    assert lines[1].startswith("stage1.warmup_epochs=2 covers all 2 epochs")
    assert lines[2].startswith("stage1.loss re-weights (DRW) from epoch 7")
    with caplog.at_level(logging.WARNING, logger="ccsam.training.trainer"):
        Trainer(resolve_config("digits-lt", overrides), RunDir(tmp_path / "run"), progress=False)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == lines
    cosine = tiny_overrides(**{"stage1.schedule": "cosine", "stage1.milestones": "[9]"})
    assert schedule_warnings(resolve_config("digits-lt", cosine)) == []  # milestones unused by cosine
