"""The classic ``torch.utils.data.DataLoader`` path: per-sample CPU transforms in worker processes.

For data sets that do not fit in (device) memory. It yields the same :class:`MixedBatch` objects as
:class:`~ccsam.data.loader.InMemoryLoader` and keeps the same sampler and mixup semantics, so the
engine does not know which path it is fed by. Worker randomness is seeded from an explicit generator
whose state is checkpointed (``state_dict``), so a resumed run draws the same augmentations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import MixedBatch, mixup
from ccsam.data.loader import AugmentSpec, augment_images


class AugmentedImages(Dataset):
    """Map-style data set: image ``i`` augmented on its own (uint8 in, normalised float out).

    The per-sample operations are the batched ones applied to a batch of one, drawing from a generator
    seeded by torch's per-worker seed, so the same spec means the same augmentation family as in memory.
    """

    def __init__(self, arrays: ImageArrays, spec: AugmentSpec) -> None:
        self.images, self.labels, self.spec = arrays.images.cpu(), arrays.labels.cpu(), spec
        self.main_generator = torch.Generator().manual_seed(0)  # used when there are no workers
        self._worker_generator: torch.Generator | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _rng(self) -> torch.Generator:
        # Each worker gets a distinct seed drawn from the loader's generator; without workers the owner
        # sets ``main_generator`` every epoch. Either way the stream is fixed by checkpointed state.
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.main_generator
        if self._worker_generator is None or self._worker_generator.initial_seed() != info.seed:
            self._worker_generator = torch.Generator().manual_seed(info.seed)
        return self._worker_generator

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = augment_images(self.images[index : index + 1], self.spec, self._rng())
        return image[0], self.labels[index]


class DataLoaderBatches:
    """Training batches from a :class:`DataLoader` over :class:`AugmentedImages`, moved to ``device``.

    Same interface as :class:`~ccsam.data.loader.InMemoryLoader`: ``epoch()``, ``len()``,
    ``state_dict()`` / ``load_state_dict()``.
    """

    def __init__(
        self,
        arrays: ImageArrays,
        sampler: Any,
        batch_size: int,
        augment: AugmentSpec,
        mixup_alpha: float,
        seed: int,
        device: torch.device,
        num_workers: int = 2,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.dataset = AugmentedImages(arrays, augment)
        self.sampler, self.batch_size, self.mixup_alpha = sampler, batch_size, mixup_alpha
        self.device, self.num_workers, self.memory_format = device, num_workers, memory_format
        self.generator = torch.Generator().manual_seed(seed)  # seeds the workers, then mixup pairing
        self.mix_generator = torch.Generator(device=device).manual_seed(seed)
        self.beta_rng = np.random.Generator(np.random.PCG64(seed))

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def epoch(self) -> Iterator[MixedBatch]:
        order = self.sampler.sample_epoch().tolist()
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        self.dataset.main_generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order, drop_last=True,
                            num_workers=self.num_workers, generator=self.generator,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        for inputs, labels in loader:
            inputs = inputs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            labels = labels.to(self.device, non_blocking=True)
            yield mixup(inputs, labels, self.mixup_alpha, self.mix_generator, self.beta_rng)

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "generator": self.generator.get_state().clone(),
            "mix_generator": self.mix_generator.get_state().clone(),
            "beta_rng": self.beta_rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])
        self.mix_generator.set_state(state["mix_generator"].cpu())
        self.beta_rng.bit_generator.state = state["beta_rng"]
