"""Schedule points a stage never reaches (milestones, warm-up, DRW start) are named in warnings; the
shipped presets have none."""

from __future__ import annotations

import logging

import pytest

from ccsam.config import list_presets, resolve_config
from ccsam.training.feasibility import ignored_option_warnings, schedule_warnings
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer


@pytest.mark.parametrize("preset", [name for name, _ in list_presets()])
def test_shipped_presets_reach_every_point_of_their_schedules(preset):
    assert schedule_warnings(resolve_config(preset)) == []
    assert ignored_option_warnings(resolve_config(preset)) == []


def test_a_shortened_schedule_names_each_unreached_point(tmp_path, caplog, tiny_overrides):
    overrides = tiny_overrides(**{"stage1.milestones": "[1, 5]", "stage1.warmup_epochs": 2,
                                  "stage1.loss.drw.start_epoch": 7, "stage2.method": "retrain",
                                  "stage2.method.loss.drw.start_epoch": 1})
    lines = schedule_warnings(resolve_config("digits-lt", overrides))
    assert len(lines) == 3
    assert lines[0].startswith("stage1.milestones [5] are after its last epoch (2 epochs)")
    at_end = tiny_overrides(**{"stage1.milestones": "[2]"})  # counter e + 1 = 2 in the last epoch: it decays
    assert schedule_warnings(resolve_config("digits-lt", at_end)) == []
    assert lines[1].startswith("stage1.warmup_epochs=2 covers all 2 epochs")
    assert lines[2].startswith("stage1.loss re-weights (DRW) from epoch 7")
    with caplog.at_level(logging.WARNING, logger="ccsam.training.trainer"):
        Trainer(resolve_config("digits-lt", overrides), RunDir(tmp_path / "run"), progress=False)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == lines
    assert ignored_option_warnings(resolve_config("digits-lt", overrides)) == []
    cosine = tiny_overrides(**{"stage1.schedule": "cosine", "stage1.milestones": "[9]"})
    assert schedule_warnings(resolve_config("digits-lt", cosine)) == []  # milestones unused by cosine...
    assert ignored_option_warnings(resolve_config("digits-lt", cosine)) == [  # ...which is worth a word
        "stage1.milestones [9] (and gamma) apply to stage1.schedule=official_step only, not cosine; set "
        "stage1.milestones=[]"
    ]


@pytest.mark.parametrize(
    ("extra", "starts"),
    [
        ({"stage2.method": "retrain", "stage2.warmup_epochs": 2}, ["stage2.warmup_epochs=2 has no effect with "
                                                                   "stage2.schedule=constant"]),
        ({"stage1.warmup_epochs": 1}, ["stage1.warmup_epochs=1 is no warm-up with stage1.schedule=official_step"]),
        ({"stage1.swa_start": 0.5}, ["stage1.swa_start has no effect without stage1.swa=true"]),
        ({"stage1.method": "erm", "stage1.flat_ratio": 0.9}, ["stage1.flat_ratio and stage1.noise_scale shape"]),
        ({"stage1.flat_targets": "mixup", "stage1.mixup_alpha": 0}, ["stage1.flat_targets=mixup has no effect "
                                                                     "without mixup"]),
        ({"stage1.flat_targets": "mixup"}, []),  # digits-lt mixes (alpha 1)
        ({"stage1.perturb_last_k": 2}, ["stage1.perturb_last_k=2 has no effect with stage1.perturb_scope=head"]),
        ({"model.head_scale": 16}, ["model.head_scale=16 scales a cosine head"]),
        ({"stage1.perturb_scope": "last_k", "stage1.perturb_last_k": 2}, []),  # read: no line
        ({"stage1.class_pass_bn": "batch"}, ["stage1.class_pass_bn=batch has no effect without per-class passes"]),
        ({"stage1.perturb_scope": "all", "stage1.class_pass_bn": "batch"}, []),
        ({"stage1.schedule": "cosine", "stage1.milestones": "[]", "stage1.warmup_epochs": 1}, []),
    ],
)
def test_options_the_configuration_never_reads_are_named(extra, starts, tiny_overrides):
    lines = ignored_option_warnings(resolve_config("digits-lt", tiny_overrides(**extra)))
    assert len(lines) == len(starts) and all(line.startswith(s) for line, s in zip(lines, starts, strict=True))


@pytest.mark.parametrize(
    ("preset", "extra", "line"),
    [
        ("fmnist-lt-ce", ["data.image_size=32", "data.selection_per_class=2"], "data.selection_per_class, "
         "data.image_size have no effect: data.dataset=fashion_mnist is read into memory, not from image files"),
        ("imagenet-lt-ce", ["data.imbalance_ratio=50", "data.n_max=100", "data.selection_per_class=5"],
         "data.imbalance_ratio, data.n_max, data.selection_per_class have no effect: data.dataset=imagenet_lt "
         "trains on its list files as they are (no long-tailed subset is drawn); it selects on its val list"),
        ("inat2018-ce", ["data.val_per_class=3"], "data.val_per_class has no effect: data.dataset=inat2018 trains "
         "on its list files as they are (no long-tailed subset is drawn)"),
        ("inat2018-ce", ["data.selection_per_class=5"], None),  # inat2018 has no val list: it is read
        ("fmnist-lt-ce", ["data.imbalance_ratio=50"], None),
    ],
)
def test_data_options_the_data_set_never_reads_are_named(preset, extra, line):
    lines = ignored_option_warnings(resolve_config(preset, extra))
    assert lines == ([] if line is None else [line])
