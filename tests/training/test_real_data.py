"""The real-data paths end to end on ../shared/data (CIFAR-10, Fashion-MNIST), kept to seconds."""

from __future__ import annotations

import torch

from ccsam.config import resolve_config
from ccsam.data.build import build_data
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import train


def test_cifar10_lt_official_split_sizes(shared_data_root):
    for ratio, total in ((200, 11_203), (100, 12_406), (50, 13_996)):
        config = resolve_config("cifar10-lt-ccsam-official",
                                [f"data.root={shared_data_root}", f"data.imbalance_ratio={ratio}"])
        data = build_data(config.data)
        assert len(data.train) == total == int(data.class_counts.sum())
        assert data.class_counts[0] == 5000 and len(data.test) == 10_000
        # the head class uses all its 5,000 images, so it has none left for validation ("where available")
        assert torch.bincount(data.val.labels, minlength=10).tolist() == [0] + [20] * 9
        train_set = set(data.manifest.train_indices)
        assert train_set.isdisjoint(data.manifest.val_indices)


def test_fashion_mnist_lt_ccsam_trains_end_to_end(shared_data_root, tmp_path):
    config = resolve_config("fmnist-lt-ccsam", [f"data.root={shared_data_root}", "data.n_max=300",
                                                "stage1.epochs=3", "stage1.warmup_epochs=0", "stage1.mixup_alpha=0",
                                                "stage2.epochs=1", "device=cpu"])
    results = train(config, RunDir.create(tmp_path / "run", config, ["test"]), progress=False)
    assert results["test"]["num_samples"] == 10_000
    assert results["class_counts"][0] == 300 and results["class_counts"][-1] == 3
    assert results["test"]["top1"] > 0.3  # three epochs on real clothes images beat chance (0.1) clearly


def test_cifar10_lt_official_recipe_runs_on_real_images(shared_data_root, tmp_path):
    config = resolve_config("cifar10-lt-ccsam-official", [f"data.root={shared_data_root}", "data.n_max=100",
                                                          "stage1.epochs=1", "stage2.epochs=1", "device=cpu"])
    results = train(config, RunDir.create(tmp_path / "run", config, ["test"]), progress=False)
    assert results["test"]["num_samples"] == 10_000 and sum(results["class_counts"]) == 242
    records = RunDir.open(tmp_path / "run").read_metrics()
    assert [r["stage"] for r in records] == [1, 2]
