"""Batched augmentation: crop geometry, exact flips, mixup targets, and the loader's resumable state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import cutout, mixup, normalize, random_crop, random_horizontal_flip
from ccsam.data.memory_loader import AugmentSpec, InMemoryLoader
from ccsam.data.samplers import ClassAwareSampler


def _generator(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _ramp_images(b: int = 64, c: int = 3, h: int = 6, w: int = 5) -> torch.Tensor:
    return (torch.arange(b * c * h * w) % 250 + 1).to(torch.uint8).view(b, c, h, w)


def test_random_crop_is_a_window_of_the_zero_padded_image():
    images, pad = _ramp_images(), 2
    out = random_crop(images, pad, _generator())
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = set()
    for i in range(images.shape[0]):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(padded[i, :, dy:dy + 6, dx:dx + 5], out[i])]
        assert len(matches) == 1  # ramp content makes the window unique
        offsets.add(matches[0])
    assert len(offsets) > 10  # per-sample offsets, not one per batch
    assert (out == 0).any()  # zero padding shows up at shifted positions


def test_random_crop_without_padding_is_identity():
    images = _ramp_images()
    assert torch.equal(random_crop(images, 0, _generator()), images)


def test_flip_is_exact_and_per_sample():
    images = _ramp_images()
    out = random_horizontal_flip(images, _generator(3))
    flipped = [torch.equal(out[i], images[i].flip(-1)) for i in range(len(images))]
    kept = [torch.equal(out[i], images[i]) for i in range(len(images))]
    assert all(f != k for f, k in zip(flipped, kept, strict=False))
    assert 16 < sum(flipped) < 48


def test_cutout_zeroes_one_clipped_square_per_image():
    images = torch.full((400, 3, 32, 32), 255, dtype=torch.uint8)
    out = cutout(images, 16, _generator(5))
    holes = out[:, 0] == 0
    assert torch.equal(holes[:, None].expand_as(out), out == 0)  # same hole in every channel
    areas = holes.sum((1, 2))
    assert int(areas.max()) == 256 and int(areas.min()) >= 64  # centre inside: at least a quarter remains
    assert float((areas == 256).float().mean()) > 0.15  # holes fully inside happen (centre in [8, 24))
    for hole in holes[:50]:
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        # the zeros fill exactly the bounding box: one axis-aligned rectangle of side <= 16
        assert int(hole.sum()) == len(rows) * len(cols) and len(rows) <= 16 and len(cols) <= 16
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
    assert torch.equal(cutout(images, 0, _generator()), images)


def test_normalize_matches_the_formula():
    images = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)
    out = normalize(images, (0.5, 0.2), (0.25, 0.1))
    expected = torch.tensor([[[[-2.0, 2.0]], [[0.0, 2.0]]]])
    torch.testing.assert_close(out, expected)


def test_mixup_mixes_inputs_and_targets_consistently():
    x = torch.randn(8, 3, 4, 4)
    y = torch.arange(8) % 4
    batch = mixup(x, y, 1.0, _generator(1), np.random.Generator(np.random.PCG64(0)))
    assert 0.0 <= batch.lam <= 1.0
    perm = [int(torch.nonzero(y[j] == batch.targets_b).numel() > 0) for j in range(8)]
    assert all(perm)
    soft = batch.soft_targets(4)
    torch.testing.assert_close(soft.sum(1), torch.ones(8))
    # the mixed input is lam * x + (1 - lam) * x[perm] for the permutation implied by targets_b
    for i in range(8):
        candidates = [j for j in range(8) if y[j] == batch.targets_b[i]]
        assert any(torch.allclose(batch.inputs[i], batch.lam * x[i] + (1 - batch.lam) * x[j]) for j in candidates)


def test_mixup_alpha_zero_is_identity():
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 3])
    batch = mixup(x, y, 0.0, _generator(), np.random.Generator(np.random.PCG64(0)))
    assert batch.lam == 1.0 and batch.inputs is x and torch.equal(batch.targets_b, y)


def _loader(seed: int = 0) -> InMemoryLoader:
    labels = torch.tensor([0] * 20 + [1] * 8 + [2] * 4)
    arrays = ImageArrays(_ramp_images(32, 1, 6, 6), labels, ("a", "b", "c"))
    sampler = ClassAwareSampler(labels, 3, seed=seed)
    return InMemoryLoader(arrays, sampler, 6, AugmentSpec("crop_flip", 1, (0.5,), (0.25,)), 1.0, seed)


def test_loader_drops_the_last_partial_batch_and_balances_classes():
    loader = _loader()
    batches = list(loader.epoch())
    assert len(batches) == len(loader) == 32 // 6
    labels = torch.cat([b.targets_a for b in batches])
    counts = torch.bincount(labels, minlength=3)
    assert counts.max() - counts.min() <= 1  # class-aware sampling is balanced over the epoch


def test_loader_state_dict_resumes_the_exact_batch_sequence():
    first = _loader()
    list(first.epoch())
    state = first.state_dict()
    expected = [(b.inputs.clone(), b.targets_a.clone(), b.lam) for b in first.epoch()]
    second = _loader(seed=123)
    second.load_state_dict(state)
    got = [(b.inputs, b.targets_a, b.lam) for b in second.epoch()]
    for (xa, ya, la), (xb, yb, lb) in zip(expected, got, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and la == lb


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_augmentations_run_on_cuda():
    images = _ramp_images().cuda()
    g = torch.Generator(device="cuda")
    g.manual_seed(0)
    assert random_crop(images, 2, g).is_cuda and random_horizontal_flip(images, g).is_cuda


@pytest.mark.parametrize("mode", ["none", "crop", "crop_flip", "crop_flip_cutout", "autoaugment_cutout"])
def test_every_augment_mode_yields_normalised_float_batches(mode):
    labels = torch.arange(24) % 3
    images = (torch.arange(24 * 3 * 32 * 32) % 251).to(torch.uint8).view(24, 3, 32, 32)
    arrays = ImageArrays(images, labels, ("a", "b", "c"))
    spec = AugmentSpec(mode, 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), cutout_size=8)
    loader = InMemoryLoader(arrays, ClassAwareSampler(labels, 3, seed=0), 8, spec, 0.0, 0)
    batches = list(loader.epoch())
    assert len(batches) == 3 and all(b.inputs.dtype == torch.float32 for b in batches)
    assert all(b.inputs.shape == (8, 3, 32, 32) for b in batches)
    if mode == "none":
        first = batches[0]
        # un-augmented inputs are exact normalised copies of some training images of the right class
        flat = normalize(images, spec.mean, spec.std).flatten(1)
        for x, y in zip(first.inputs.flatten(1), first.targets_a, strict=False):
            match = (flat == x).all(1).nonzero().flatten()
            assert len(match) == 1 and labels[match[0]] == y


def test_unknown_augment_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown augment mode"):
        AugmentSpec("mixup_everything", 4, (0.5,), (0.25,))
