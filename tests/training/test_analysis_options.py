"""Naive-flattening options (SWA, SN, GP, MP) and the CC-SAM ablation / scope switches through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from ccsam.config import resolve_config
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer, train


def _run(tmp_path, tiny_overrides, name="run", **extra):
    config = resolve_config("digits-lt", tiny_overrides(**extra))
    trainer = Trainer(config, RunDir.create(tmp_path / name, config, []), progress=False)
    return trainer, trainer.fit()


@pytest.mark.parametrize("options", [
    {"stage1.flattening": "gp"}, {"stage1.flattening": "mp", "stage1.flattening.bound": 0.05},
    {"stage2.flattening": "gp"}, {"stage2.flattening": "mp"},
    {"stage1.radius": "dir_only"}, {"stage1.radius": "dir_only", "stage1.radius.rho": 0.05},
    {"stage1.radius": "mag_only"}, {"stage1.radius": "none"},
    {"stage1.perturb_scope": "last_k"}, {"stage1.perturb_scope": "all"},
])
def test_option_trains_end_to_end(tmp_path, tiny_overrides, options):
    _, results = _run(tmp_path, tiny_overrides, **options)
    assert math.isfinite(results["test"]["nll"])


def test_spectral_norm_keeps_top_singular_values_near_one(tmp_path, tiny_overrides):
    trainer, _ = _run(tmp_path, tiny_overrides, **{"stage1.spectral_norm": "true", "stage2.spectral_norm": "true",
                                                  "stage1.epochs": 3, "stage1.milestones": "[2]"})
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    for module in convs:
        sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.15)


def test_swa_averages_the_window_and_resumes(tmp_path, tiny_overrides):
    options = {"stage1.swa": "true", "stage1.swa_start": 0.5, "stage1.epochs": 4, "stage1.milestones": "[3]",
               "stage2.epochs": 0}
    trainer, results = _run(tmp_path, tiny_overrides, **options)
    config = trainer.cfg
    run = RunDir.create(tmp_path / "cut", config, [])
    Trainer(config, run, progress=False).fit(stop_at=3)
    assert load_checkpoint(run.last_checkpoint)["swa"]["n_averaged"] == 1  # epochs 2 of 0..3 so far
    resumed = train(config, RunDir.open(run.path), resume=True, progress=False)
    assert resumed["test"] == results["test"]
    assert int(trainer.stage.swa.n_averaged) == 2  # epochs 2 and 3 of 0..3
    _, plain = _run(tmp_path, tiny_overrides, name="plain", **{k: v for k, v in options.items() if "swa" not in k})
    assert plain["test"]["nll"] != results["test"]["nll"]


def test_mag_only_and_mp_runs_resume_exactly(tmp_path, tiny_overrides):
    for options in ({"stage1.radius": "mag_only"}, {"stage1.flattening": "mp", "stage1.flattening.bound": 0.05}):
        config = resolve_config("digits-lt", tiny_overrides(**options))
        full = train(config, RunDir.create(tmp_path / f"full{len(options)}{options}", config, []), progress=False)
        run = RunDir.create(tmp_path / f"cut{options}", config, [])
        Trainer(config, run, progress=False).fit(stop_at=1)
        assert train(config, RunDir.open(run.path), resume=True, progress=False)["test"] == full["test"]
