"""In-memory image data set: one uint8 image tensor, one label tensor and the class names.

Every reader in :mod:`ccsam.data.readers` returns an :class:`ImageArrays`, so the rest of the
package (splits, samplers, loaders) deals with one shape of data whatever the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["ImageArrays"]


@dataclass(frozen=True)
class ImageArrays:
    """A whole image data set held as tensors.

    Attributes:
        images: ``uint8`` tensor ``[N, C, H, W]``, made contiguous on construction.
        labels: ``int64`` tensor ``[N]`` with values in ``[0, len(class_names))``.
        class_names: one name per class; its length defines ``num_classes``.

    Example:
        >>> data = ImageArrays(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), ("a", "b"))
        >>> data.num_classes, len(data)
        (2, 2)
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"ImageArrays.images must be a uint8 tensor [N, C, H, W], got "
                f"{_describe(images)}; convert with images.to(torch.uint8) and reshape to 4-D"
            )
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
            raise ValueError(
                f"ImageArrays.labels must be an int64 tensor [N], got {_describe(labels)}; "
                "convert with labels.to(torch.int64).flatten()"
            )
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"ImageArrays has {images.shape[0]} images but {labels.shape[0]} labels; "
                "pass one label per image"
            )
        if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
            raise ValueError("ImageArrays.class_names must be a sequence of strings, one per class")
        names = tuple(str(name) for name in self.class_names)
        if not names:
            raise ValueError("ImageArrays.class_names is empty; pass one name per class")
        if labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= len(names):
                raise ValueError(
                    f"ImageArrays labels span [{low}, {high}] but there are {len(names)} class names; "
                    f"labels must lie in [0, {len(names) - 1}]"
                )
        # Frozen dataclass: normalise the fields in place once, here.
        object.__setattr__(self, "images", images.contiguous())
        object.__setattr__(self, "labels", labels.contiguous())
        object.__setattr__(self, "class_names", names)

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)`` (classes without images included)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> torch.Tensor:
        """Return the ``int64`` number of images per class, shape ``[num_classes]``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageArrays:
        """Return the images and labels at ``indices`` (in that order) as a new :class:`ImageArrays`.

        Example:
            ``train = full_train.subset(torch.tensor(manifest.train_indices))``
        """
        index = torch.as_tensor(indices, dtype=torch.int64)
        if index.dim() != 1:
            raise ValueError(f"subset indices must be 1-D, got shape {tuple(index.shape)}; flatten them")
        if index.numel() > 0 and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise ValueError(
                f"subset indices span [{int(index.min())}, {int(index.max())}] but the data set has "
                f"{len(self)} images; pass positions in [0, {len(self) - 1}]"
            )
        return ImageArrays(self.images[index], self.labels[index], self.class_names)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
