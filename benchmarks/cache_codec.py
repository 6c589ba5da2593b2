"""Data-cache image codec: PNG (cache format 3, ``ccsam.data.cache``) vs the MED + zlib codec of format 2.

Both codecs store the same pixels, the three splits of a real CIFAR-10-LT run (train subset, validation,
test), losslessly. Measured per codec: stored bytes, encode time and decode time (the decode is the load
time of a cache: every pixel decoded). The MED codec (median edge detector / LOCO-I prediction residuals,
Weinberger et al., IEEE TIP 2000, then zlib) is kept in this file as the baseline; its decoder is a
pure-Python loop over pixel positions, vectorised over images. The two codecs run interleaved
(A B, B A, ...) in every round so load from other processes hits both alike; the medians over rounds
and the ratios PNG / MED are printed. A last step writes and reads a real format-3 cache file through
``export_cache`` / ``load_cache`` (checksums, torch.save framing included).

Usage:
    python benchmarks/cache_codec.py --data-root ../shared/data            # CIFAR-10-LT IR 100, 2 rounds
    python benchmarks/cache_codec.py --data-root ../shared/data --rounds 3 --level 6
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torchvision

from ccsam.config import resolve_config
from ccsam.data.build import build_data
from ccsam.data.cache import export_cache, load_cache, png_decode, png_encode

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")
T = TypeVar("T")


def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The left, up and up-left neighbour of every pixel (0 outside the image)."""
    left, up, up_left = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    left[..., 1:] = x[..., :-1]
    up[..., 1:, :] = x[..., :-1, :]
    up_left[..., 1:, 1:] = x[..., :-1, :-1]
    return left, up, up_left


def _med(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """MED prediction: min(a, b) if c >= max(a, b); max(a, b) if c <= min(a, b); else a + b - c."""
    hi, lo = np.maximum(left, up), np.minimum(left, up)
    return np.where(up_left >= hi, lo, np.where(up_left <= lo, hi, left + up - up_left))


def med_encode(images: np.ndarray, level: int) -> bytes:
    """uint8 [..., H, W] -> zlib of the residuals (x - MED(left, up, up-left)) mod 256 (format 2)."""
    x = images.astype(np.int16)
    return zlib.compress(((x - _med(*_neighbours(x))) % 256).astype(np.uint8).tobytes(), level)


def med_decode(stream: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`med_encode`: rebuilds the pixels in raster order, vectorised over images."""
    res = np.frombuffer(zlib.decompress(stream), dtype=np.uint8).reshape(shape).astype(np.int16)
    out = np.zeros(res.shape, dtype=np.int16)
    height, width = res.shape[-2:]
    zero = np.zeros(res.shape[:-2], dtype=np.int16)
    for h in range(height):
        for w in range(width):
            left = out[..., h, w - 1] if w else zero
            up = out[..., h - 1, w] if h else zero
            up_left = out[..., h - 1, w - 1] if h and w else zero
            out[..., h, w] = (res[..., h, w] + _med(left, up, up_left)) % 256
    return out.astype(np.uint8)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Seconds of one call of ``fn`` and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def med_round(images: torch.Tensor, level: int) -> tuple[float, float, int, torch.Tensor]:
    """Encode seconds, decode seconds, stored bytes and the decoded images of the MED + zlib codec."""
    seconds_enc, stream = timed(lambda: med_encode(images.numpy(), level))
    seconds_dec, decoded = timed(lambda: med_decode(stream, tuple(images.shape)))
    return seconds_enc, seconds_dec, len(stream), torch.from_numpy(decoded)


def png_round(images: torch.Tensor, level: int) -> tuple[float, float, int, torch.Tensor]:
    """Encode seconds, decode seconds, stored bytes and the decoded images of the PNG codec (format 3)."""
    seconds_enc, (streams, sizes) = timed(lambda: png_encode(images, level))
    seconds_dec, decoded = timed(lambda: png_decode(streams, sizes, tuple(images.shape)))
    return seconds_enc, seconds_dec, int(streams.numel()), decoded


CODECS = {"MED+zlib (format 2)": med_round, "PNG (format 3)": png_round}


def main() -> None:
    """Measure both codecs on the three splits of a CIFAR-10-LT run and print sizes, times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("CCSAM_DATA_ROOT", "../shared/data"))
    parser.add_argument("--preset", default="cifar10-lt-ccsam-official")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--level", type=int, default=9, help="zlib / PNG compression level (the cache uses 9)")
    args = parser.parse_args()

    cfg = resolve_config(args.preset, [f"data.root={args.data_root}"])
    data = build_data(cfg.data)
    splits = [data.train.images, data.val.images, data.test.images]
    images = torch.cat(splits)
    raw = images.numel()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.get_num_threads()} threads")
    print(f"data: {args.preset}, train {len(data.train)} + val {len(data.val)} + test {len(data.test)} images, "
          f"{raw / 1e6:.1f} MB of pixels; level {args.level}; {args.rounds} rounds, interleaved")

    names = list(CODECS)
    enc: dict[str, list[float]] = {n: [] for n in names}
    dec: dict[str, list[float]] = {n: [] for n in names}
    size: dict[str, int] = {}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            seconds_enc, seconds_dec, size[name], decoded = CODECS[name](images, args.level)
            enc[name].append(seconds_enc)
            dec[name].append(seconds_dec)
            if not torch.equal(decoded, images):
                raise SystemExit(f"{name} is not lossless")
    print("\n| codec | stored MB | of raw | encode s (median) | decode = load s (median) |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        print(f"| {name} | {size[name] / 1e6:.2f} | {size[name] / raw:.3f} | {statistics.median(enc[name]):.2f} | "
              f"{statistics.median(dec[name]):.2f} |")
    med, png = names
    print(f"\nratios PNG / MED: size {size[png] / size[med]:.3f}, "
          f"encode time {statistics.median(a / b for a, b in zip(enc[png], enc[med], strict=True)):.2f}, "
          f"decode (load) time {statistics.median(a / b for a, b in zip(dec[png], dec[med], strict=True)):.3f} "
          f"(medians of the per-round ratios)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.cache"
        seconds_out, info = timed(lambda: export_cache(data, cfg.data, path, level=args.level))
        seconds_in, _ = timed(lambda: load_cache(path, cfg.data.model_copy(update={"cache": str(path)})))
    print(f"format-3 cache file: {info['bytes'] / 1e6:.2f} MB (export {seconds_out:.2f} s, "
          f"load_cache {seconds_in:.2f} s, checksums and framing included)")


if __name__ == "__main__":
    main()
