"""The ``torch.utils.data.DataLoader`` path: per-sample CPU work in worker processes.

For data that does not fit in (device) memory: images held on the host (:class:`AugmentedImages`) or
JPEG files on disk (:class:`~ccsam.data.jpeg.ImageFileDataset`). It yields the same
:class:`MixedBatch` objects as :class:`~ccsam.data.loader.InMemoryLoader` and keeps the same sampler
and mixup semantics, so the engine does not know which path it is fed by.

Randomness: every sample is fetched by a key ``(index, seed)``; ``seed`` seeds that sample's own
augmentation generator. The seeds of an epoch are ``base, base + 1, ...`` with ``base`` drawn from a
generator whose state is checkpointed (``state_dict``), so a resumed run draws the same augmentations
whatever the number of workers, and workers can persist across epochs.

Where the batch is normalised: on CUDA the workers return ``uint8`` batches (a quarter of the bytes to
pin and copy) and the device normalises them; on the CPU the workers normalise their own batches in
``collate`` (:class:`NormalizingCollate`), so the main process, which also runs the model, does not
spend a pass over every pixel (measured: that pass alone costs more than a worker's decode + crop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import MixedBatch, mixup, normalize
from ccsam.data.loader import AugmentSpec, augment_uint8
from ccsam.errors import CcsamError

Key = tuple[int, int]
ToDevice = Callable[[Any, torch.device], tuple[torch.Tensor, torch.Tensor]]


class AugmentedImages(Dataset):
    """Map-style data set over host-memory images: key ``(i, seed)`` -> image ``i`` augmented (``uint8``).

    The per-sample operations are the batched ones applied to a batch of one, drawing from a generator
    seeded by ``seed``, so the same spec means the same augmentation family as in memory.
    """

    def __init__(self, arrays: ImageArrays, spec: AugmentSpec) -> None:
        self.images, self.labels, self.spec = arrays.images.cpu(), arrays.labels.cpu(), spec

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, Key]:
        index, seed = key
        image = augment_uint8(self.images[index : index + 1], self.spec, torch.Generator().manual_seed(seed))
        return image[0], self.labels[index], key


class EpochKeys(Sampler[Key]):
    """The ``(index, seed)`` keys of the current epoch; the owner replaces ``keys`` before each pass."""

    def __init__(self) -> None:
        self.keys: list[Key] = []

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def epoch_keys(order: torch.Tensor, generator: torch.Generator) -> list[Key]:
    """Pair each index of ``order`` with its augmentation seed ``base + position``, ``base`` drawn from
    ``generator``."""
    base = int(torch.randint(0, 2**62, (1,), generator=generator))
    return list(zip(order.tolist(), range(base, base + len(order)), strict=True))


def batches_to(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Default transfer: ``(uint8 images, labels, keys)`` from the workers -> images, labels on ``device``."""
    return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


class NormalizingCollate:
    """``collate`` that also normalises the ``uint8`` batch (runs in the worker; picklable)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = mean, std

    def __call__(self, items: list[Any]) -> Any:
        images, labels, keys = default_collate(items)
        return normalize(images, self.mean, self.std), labels, keys


def worker_collate(
    collate_fn: Callable[[list[Any]], Any] | None, device: torch.device, mean: tuple[float, ...],
    std: tuple[float, ...],
) -> tuple[Callable[[list[Any]], Any] | None, bool]:
    """(collate_fn, normalised_in_workers): normalise in the workers when training on the CPU."""
    if collate_fn is None and device.type == "cpu":
        return NormalizingCollate(mean, std), True
    return collate_fn, False


def one_line(exc: CcsamError) -> CcsamError:
    """A worker's error re-raised by the DataLoader carries the worker traceback; keep its own last line."""
    text = str(exc).strip().splitlines()
    last = text[-1] if text else ""
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return type(exc)(last.removeprefix(prefix))


def make_loader(
    dataset: Dataset,
    sampler: Sampler[Key] | list[Key],
    batch_size: int,
    *,
    drop_last: bool,
    num_workers: int,
    device: torch.device,
    persistent: bool = False,
    prefetch_factor: int = 2,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader over keyed samples: pinned memory on CUDA; persistent workers, prefetch if workers run."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"persistent_workers": persistent, "prefetch_factor": prefetch_factor}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        collate_fn=collate_fn,
        **extra,
    )


class DataLoaderBatches:
    """Training batches from a persistent DataLoader over a keyed data set, normalised on ``device``.

    Same interface as :class:`~ccsam.data.loader.InMemoryLoader`: ``epoch()``, ``len()``,
    ``state_dict()`` / ``load_state_dict()``.

    Args:
        dataset: returns ``(uint8 image, label, key)`` for a key ``(index, seed)``.
        sampler: object with ``sample_epoch() -> Tensor`` and ``state_dict()`` / ``load_state_dict()``.
        mean, std: per-channel normalisation applied on the device.
        to_device: turns a collated batch into ``(uint8 images, labels)`` on the device (GPU decoding
            replaces it).
    """

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
    ) -> None:
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.mean, self.std, self.mixup_alpha = mean, std, mixup_alpha
        self.device, self.memory_format, self.to_device = device, memory_format, to_device
        self.generator = torch.Generator().manual_seed(seed)  # per-epoch seed bases, checkpointed
        self.mix_generator = torch.Generator(device=device).manual_seed(seed)
        self.beta_rng = np.random.Generator(np.random.PCG64(seed))
        self._keys = EpochKeys()
        collate_fn, self._normalized = worker_collate(collate_fn, device, mean, std)
        self._loader = make_loader(
            dataset,
            self._keys,
            batch_size,
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
        """One epoch of normalised (and, if enabled, mixed) batches in the sampler's order."""
        self._keys.keys = epoch_keys(self.sampler.sample_epoch(), self.generator)
        try:
            for batch in self._loader:
                images, labels = self.to_device(batch, self.device)
                inputs = images if self._normalized else normalize(images, self.mean, self.std)
                inputs = inputs.contiguous(memory_format=self.memory_format)
                yield mixup(inputs, labels, self.mixup_alpha, self.mix_generator, self.beta_rng)
        except CcsamError as exc:
            raise one_line(exc) from None

    def state_dict(self) -> dict[str, Any]:
        """Sampler, seed-generator and mixup-RNG state."""
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
