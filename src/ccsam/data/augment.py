"""Batched image augmentation as pure tensor functions with per-sample randomness.

Every function takes an explicit ``torch.Generator`` on the images' device, works on a whole batch at
once (no per-sample Python) and runs unchanged on CPU and CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 [B, C, H, W] in 0..255 -> float32 (x / 255 - mean_c) / std_c."""
    x = images.to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def crop_offsets(batch: int, padding: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The random draws of :func:`random_crop`: ``[B, 2]`` offsets ``(dy, dx)`` in ``{0, ..., 2 * padding}``
    (all ``dy`` drawn first, then all ``dx``)."""
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=device)
    return torch.stack([dy, dx], dim=1)


def crop_at(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Zero-pad every image by ``padding`` pixels and crop back to H x W at its ``offsets[i] = (dy, dx)``."""
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy, dx = offsets[:, 0], offsets[:, 1]
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad every image by ``padding`` pixels, then crop back to H x W at a random offset per image.

    Equivalent to torchvision's ``RandomCrop(size, padding)`` applied independently to each image
    (offsets uniform in {0, ..., 2 * padding} on each axis).
    """
    if padding == 0:
        return images
    return crop_at(images, padding, crop_offsets(images.shape[0], padding, generator, images.device))


def flip_mask(batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The random draws of :func:`random_horizontal_flip`: ``[B]`` booleans, True with probability 1/2."""
    return torch.rand(batch, generator=generator, device=device) < 0.5


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose ``flip`` entry is True."""
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def random_horizontal_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2, independently per image."""
    return flip_where(images, flip_mask(images.shape[0], generator, images.device))


def cutout_centres(
    batch: int, height: int, width: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """The random draws of :func:`cutout`: ``[B, 2]`` hole centres ``(cy, cx)`` (all ``cy`` drawn first)."""
    cy = torch.randint(0, height, (batch,), generator=generator, device=device)
    cx = torch.randint(0, width, (batch,), generator=generator, device=device)
    return torch.stack([cy, cx], dim=1)


def cutout_at(images: torch.Tensor, size: int, centres: torch.Tensor) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image centred at ``centres[i] = (cy, cx)`` (see :func:`cutout`)."""
    _, _, h, w = images.shape
    cy, cx = centres[:, 0], centres[:, 1]
    rows = torch.arange(h, device=images.device)[None, :] - (cy[:, None] - size // 2)
    cols = torch.arange(w, device=images.device)[None, :] - (cx[:, None] - size // 2)
    inside_rows = (rows >= 0) & (rows < size)
    inside_cols = (cols >= 0) & (cols < size)
    hole = inside_rows[:, :, None] & inside_cols[:, None, :]
    return images.masked_fill(hole[:, None], 0)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017) with one square hole per image, zero-filled.

    The hole's centre is uniform over the image (cy in [0, H), cx in [0, W)) and it covers rows
    [cy - size // 2, cy - size // 2 + size) and the same for columns, clipped at the border, so holes
    near an edge are partly outside the image (as in the reference implementation). Applied to uint8
    images before normalisation, a zero pixel is black, as in the AutoAugment code bases (``ToTensor``,
    Cutout, then ``Normalize``); DeVries & Taylor's own code (uoguelph-mlrg/Cutout) cuts after
    ``Normalize``, so its hole holds the data set's mean instead. An odd ``size`` gives a ``size`` x
    ``size`` hole here; the reference's ``[c - size // 2, c + size // 2)`` is one pixel smaller.
    """
    if size <= 0:
        return images
    b, _, h, w = images.shape
    return cutout_at(images, size, cutout_centres(b, h, w, generator, images.device))


@dataclass(frozen=True)
class MixedBatch:
    """A mixup batch: inputs = lam * x + (1 - lam) * x[perm], targets_a = y, targets_b = y[perm]."""

    inputs: torch.Tensor
    targets_a: torch.Tensor
    targets_b: torch.Tensor
    lam: float

    def soft_targets(self, num_classes: int) -> torch.Tensor:
        """lam * onehot(y_a) + (1 - lam) * onehot(y_b), float [B, C]."""
        a = F.one_hot(self.targets_a, num_classes).to(self.inputs.dtype)
        b = F.one_hot(self.targets_b, num_classes).to(self.inputs.dtype)
        return self.lam * a + (1.0 - self.lam) * b


def mixup_draws(
    batch: int, alpha: float, generator: torch.Generator, beta_rng: np.random.Generator, device: torch.device
) -> tuple[float, torch.Tensor | None]:
    """The random draws of :func:`mixup`: ``lam ~ Beta(alpha, alpha)`` and the partner permutation
    (``(1.0, None)`` and no draw when ``alpha = 0``)."""
    if alpha <= 0:
        return 1.0, None
    lam = float(beta_rng.beta(alpha, alpha))
    return lam, torch.randperm(batch, generator=generator, device=device)


def mixup(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    generator: torch.Generator,
    beta_rng: np.random.Generator,
) -> MixedBatch:
    """Mixup (Zhang et al., ICLR 2018): lam ~ Beta(alpha, alpha) once per batch, a random pairing.

    ``alpha = 0`` returns the batch unchanged (lam = 1, targets_b = targets).
    """
    lam, perm = mixup_draws(inputs.shape[0], alpha, generator, beta_rng, inputs.device)
    if perm is None:
        return MixedBatch(inputs, targets, targets, 1.0)
    mixed = lam * inputs + (1.0 - lam) * inputs[perm]
    return MixedBatch(mixed, targets, targets[perm], lam)
