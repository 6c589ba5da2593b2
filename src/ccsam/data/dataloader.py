"""The ``torch.utils.data.DataLoader`` path: per-sample CPU work in worker processes.

For data that does not fit in (device) memory: images held on the host (:class:`AugmentedImages`) or
JPEG files on disk (:class:`~ccsam.data.jpeg.ImageFileDataset`). It yields the same
:class:`MixedBatch` objects as :class:`~ccsam.data.memory_loader.InMemoryLoader` and keeps the same sampler
and mixup semantics, so the engine does not know which path it is fed by.

Randomness: every sample is fetched by a key ``(index, seed)``; ``seed`` seeds that sample's own
augmentation generator. The seeds of an epoch are ``base, base + 1, ...`` with ``base`` drawn from a
generator whose state is checkpointed (``state_dict``), so a resumed run draws the same augmentations
whatever the number of workers, and workers can persist across epochs.

Where images are normalised: on CUDA the workers return ``uint8`` images (a quarter of the bytes to
pin and copy) and the device normalises the batch; on the CPU each worker normalises its own images
(``normalized=True``), so the main process, which also runs the model, does not spend a pass over every
pixel (measured on 224 px batches of 64: that pass costs more than a worker's decode + crop).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import MixedBatch, mixup_draws, normalize
from ccsam.data.memory_loader import AugmentSpec, augment_images, augment_uint8, mix_rows, needed_rows
from ccsam.errors import CcsamError

Key = tuple[int, int]
ToDevice = Callable[[Any, torch.device], tuple[torch.Tensor, torch.Tensor]]


class AugmentedImages(Dataset):
    """Map-style data set over host-memory images: key ``(i, seed)`` -> image ``i`` augmented (``uint8``,
    or normalised ``float32`` with ``normalize``).

    The per-sample operations are the batched ones applied to a batch of one, drawing from a generator
    seeded by ``seed``, so the same spec means the same augmentation family as in memory.
    """

    def __init__(self, arrays: ImageArrays, spec: AugmentSpec, normalize: bool = False) -> None:
        self.images, self.labels, self.spec = arrays.images.cpu(), arrays.labels.cpu(), spec
        self.augment = augment_images if normalize else augment_uint8

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, Key]:
        index, seed = key
        image = self.augment(self.images[index : index + 1], self.spec, torch.Generator().manual_seed(seed))
        return image[0], self.labels[index], key


class EpochBatches(Sampler[list[Key]]):
    """The ``(index, seed)`` keys of the current epoch's batches; the owner replaces ``batches`` before each
    pass (a batch sampler: the batches of one process may hold different numbers of keys under mixup)."""

    def __init__(self) -> None:
        self.batches: list[list[Key]] = []

    def __iter__(self) -> Iterator[list[Key]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def epoch_keys(order: torch.Tensor, generator: torch.Generator) -> list[Key]:
    """Pair each index of ``order`` with its augmentation seed ``base + position``, ``base`` drawn from
    ``generator``."""
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    return list(zip(order.tolist(), range(base, base + len(order)), strict=True))


def batches_to(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Default transfer: ``(uint8 images, labels, keys)`` from the workers -> images, labels on ``device``."""
    return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


def one_line(exc: CcsamError) -> CcsamError:
    """A worker's error re-raised by the DataLoader carries the worker traceback; keep its own last line."""
    text = str(exc).strip().splitlines()
    last = text[-1] if text else ""
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return type(exc)(last.removeprefix(prefix))


def make_loader(
    dataset: Dataset,
    sampler: Sampler[Key] | Sampler[list[Key]] | list[Key],
    batch_size: int | None,
    *,
    drop_last: bool,
    num_workers: int,
    device: torch.device,
    persistent: bool = False,
    prefetch_factor: int = 2,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader over keyed samples: pinned memory on CUDA; persistent workers, prefetch if workers run.
    ``batch_size=None``: ``sampler`` is a batch sampler (lists of keys)."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"persistent_workers": persistent, "prefetch_factor": prefetch_factor}
    if batch_size is None:
        extra["batch_sampler"] = sampler
    else:
        extra.update(batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    return DataLoader(
        dataset,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_fn,
        **extra,
    )


class DataLoaderBatches:
    """Training batches from a persistent DataLoader over a keyed data set, normalised on ``device``.

    Same interface as :class:`~ccsam.data.memory_loader.InMemoryLoader`: ``epoch()``, ``len()``,
    ``state_dict()`` / ``load_state_dict()``.

    Args:
        dataset: returns ``(image, label, key)`` for a key ``(index, seed)``: ``uint8``, or already
            normalised ``float32`` when ``normalized``.
        sampler: object with ``sample_epoch() -> Tensor`` and ``state_dict()`` / ``load_state_dict()``.
        mean, std: per-channel normalisation applied on the device.
        to_device: turns a collated batch into ``(uint8 images, labels)`` on the device (GPU decoding
            replaces it).

    Attributes:
        keep: the rows of each (global) batch this process keeps, ``None`` for all (under torchrun rank
            ``r`` keeps its slice). Every sample's augmentation seed and every mixup draw are those of
            the whole batch; the workers load and augment only the kept rows and their mixup partners.
    """

    keep: slice | None = None

    def __init__(
        self,
        dataset: Dataset,
        sampler: Any,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        mixup_alpha: float,
        seed: int,
        device: torch.device,
        *,
        num_workers: int = 2,
        memory_format: torch.memory_format = torch.contiguous_format,
        prefetch_factor: int = 2,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        to_device: ToDevice = batches_to,
        normalized: bool = False,
    ) -> None:
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.mean, self.std, self.mixup_alpha = mean, std, mixup_alpha
        self.device, self.memory_format, self.to_device = device, memory_format, to_device
        self.generator = torch.Generator().manual_seed(seed)  # per-epoch seed bases, checkpointed
        self.mix_generator = torch.Generator(device=device).manual_seed(seed)
        self.beta_rng = np.random.Generator(np.random.PCG64(seed))
        self._batches = EpochBatches()
        self.normalized = normalized
        self._loader = make_loader(
            dataset,
            self._batches,
            None,
            drop_last=True,
            num_workers=num_workers,
            device=device,
            persistent=True,
            prefetch_factor=prefetch_factor,
            collate_fn=collate_fn,
        )

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def epoch(self) -> Iterator[MixedBatch]:
        """One epoch of normalised (and, if enabled, mixed) batches in the sampler's order (rows ``keep``)."""
        keys = epoch_keys(self.sampler.sample_epoch(), self.generator)
        size = self.batch_size
        everything = torch.arange(size, device=self.device)
        keep = everything if self.keep is None else everything[self.keep]
        # every batch's mixup draws up front (the same sequence as drawn batch by batch): the partners
        # decide which rows the workers load
        mixes = [mixup_draws(size, self.mixup_alpha, self.mix_generator, self.beta_rng, self.device)
                 for _ in range(len(keys) // size)]
        rows = [needed_rows(keep, perm) for _, perm in mixes]
        self._batches.batches = [[keys[k * size + r] for r in need.tolist()] for k, need in enumerate(rows)]
        try:
            for (lam, perm), need, batch in zip(mixes, rows, self._loader, strict=True):
                images, labels = self.to_device(batch, self.device)
                inputs = images if self.normalized else normalize(images, self.mean, self.std)
                full = inputs.new_empty((size, *inputs.shape[1:]))
                full[need] = inputs  # back to batch positions, so that mixing indexes as in one process
                all_labels = labels.new_empty(size)
                all_labels[need] = labels
                mixed = mix_rows(full, all_labels, keep, lam, perm)
                yield dataclasses.replace(mixed, inputs=mixed.inputs.contiguous(memory_format=self.memory_format))
        except CcsamError as exc:
            raise one_line(exc) from None

    def state_dict(self) -> dict[str, Any]:
        """Sampler, seed-generator and mixup-RNG state, taken between epochs (as the trainer does): a
        state taken inside an epoch resumes at the next epoch, not at the next batch."""
        return {
            "sampler": self.sampler.state_dict(),
            "generator": self.generator.get_state().clone(),
            "mix_generator": self.mix_generator.get_state().clone(),
            "beta_rng": self.beta_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])
        self.mix_generator.set_state(state["mix_generator"].cpu())
        self.beta_rng.bit_generator.state = state["beta_rng"]
