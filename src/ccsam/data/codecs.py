"""Image codecs: lossless PNG (the data cache) and any-format decoding to RGB (image-file data sets).

Two back ends compute the same pixels:

- ``torchvision``: ``torchvision.io`` (C: libpng, libjpeg-turbo), used wherever it is installed.
  torchvision 0.29 marks its image codecs deprecated (to be removed in favour of TorchCodec);
- ``pillow``: Pillow (torchvision's own image dependency), used where ``torchvision.io`` no longer has
  them. PNG is lossless, so both back ends decode the same PNG to the same pixels and each decodes
  the other's streams; for JPEG both use libjpeg-turbo with its default (integer, slow) IDCT and
  fancy upsampling, and decode to identical pixels (``tests/data/test_codecs.py`` checks both against
  each other). Pillow's JPEG path is about 2x slower per image (1.0 vs 0.5 ms for 400 x 350 on one
  core of the CPU machine); its PNG path is within 20 %.

Every function raises :class:`ValueError` (one line, the decoder's reason) for data it cannot decode,
whichever back end runs.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

__all__ = ["BACKENDS", "Backend", "decode_png", "decode_rgb", "default_backend", "encode_png",
           "torchvision_cuda_jpeg_decoder"]

Backend = Literal["torchvision", "pillow"]
BACKENDS: tuple[Backend, ...] = ("torchvision", "pillow")


def _torchvision_io() -> Any | None:
    """``torchvision.io`` if it still has the image codecs this module uses, else ``None``."""
    try:
        import torchvision.io as tvio
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    needed = ("encode_png", "decode_png", "decode_image", "ImageReadMode")
    return tvio if all(hasattr(tvio, name) for name in needed) else None


_TVIO = _torchvision_io()


def default_backend() -> Backend:
    """``torchvision`` where ``torchvision.io`` has its image codecs, else ``pillow``."""
    return "torchvision" if _TVIO is not None else "pillow"


def _resolve(backend: Backend | None) -> Backend:
    chosen = backend or default_backend()
    if chosen not in BACKENDS:
        raise ValueError(f"unknown image codec back end {chosen!r}; choose one of {', '.join(BACKENDS)}")
    if chosen == "torchvision" and _TVIO is None:
        raise ValueError("this torchvision has no image codecs in torchvision.io; use backend='pillow'")
    return chosen


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _pil_open(data: torch.Tensor) -> Any:
    from PIL import Image

    image = Image.open(io.BytesIO(data.cpu().numpy().tobytes()))
    image.load()
    return image


def _pil_to_chw(image: Any) -> torch.Tensor:
    array = np.asarray(image)  # read-only, [H, W] or [H, W, C]
    array = array[:, :, None] if array.ndim == 2 else array
    chw = np.empty((array.shape[2], array.shape[0], array.shape[1]), dtype=np.uint8)
    chw[...] = array.transpose(2, 0, 1)  # the one copy, writable
    return torch.from_numpy(chw)


def encode_png(image: torch.Tensor, level: int = 9, backend: Backend | None = None) -> torch.Tensor:
    """The PNG stream (``uint8 [n]``) of one ``uint8`` image ``[1 | 3, H, W]`` at zlib ``level`` 0..9."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"a PNG image must be uint8 [1 | 3, H, W], got {image.dtype} {tuple(image.shape)}")
    image = image.cpu().contiguous()
    if _resolve(backend) == "torchvision":
        return _TVIO.encode_png(image, compression_level=level)  # type: ignore[union-attr]
    from PIL import Image

    array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=level)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def decode_png(data: torch.Tensor, backend: Backend | None = None) -> torch.Tensor:
    """The pixels ``uint8 [C, H, W]`` of one 8-bit grayscale or RGB PNG stream ``data`` (``uint8 [n]``).

    Raises:
        ValueError: ``data`` is not a decodable PNG.
    """
    try:
        if _resolve(backend) == "torchvision":
            return _TVIO.decode_png(data)  # type: ignore[union-attr,no-any-return]
        image = _pil_open(data)
        if image.format != "PNG" or image.mode not in ("L", "RGB"):
            raise ValueError(f"not an 8-bit grayscale or RGB PNG ({image.format} {image.mode})")
        return _pil_to_chw(image)
    except (RuntimeError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(_first_line(exc)) from None


def decode_rgb(data: torch.Tensor, backend: Backend | None = None) -> torch.Tensor:
    """The pixels ``uint8 [3, H, W]`` of an image file's bytes ``data`` (JPEG, PNG, WEBP, ...; grayscale,
    palette and CMYK images converted to RGB, alpha dropped; no EXIF rotation, as torchvision).

    Raises:
        ValueError: ``data`` is not a decodable image.
    """
    try:
        if _resolve(backend) == "torchvision":
            return _TVIO.decode_image(data, mode=_TVIO.ImageReadMode.RGB)  # type: ignore[union-attr,no-any-return]
        image = _pil_open(data)
        return _pil_to_chw(image if image.mode == "RGB" else image.convert("RGB"))
    except (RuntimeError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(_first_line(exc)) from None


def torchvision_cuda_jpeg_decoder() -> Callable[..., list[torch.Tensor]] | None:
    """A batched nvJPEG decoder ``f(list of byte tensors, device) -> list of uint8 [3, H, W]`` (torchvision's
    ``decode_jpeg(device='cuda')``), or ``None`` where this torchvision no longer has it."""
    if _TVIO is None or not hasattr(_TVIO, "decode_jpeg"):
        return None
    tvio = _TVIO

    def decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        return tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=device)  # type: ignore[no-any-return]

    return decode
