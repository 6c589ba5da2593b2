"""The data of one run: long-tailed train split, balanced validation split, test split, and their manifest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ccsam.data.arrays import ImageArrays
from ccsam.data.splits import SplitManifest

__all__ = ["LongTailData"]


@dataclass(frozen=True)
class LongTailData:
    """The three splits of one run, its class counts and the manifest that pins the subset."""

    name: str
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    class_counts: torch.Tensor
    manifest: SplitManifest
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    def to(self, device: torch.device) -> LongTailData:
        """The same data with every image and label tensor on ``device``."""
        return LongTailData(
            self.name,
            _arrays_to(self.train, device),
            _arrays_to(self.val, device),
            _arrays_to(self.test, device),
            self.class_counts,
            self.manifest,
            self.mean,
            self.std,
        )


def _arrays_to(arrays: ImageArrays, device: torch.device) -> ImageArrays:
    return ImageArrays(arrays.images.to(device), arrays.labels.to(device), arrays.class_names)
