"""The data of one run: long-tailed train split, balanced validation split, test split, and their manifest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ccsam.data.arrays import ImageArrays
from ccsam.data.image_files import ImageFiles
from ccsam.data.splits import SplitManifest

__all__ = ["LongTailData", "Split"]

Split = ImageArrays | ImageFiles  # a split held in memory, or read from disk batch by batch


@dataclass(frozen=True)
class LongTailData:
    """The three splits of one run, its class counts and the manifest that pins the subset.

    Splits are in-memory :class:`ImageArrays`, or :class:`ImageFiles` read from disk batch by batch.
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_counts: torch.Tensor
    manifest: SplitManifest
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def in_channels(self) -> int:
        if isinstance(self.train, ImageFiles):
            return self.train.channels
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


def _arrays_to(arrays: Split, device: torch.device) -> Split:
    if isinstance(arrays, ImageFiles):  # files stay on disk; batches move to the device
        return arrays
    return ImageArrays(arrays.images.to(device), arrays.labels.to(device), arrays.class_names)
