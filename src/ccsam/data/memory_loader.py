"""Batches drawn by index from a device-resident uint8 image tensor.

The whole (small) data set lives on the training device once; a sampler gives an epoch of positions,
and each batch is gathered, augmented and normalised as whole tensors. The random state (augmentation
generator, mixup Beta RNG, sampler) is exposed through ``state_dict`` so a checkpoint resumes the exact
batch sequence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import (
    MixedBatch,
    crop_at,
    crop_offsets,
    cutout,
    cutout_at,
    cutout_centres,
    flip_mask,
    flip_where,
    mixup_draws,
    normalize,
    random_crop,
    random_horizontal_flip,
)
from ccsam.data.autoaugment import (
    CIFAR10_POLICY,
    autoaugment,
    autoaugment_apply,
    autoaugment_draws,
    autoaugment_single,
)

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


#: Per-sample random draws of one batch: ``(operation, draws)`` in :data:`AUGMENT_MODES` order, the draws a
#: tensor (or tuple of tensors) with one row per sample, ``None`` where the operation draws nothing.
AugmentDraws = list[tuple[str, Any]]


def draw_augmentation(
    spec: AugmentSpec, batch: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> AugmentDraws:
    """Every random number the spec's augmentation of a ``batch``-image batch draws, in the order that
    :func:`augment_uint8` draws them (operation by operation), without touching an image."""
    draws: AugmentDraws = []
    for op in AUGMENT_MODES[spec.mode]:
        if op == "crop":
            draws.append((op, crop_offsets(batch, spec.padding, generator, device) if spec.padding else None))
        elif op == "flip":
            draws.append((op, flip_mask(batch, generator, device)))
        elif op == "autoaugment":
            draws.append((op, autoaugment_draws(batch, len(CIFAR10_POLICY), generator, device)))
        elif op == "cutout":
            size = spec.cutout_size
            draws.append((op, cutout_centres(batch, height, width, generator, device) if size > 0 else None))
    return draws


def take_rows(draws: AugmentDraws, rows: torch.Tensor) -> AugmentDraws:
    """The draws of the samples ``rows`` of the batch (in that order)."""
    def take(d: Any) -> Any:
        return tuple(t[rows] for t in d) if isinstance(d, tuple) else (None if d is None else d[rows])

    return [(op, take(d)) for op, d in draws]


def apply_augmentation(images: torch.Tensor, spec: AugmentSpec, draws: AugmentDraws) -> torch.Tensor:
    """uint8 images augmented with given draws (one row per image), still uint8."""
    for op, d in draws:
        if d is None:
            continue
        if op == "crop":
            images = crop_at(images, spec.padding, d)
        elif op == "flip":
            images = flip_where(images, d)
        elif op == "autoaugment":
            images = autoaugment_apply(images, d, CIFAR10_POLICY, fill=spec.autoaugment_fill)
        elif op == "cutout":
            images = cutout_at(images, spec.cutout_size, d)
    return images


def augment_images(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """uint8 images -> the spec's augmentations in order, then normalised float32 (per-sample randomness)."""
    return normalize(augment_uint8(images, spec, generator), spec.mean, spec.std)


def augment_uint8(images: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """uint8 images -> the spec's augmentations in order, still uint8 (per-sample randomness)."""
    # The ops one by one (their draws interleaved with applying them: the same random numbers in the same
    # order as draw_augmentation + apply_augmentation, which the in-memory loader uses)
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


def mix_rows(
    images: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, lam: float, perm: torch.Tensor | None
) -> MixedBatch:
    """Rows ``keep`` of the mixup batch of ``images`` / ``labels`` (the whole batch's tensors): ``lam *
    x_i + (1 - lam) * x_perm[i]`` for ``i`` in ``keep`` (:func:`ccsam.data.augment.mixup`'s rows)."""
    if perm is None:
        return MixedBatch(images[keep], labels[keep], labels[keep], 1.0)
    partners = perm[keep]
    mixed = lam * images[keep] + (1.0 - lam) * images[partners]
    return MixedBatch(mixed, labels[keep], labels[partners], lam)


def needed_rows(keep: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    """The rows of a batch whose images rows ``keep`` of its mixup batch need: ``keep`` and their mixup
    partners, sorted, without repeats."""
    return keep if perm is None else torch.unique(torch.cat([keep, perm[keep]]))


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

    Attributes:
        keep: the rows of each (global) batch that this process keeps, ``None`` for all (under torchrun
            rank ``r`` keeps its slice). Every random number is drawn for the whole batch, so a sample
            is augmented and mixed identically whatever ``keep`` is; only the kept rows and their mixup
            partners are augmented.
    """

    keep: slice | None = None

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
        """Batches per epoch: ``len(sampler) // batch_size`` (the sampler's epoch, which may be longer or
        shorter than the data set, cut to whole batches)."""
        return len(self.sampler) // self.batch_size

    def epoch(self) -> Iterator[MixedBatch]:
        """One epoch of augmented (and, if enabled, mixed) batches (the rows ``keep`` of each)."""
        device = self.arrays.images.device
        order = self.sampler.sample_epoch().to(device)
        _, _, height, width = self.arrays.images.shape
        everything = torch.arange(self.batch_size, device=device)
        keep = everything if self.keep is None else everything[self.keep]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            draws = draw_augmentation(self.augment, self.batch_size, height, width, self.generator, device)
            lam, perm = mixup_draws(self.batch_size, self.mixup_alpha, self.generator, self.beta_rng, device)
            rows = needed_rows(keep, perm)
            images = apply_augmentation(self.arrays.images[index[rows]], self.augment, take_rows(draws, rows))
            inputs = normalize(images, self.augment.mean, self.augment.std)
            # scattered back to batch positions so that mixing indexes as in one process
            full = inputs.new_empty((self.batch_size, *inputs.shape[1:]))
            full[rows] = inputs
            batch = mix_rows(full, self.arrays.labels[index], keep, lam, perm)
            yield dataclasses.replace(batch, inputs=batch.inputs.contiguous(memory_format=self.memory_format))

    def state_dict(self) -> dict[str, Any]:
        """Sampler, augmentation-generator and mixup-RNG state, taken between epochs (as the trainer does):
        a state taken inside an epoch does not continue that epoch's batch sequence."""
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
