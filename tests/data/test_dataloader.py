"""The DataLoader path: same batches interface, per-sample augmentation in workers, exact resume."""

from __future__ import annotations

import pytest
import torch

from ccsam.config import resolve_config
from ccsam.data.arrays import ImageArrays
from ccsam.data.dataloader import AugmentedImages, DataLoaderBatches
from ccsam.data.memory_loader import AugmentSpec
from ccsam.data.samplers import ClassAwareSampler
from ccsam.training.checkpoint import load_checkpoint
from ccsam.training.run_dir import RunDir
from ccsam.training.trainer import Trainer, train


def _batches(num_workers: int, seed: int = 0) -> DataLoaderBatches:
    labels = torch.arange(30) % 3
    images = (torch.arange(30 * 1 * 8 * 8) % 241).to(torch.uint8).view(30, 1, 8, 8)
    spec = AugmentSpec("crop_flip_cutout", 2, (0.5,), (0.25,), cutout_size=3)
    dataset = AugmentedImages(ImageArrays(images, labels, ("a", "b", "c")), spec)
    return DataLoaderBatches(dataset, ClassAwareSampler(labels, 3, seed), 6, spec.mean, spec.std, 1.0, seed,
                             torch.device("cpu"), num_workers=num_workers)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_state_dict_replays_the_same_augmented_batches(num_workers):
    first = _batches(num_workers)
    list(first.epoch())
    state = first.state_dict()
    expected = [(b.inputs.clone(), b.targets_a.clone(), b.lam) for b in first.epoch()]
    second = _batches(num_workers, seed=99)
    second.load_state_dict(state)
    got = list(second.epoch())
    assert len(got) == len(expected) == 5
    for (x, y, lam), b in zip(expected, got, strict=False):
        assert torch.equal(x, b.inputs) and torch.equal(y, b.targets_a) and lam == b.lam
    assert not all(torch.equal(x, y) for (x, _, _), (y, _, _) in zip(expected, expected[1:], strict=False))


def test_dataloader_path_trains_and_resumes_exactly(tmp_path, tiny_overrides):
    config = resolve_config("digits-lt", tiny_overrides(**{"data.loader": "dataloader", "data.num_workers": 0}))
    reference = train(config, RunDir.create(tmp_path / "full", config, []), progress=False)
    run = RunDir.create(tmp_path / "cut", config, [])
    Trainer(config, run, progress=False).fit(stop_at=1)
    resumed = train(config, RunDir.open(run.path), resume=True, progress=False)
    assert resumed["test"] == reference["test"]
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(run.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
