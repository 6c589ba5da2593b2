"""A rank's slice-only batches equal the slice of the global batch (no process group needed: ``keep``).

Under torchrun every rank draws all the random numbers of the global batch but augments (memory path)
or loads and augments (DataLoader path) only its own rows and their mixup partners. The reference here
is the same loader with ``keep=None``: the whole global batch, augmented and mixed as in one process.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import ccsam.data.memory_loader as loader_module
from ccsam.data.arrays import ImageArrays
from ccsam.data.dataloader import AugmentedImages, DataLoaderBatches
from ccsam.data.memory_loader import AugmentSpec, InMemoryLoader
from ccsam.data.samplers import InstanceSampler
from ccsam.distributed import local_rows

BATCH, WORLD = 8, 2
MODES = ["crop_flip", "autoaugment_cutout"]


def _arrays() -> ImageArrays:
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8, generator=gen)
    return ImageArrays(images, torch.arange(40) % 4, ("a", "b", "c", "d"))


def _spec(mode: str) -> AugmentSpec:
    return AugmentSpec(mode, 2, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3), cutout_size=4)


def _memory(mode: str, mixup: float) -> InMemoryLoader:
    return InMemoryLoader(_arrays(), InstanceSampler(40, seed=5), BATCH, _spec(mode), mixup, seed=11)


def _workers(mode: str, mixup: float) -> DataLoaderBatches:
    spec = _spec(mode)
    return DataLoaderBatches(AugmentedImages(_arrays(), spec), InstanceSampler(40, seed=5), BATCH, spec.mean,
                             spec.std, mixup, 11, torch.device("cpu"), num_workers=0)


def _epochs(loader: Any, keep: slice | None, epochs: int = 2) -> list[Any]:
    loader.keep = keep
    return [batch for _ in range(epochs) for batch in loader.epoch()]


@pytest.mark.parametrize("make", [_memory, _workers], ids=["memory", "dataloader"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mixup", [0.0, 1.0])
def test_slice_only_batches_equal_the_slice_of_the_global_batch(make, mode: str, mixup: float) -> None:
    whole = _epochs(make(mode, mixup), None)
    assert len(whole) == 2 * (40 // BATCH)
    if mixup:
        assert any(b.lam < 1.0 for b in whole)
    for r in range(WORLD):
        rows = local_rows(BATCH, r, WORLD)
        own = _epochs(make(mode, mixup), rows)
        for g, b in zip(whole, own, strict=True):
            assert b.inputs.shape[0] == BATCH // WORLD
            assert torch.equal(b.inputs, g.inputs[rows])
            assert torch.equal(b.targets_a, g.targets_a[rows]) and torch.equal(b.targets_b, g.targets_b[rows])
            assert b.lam == g.lam


def test_the_global_batch_is_the_one_process_batch() -> None:
    """``keep=None`` is the augmentation a batch always had: the composed ops on the whole batch."""
    loader = _memory("autoaugment_cutout", 0.0)
    gen = torch.Generator().manual_seed(11)
    order = InstanceSampler(40, seed=5).sample_epoch()
    first = next(iter(loader.epoch()))
    expected = loader_module.augment_images(_arrays().images[order[:BATCH]], _spec("autoaugment_cutout"), gen)
    assert torch.equal(first.inputs, expected)


def test_only_own_rows_and_mixup_partners_are_augmented(monkeypatch) -> None:
    seen: list[int] = []
    apply = loader_module.apply_augmentation

    def counting(images: torch.Tensor, *args: Any) -> torch.Tensor:
        seen.append(images.shape[0])
        return apply(images, *args)

    monkeypatch.setattr(loader_module, "apply_augmentation", counting)
    _epochs(_memory("crop_flip", 0.0), local_rows(BATCH, 1, WORLD), epochs=1)
    assert seen and set(seen) == {BATCH // WORLD}
    seen.clear()
    _epochs(_memory("crop_flip", 1.0), local_rows(BATCH, 1, WORLD), epochs=1)
    assert all(BATCH // WORLD <= n <= BATCH for n in seen) and min(seen) < BATCH
