"""Shared fixtures: where the real data lives, and a tiny synthetic run configuration."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT_ENV = "CCSAM_DATA_ROOT"


def _shared_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV) or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The real data sets (CIFAR-10, Fashion-MNIST): $CCSAM_DATA_ROOT, default ../shared/data."""
    root = _shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set {DATA_ROOT_ENV} to the folder holding cifar-10-batches-py/")
    return root


def synthetic_overrides(**extra: object) -> list[str]:
    """Overrides for a seconds-long CPU run on generated 8x8 data with a long-tailed profile."""
    base = {
        "data.dataset": "synthetic",
        "data.synthetic.num_classes": 5,
        "data.synthetic.per_class_train": 60,
        "data.synthetic.per_class_test": 10,
        "data.n_max": 40,
        "data.imbalance_ratio": 10,
        "data.val_per_class": 5,
        "data.batch_size": 16,
        "data.crop_padding": 1,
        "data.augment": "crop_flip",
        "model.arch": "small_cnn",
        "model.width": 8,
        "device": "cpu",
        "stage1.epochs": 2,
        "stage1.warmup_epochs": 0,
        "stage1.milestones": "[1]",
        "stage1.mixup_alpha": 1.0,
        "stage1.noise_scale": 0.01,
        "stage2.epochs": 2,
        "eval.many_threshold": 30,
        "eval.few_threshold": 10,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def trained_stages(monkeypatch) -> list[int]:
    """The stage number of every epoch the engine trains from now on (what a run trained, not resumed)."""
    from ccsam.training.trainer import Trainer

    stages: list[int] = []
    real = Trainer.train_epoch

    def counting(self):
        stages.append(self.stage.number)
        return real(self)

    monkeypatch.setattr(Trainer, "train_epoch", counting)
    return stages


@pytest.fixture
def tiny_overrides():
    """A function returning the override list of a tiny synthetic run (keyword arguments replace keys)."""

    def make(**extra: object) -> list[str]:
        return synthetic_overrides(**{k.replace("__", "."): v for k, v in extra.items()})

    return make



@pytest.fixture(scope="session")
def copy_erm_and_ccsam_runs(tmp_path_factory) -> Callable[[], list[Path]]:
    """A function returning fresh copies of two tiny finished runs (ERM; CC-SAM stage 1 + 2) that are
    trained once per session, so that each user may write into its copies (analyses) undisturbed."""
    from ccsam.cli.main import main

    trained: list[Path] = []

    def copies() -> list[Path]:
        if not trained:
            root = tmp_path_factory.mktemp("erm-and-ccsam")
            for name, extra in (("erm", ["stage1.method=erm", "stage2.epochs=0"]), ("ccsam", [])):
                out = root / name
                argv = ["train", "--out", str(out), "--no-progress", *synthetic_overrides(), f"name={name}", *extra]
                assert main(argv) == 0
                trained.append(out)
        root = tmp_path_factory.mktemp("runs")
        return [Path(shutil.copytree(path, root / path.name)) for path in trained]

    return copies
