"""The engine end to end on generated data: run folder contents, exact resume, frozen stage 2, no test peeking."""

from __future__ import annotations

import json

import pytest
import torch

from ccsam.config import resolve_config
from ccsam.data.splits import SplitManifest
from ccsam.errors import RunDirError
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.evaluate_run import evaluate_run
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer, train


def _new_run(tmp_path, name, config):
    return RunDir.create(tmp_path / name, config, ["test"])


def test_run_folder_holds_config_manifest_metrics_results(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides())
    run = _new_run(tmp_path, "run", config)
    results = train(config, run, progress=False)
    assert run.config_path.is_file() and (run.path / "argv.txt").is_file()
    manifest = SplitManifest.load_json(run.manifest_path)
    assert manifest.sha256() == results["manifest_sha256"]
    assert list(manifest.class_counts) == results["class_counts"] == [40, 22, 12, 7, 4]
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert [r["stage"] for r in records] == [1, 1, 2, 2]
    assert [r["alpha"] for r in records[2:]] == [0.5, 1.0]
    assert all("test" not in r for r in records)  # the test split is not looked at during training
    stored = json.loads(run.results_path.read_text())
    for key in ("top1", "many", "medium", "few", "ece", "nll", "per_class_accuracy"):
        assert key in stored["test"]
    assert stored["test"]["num_samples"] == 5 * 10
    assert stored["test"]["group_sizes"] == {"many": 1, "medium": 2, "few": 2}


def test_resume_reproduces_an_uninterrupted_run(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides(**{"stage1.epochs": 3, "stage2.epochs": 2}))
    reference = train(config, _new_run(tmp_path, "full", config), progress=False)
    reference_state = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    for stop in (1, 3, 4):  # inside stage 1, at the stage boundary, inside stage 2
        run = _new_run(tmp_path, f"stop{stop}", config)
        assert Trainer(config, run, progress=False).fit(stop_at=stop) is None
        assert not run.results_path.exists()
        resumed = train(config, RunDir.open(run.path), resume=True, progress=False)
        state = load_checkpoint(run.last_checkpoint)["model"]
        for key, value in reference_state.items():
            assert torch.equal(value, state[key]), (stop, key)
        assert resumed["test"] == reference["test"]
        assert [r["epoch"] for r in run.read_metrics()] == list(range(5))


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_stage2_trains_only_the_head(tmp_path, tiny_overrides, bn_mode):
    config = resolve_config("digits-lt", tiny_overrides(**{"stage2.bn_mode": bn_mode}))
    run = _new_run(tmp_path, "run", config)
    trainer = Trainer(config, run, progress=False)
    trainer.fit(stop_at=config.stage1.epochs)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    params = {name for name, _ in trainer.model.named_parameters()}
    for key, value in before.items():
        if key.startswith("head."):
            assert not torch.equal(value, after[key]), key
        elif key in params or bn_mode == "eval":
            assert torch.equal(value, after[key]), key
    running = [k for k in before if k.endswith("running_mean")]
    changed = any(not torch.equal(before[k], after[k]) for k in running)
    assert changed == (bn_mode == "train")  # official: BN statistics keep updating in stage 2


def test_best_val_initialisation_loads_the_validation_selected_weights(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides(**{"stage2.init_from": "best_val", "stage1.epochs": 3}))
    run = _new_run(tmp_path, "run", config)
    trainer = Trainer(config, run, progress=False)
    trainer.fit(stop_at=3)
    best = load_checkpoint(run.best_val_checkpoint)
    records = run.read_metrics()
    best_epoch = max(range(3), key=lambda e: (records[e]["val"]["balanced"], -e))
    assert best["epoch"] == best_epoch
    trainer.enter_stage(2)
    for key, value in best["model"].items():
        assert torch.equal(trainer.model.state_dict()[key], value)


def test_evaluate_run_reproduces_results_json(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides())
    run = _new_run(tmp_path, "run", config)
    results = train(config, run, progress=False)
    again = evaluate_run(RunDir.open(run.path))
    assert again["test"] == results["test"]


def test_existing_run_folder_is_never_overwritten(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists"):
        RunDir.create(tmp_path / "run", config, [])
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_stage2_alpha_is_logged_when_torchrun_wraps_the_objective(tmp_path, tiny_overrides, monkeypatch):
    from ccsam.training import distributed
    from ccsam.training.objectives import CcsamStage1Objective, CcsamStage2Objective
    from ccsam.training.trainer import stage2_alpha

    # the wrapper distribute_objective builds under a process group (is_distributed faked, no torchrun)
    inner = CcsamStage2Objective(torch.tensor([5, 3]), alpha=0.3, div=2.0, step=1.0)
    with monkeypatch.context() as patch:
        patch.setattr(distributed, "is_distributed", lambda: True)
        wrapped = distributed.distribute_objective(inner)
    assert isinstance(wrapped, distributed.GlobalCcsamStage2)
    assert stage2_alpha(wrapped) == stage2_alpha(inner) == 0.3
    assert stage2_alpha(distributed.GlobalCcsamStage1(CcsamStage1Objective(torch.tensor([5, 3]), 0.5, 0.1))) is None

    # the engine with every stage-2 objective wrapped so (one process: its batch is the global batch)
    def wrap(objective):
        return distributed.GlobalCcsamStage2(objective) if isinstance(objective, CcsamStage2Objective) else objective

    monkeypatch.setattr(distributed, "distribute_objective", wrap)
    config = resolve_config("digits-lt", tiny_overrides(**{"stage2.method.up_limit": 0.8}))
    run = _new_run(tmp_path, "run", config)
    train(config, run, progress=False)
    records = run.read_metrics()
    epochs = config.stage2.epochs
    expected = [min((t + 1) / epochs, 0.8) for t in range(epochs)]  # spec 2.2: alpha = min((t + 1) / T, up_limit)
    assert [r.get("alpha") for r in records if r["stage"] == 2] == pytest.approx(expected)
    assert expected[-1] == 0.8 and all("alpha" not in r for r in records if r["stage"] == 1)
