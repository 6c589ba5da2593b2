"""JPEG decoding and the standard ImageNet train / test transforms on ``uint8`` tensors.

Decoding is :func:`ccsam.data.codecs.decode_rgb` (torchvision's C-backed ``decode_image`` where it is
installed, else Pillow; libjpeg-turbo for JPEG, also PNG / WEBP, always to RGB). The transforms work on
``uint8 [3, H, W]`` tensors. For CUDA training they return ``uint8`` and the batch is normalised on the
device (a quarter of the bytes to pin and copy); for CPU training they return the normalised ``float32``
image, so the workers, not the main process, pay for it.

Train: RandomResizedCrop(image_size, scale (0.08, 1), ratio (3/4, 4/3)), horizontal flip (p = 0.5),
then, where the data set uses it, ColorJitter(brightness = contrast = saturation = strength, hue 0)
in a random order (the OLTR transforms, spec 3.2). Test: resize the shorter side to
``round(image_size * 256 / 224)`` and centre-crop ``image_size``.

Every random draw comes from the ``torch.Generator`` passed in (one per sample, seeded from the
loader's checkpointed state), never from global state, so a resumed run sees the same crops.
Reduced-size (DCT-scaled) decoding is not used: torchvision's decoder does not offer it, and at the
benchmarks' image sizes (~400 x 350, Places-LT 256 x 256) a 224 crop almost never spans the >= 448
pixels per side that decoding at half size would need to lose nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from ccsam.data.codecs import decode_rgb
from ccsam.data.image_files import ImageFileError, ImageFiles

__all__ = [
    "EvalTransform",
    "ImageFileDataset",
    "TrainTransform",
    "color_jitter",
    "eval_resize_size",
    "read_image",
    "sample_resized_crop",
]

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
Normalization = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std) per channel, for x / 255


def eval_resize_size(image_size: int) -> int:
    """Shorter side before the test centre crop: 256 for 224, scaled with ``image_size``."""
    return round(image_size * 256 / 224)


def read_image(files: ImageFiles, index: int) -> torch.Tensor:
    """Decode image ``index`` of ``files`` to ``uint8 [3, H, W]`` (RGB, whatever the file holds).

    Raises:
        ImageFileError: the file is missing or cannot be decoded (the message names it and its list line).
    """
    return decode_bytes(read_bytes(files, index), files, index)


def read_bytes(files: ImageFiles, index: int) -> torch.Tensor:
    """The raw bytes of image ``index`` as a ``uint8 [n]`` tensor."""
    try:
        return torch.frombuffer(bytearray(files.path(index).read_bytes()), dtype=torch.uint8)
    except (OSError, ValueError) as exc:
        raise ImageFileError(
            f"{files.path(index)}: cannot read the image listed at {files.where(index)} "
            f"({_first_line(exc)}); restore the file or remove its line"
        ) from None


def decode_bytes(data: torch.Tensor, files: ImageFiles, index: int) -> torch.Tensor:
    """Decode one image's bytes (see :func:`read_image`)."""
    try:
        return decode_rgb(data)
    except ValueError as exc:
        raise ImageFileError(
            f"{files.path(index)}: not a decodable image (listed at {files.where(index)}: "
            f"{_first_line(exc)}); replace the file or remove its line"
        ) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def sample_resized_crop(
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering a ``scale`` fraction of the area at a log-uniform
    aspect ratio in ``ratio``; after 10 misses, the largest centred crop with a ratio inside ``ratio``.

    The same rule as torchvision's ``RandomResizedCrop.get_params``, drawing from ``generator``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    draws = torch.rand(10, 4, generator=generator, dtype=torch.float64).tolist()
    for u_area, u_ratio, u_top, u_left in draws:
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _gray(x: torch.Tensor) -> torch.Tensor:
    """``[1, H, W]`` luma of a contiguous float ``[3, H, W]`` image (one matrix product)."""
    weights = torch.tensor([_GRAY], dtype=x.dtype, device=x.device)
    return (weights @ x.view(3, -1)).view(1, *x.shape[1:])


def _mean_gray(x: torch.Tensor) -> float:
    """Mean luma of a float ``[3, H, W]`` image: the luma of the channel means."""
    means = x.view(3, -1).sum(dim=1) / x[0].numel()
    return float(sum(w * m for w, m in zip(_GRAY, means.tolist(), strict=True)))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Round a float image already clamped to [0, 255] to uint8 (numpy's cast on CPU: ~5x torch's)."""
    x = x.round_()
    if x.device.type == "cpu":
        return torch.from_numpy(x.numpy().astype(np.uint8))
    return x.to(torch.uint8)


def normalize_(x: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """In place: a float ``[3, H, W]`` image with values in [0, 255] -> ``(x / 255 - mean_c) / std_c``
    (the formula of :func:`ccsam.data.augment.normalize`, without its three full-size temporaries)."""
    mean, std = normalization
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(m * 255.0).div_(s * 255.0)


def color_jitter(
    image: torch.Tensor, strength: float, generator: torch.Generator, *, as_float: bool = False
) -> torch.Tensor:
    """ColorJitter(brightness = contrast = saturation = ``strength``, hue 0) on ``uint8 [3, H, W]``.

    Factors ``f ~ U[max(0, 1 - s), 1 + s]``, applied in a random order as blends (torchvision's
    definitions): brightness ``f x``; contrast ``f x + (1 - f) mean(gray(x))``; saturation
    ``f x + (1 - f) gray(x)``; each clamped to [0, 255]. Computed in float32 and rounded once at the end
    (torchvision rounds after each operation), which is what makes it cheap; ``as_float`` skips the
    rounding and returns the float32 image (still in [0, 255]) for normalisation.
    """
    draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    order = torch.randperm(3, generator=generator).tolist()
    low = max(0.0, 1.0 - strength)
    factors = [low + (1.0 + strength - low) * u for u in draws]
    x = image.to(torch.float32).contiguous()
    for op in order:
        f = factors[op]
        if op == 0:
            x = x.mul_(f)
        elif op == 1:
            mean = _mean_gray(x)  # of the image before this blend
            x = x.mul_(f).add_((1.0 - f) * mean)
        else:
            gray = _gray(x).mul_(1.0 - f)
            x = x.mul_(f).add_(gray)
        x = x.clamp_(0.0, 255.0)
    return x if as_float else _to_uint8(x)


def _finish(image: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """``uint8`` out as is, or (``normalization`` given) normalised ``float32``."""
    if normalization is None:
        return image.contiguous()
    return normalize_(image.to(torch.float32).contiguous(), normalization)


@dataclass(frozen=True)
class TrainTransform:
    """RandomResizedCrop(``size``) + horizontal flip (+ ColorJitter(``jitter``)) on one ``uint8`` image.

    Returns ``uint8``, or with ``normalization = (mean, std)`` the normalised ``float32`` image (used
    when training on the CPU, so the workers, not the main process, pay for normalising).
    """

    size: int
    jitter: float = 0.0
    normalization: Normalization | None = None

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        top, left, h, w = sample_resized_crop(int(image.shape[-2]), int(image.shape[-1]), generator)
        out = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        if float(torch.rand((), generator=generator, dtype=torch.float64)) < 0.5:
            out = out.flip(-1)
        if self.jitter > 0:
            out = color_jitter(out, self.jitter, generator, as_float=self.normalization is not None)
        return _finish(out, self.normalization)


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``eval_resize_size(size)``, then centre-crop ``size`` x ``size``
    (``uint8``, or normalised ``float32`` with ``normalization``)."""

    size: int
    normalization: Normalization | None = None

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = F.resize(image, [eval_resize_size(self.size)], antialias=True)
        return _finish(F.center_crop(out, [self.size, self.size]), self.normalization)


class ImageFileDataset(Dataset):
    """Map-style data set over :class:`ImageFiles` keyed by ``(index, seed)``.

    ``seed`` seeds the generator of that one sample's augmentation, so the result depends on the key
    alone (not on the worker that draws it or on how many workers there are). With ``decode_here``
    false the raw bytes are returned instead (``data.decode=gpu``: decoding happens on the device).
    """

    def __init__(
        self, files: ImageFiles, transform: TrainTransform | EvalTransform, decode_here: bool = True
    ) -> None:
        self.files, self.transform, self.decode_here = files, transform, decode_here

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        index, seed = key
        label = self.files.labels[index]
        if not self.decode_here:
            return read_bytes(self.files, index), label, key
        image = read_image(self.files, index)
        return self.transform(image, torch.Generator().manual_seed(seed)), label, key
