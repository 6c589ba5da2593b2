"""Batches drawn by index from a device-resident uint8 image tensor.

The whole (small) data set lives on the training device once; a sampler gives an epoch of positions,
and each batch is gathered, augmented and normalised as whole tensors. The random state (augmentation
generator, mixup Beta RNG, sampler) is exposed through ``state_dict`` so a checkpoint resumes the exact
batch sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import MixedBatch, cutout, mixup, normalize, random_crop, random_horizontal_flip
from ccsam.data.autoaugment import CIFAR10_POLICY, autoaugment, autoaugment_single

# Train-time augmentation modes and the operations each applies, in this order. "autoaugment_cutout" is
# the official code's "strong augmentation": RandomCrop, HFlip, CIFAR10Policy, then Cutout.
AUGMENT_MODES: dict[str, tuple[str, ...]] = {
    "none": (),
    "crop": ("crop",),
    "crop_flip": ("crop", "flip"),
    "crop_flip_cutout": ("crop", "flip", "cutout"),
    "autoaugment_cutout": ("crop", "flip", "autoaugment", "cutout"),
}


@dataclass(frozen=True)
class AugmentSpec:
    """Which train-time augmentation to apply (a key of :data:`AUGMENT_MODES`), and normalisation."""

    mode: str
    padding: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cutout_size: int = 16
    autoaugment_fill: int = 128

    def __post_init__(self) -> None:
        if self.mode not in AUGMENT_MODES:
            raise ValueError(f"unknown augment mode '{self.mode}'; choose one of {', '.join(AUGMENT_MODES)}")


def augment_images(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """uint8 images -> the spec's augmentations in order, then normalised float32 (per-sample randomness)."""
    return normalize(augment_uint8(images, spec, generator), spec.mean, spec.std)


def augment_uint8(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """uint8 images -> the spec's augmentations in order, still uint8 (per-sample randomness)."""
    for op in AUGMENT_MODES[spec.mode]:
        if op == "crop":
            images = random_crop(images, spec.padding, generator)
        elif op == "flip":
            images = random_horizontal_flip(images, generator)
        elif op == "autoaugment":
            # one image (DataLoader workers): the same draws and output, 1.7x faster without the grouping
            apply = autoaugment_single if len(images) == 1 else autoaugment
            images = apply(images, generator, CIFAR10_POLICY, fill=spec.autoaugment_fill)
        elif op == "cutout":
            images = cutout(images, spec.cutout_size, generator)
    return images


def _generator_state(generator: torch.Generator) -> torch.Tensor:
    return generator.get_state().clone()


class InMemoryLoader:
    """Training batches (``drop_last``) over a device-resident :class:`ImageArrays`.

    Args:
        arrays: the training set, already on the device.
        sampler: object with ``sample_epoch() -> Tensor`` and ``state_dict()`` / ``load_state_dict()``.
        batch_size: images per batch; the last incomplete batch of an epoch is dropped.
        augment: augmentation mode and normalisation.
        mixup_alpha: Beta(alpha, alpha) mixup; 0 disables it.
        seed: seeds the augmentation generator and the mixup RNG.
        memory_format: layout of the float batches (``torch.channels_last`` on CUDA).
    """

    def __init__(
        self,
        arrays: ImageArrays,
        sampler: Any,
        batch_size: int,
        augment: AugmentSpec,
        mixup_alpha: float,
        seed: int,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.arrays = arrays
        self.memory_format = memory_format
        self.sampler = sampler
        self.batch_size = batch_size
        self.augment = augment
        self.mixup_alpha = mixup_alpha
        self.generator = torch.Generator(device=arrays.images.device)
        self.generator.manual_seed(seed)
        self.beta_rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.arrays) // self.batch_size

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        images = augment_images(images, self.augment, self.generator)
        return images.contiguous(memory_format=self.memory_format)

    def epoch(self) -> Iterator[MixedBatch]:
        """One epoch of augmented (and, if enabled, mixed) batches."""
        order = self.sampler.sample_epoch().to(self.arrays.images.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            inputs = self._augment(self.arrays.images[index])
            yield mixup(inputs, self.arrays.labels[index], self.mixup_alpha, self.generator, self.beta_rng)

    def state_dict(self) -> dict[str, Any]:
        """Sampler, augmentation-generator and mixup-RNG state."""
        return {
            "sampler": self.sampler.state_dict(),
            "generator": _generator_state(self.generator),
            "beta_rng": self.beta_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"].cpu())
        self.beta_rng.bit_generator.state = state["beta_rng"]


def eval_batches(
    arrays: ImageArrays,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised, un-augmented (inputs, labels) batches in order, the last one possibly short."""
    for start in range(0, len(arrays), batch_size):
        images = arrays.images[start : start + batch_size]
        inputs = normalize(images, mean, std).contiguous(memory_format=memory_format)
        yield inputs, arrays.labels[start : start + batch_size]
