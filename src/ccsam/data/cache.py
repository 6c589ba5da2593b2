"""One-file, lossless data cache of a run's three splits (``ccsam data export`` / ``data.cache``).

A machine without the data set (e.g. a lent GPU) trains from the cache alone. Pixels are stored as PNG
(:mod:`ccsam.data.codecs`, libpng: per-row prediction filters + deflate), :data:`PNG_CHUNK` images per PNG
laid out as one tall image. CIFAR-10-LT IR 100 (train + validation + test, 69.4 MB of pixels) takes
47.9 MB, lossless, decoded in 1-4 s (``benchmarks/cache_codec.py``: 1% smaller and 5x to 9x faster to
load than the MED + zlib codec with a Python decode loop of format 2; encoding is 1.2x-1.6x slower).

Integrity: the metadata (JSON) carries a sha256 of every stored array (PNG streams, decoded pixels,
labels) and the split manifest with its own sha256; the metadata itself is checksummed too. Any
changed byte is refused with one line before the data is used (a checksum is not a signature: it
catches corruption and edits, the safe loader keeps crafted files from running code).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from ccsam import strict_json
from ccsam.atomic_io import atomic_write_bytes, check_writable
from ccsam.config.schema import DataConfig
from ccsam.data.arrays import ImageArrays
from ccsam.data.codecs import Backend, decode_png, encode_png
from ccsam.data.long_tail import LongTailData
from ccsam.data.splits import SplitManifest
from ccsam.errors import CcsamError
from ccsam.safe_load import load_torch_file

# 3: PNG-coded pixels; 2: MED residuals + zlib (a Python decode loop, 5x-9x slower); 1: no label checksums
CACHE_FORMAT = 3
PNG_CHUNK = 1024  # images per PNG: large enough that the per-PNG overhead vanishes, small enough to stream
PNG_MAX_ROWS = 1_000_000  # libpng's default limit on an image's height (and width): fewer images per PNG above it
# Pixels per PNG: under Pillow's decompression-bomb limits (a warning above 89.5 M pixels, refused above 179 M),
# so the Pillow back end decodes every stream this module writes
PNG_MAX_PIXELS = 1 << 25
# The data-config fields that decide the content of the three splits; a run may only use a cache whose
# fields equal its own.
SPLIT_FIELDS = ("dataset", "profile", "imbalance_ratio", "n_max", "subset_seed", "subset_protocol",
                "val_per_class", "digits_test_per_class", "synthetic")
_BEFORE_FIELD = {"subset_protocol": "per_class_rng"}  # what caches written before a field existed used
_OLD_FORMATS = {1: "no label checksums", 2: "MED + zlib pixels"}


class DataCacheError(CcsamError):
    """A cache file that is missing, corrupt, or built for another data configuration."""


def _sprite(images: torch.Tensor) -> torch.Tensor:
    """uint8 [n, C, H, W] -> one PNG-ready image: RGB [3, n * H, W] (images stacked vertically) when C = 3,
    else grayscale [1, n * C * H, W] (every channel plane stacked), so any channel count is stored."""
    n, c, h, w = images.shape
    if c == 3:
        return images.permute(1, 0, 2, 3).reshape(3, n * h, w)
    return images.reshape(1, n * c * h, w)


def _unsprite(sprite: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`_sprite` for images of ``shape`` = (C, H, W)."""
    c, h, w = shape
    if c == 3:
        return sprite.reshape(3, -1, h, w).permute(1, 0, 2, 3).contiguous()
    return sprite.reshape(-1, c, h, w)


def png_encode(images: torch.Tensor, level: int = 9, backend: Backend | None = None) -> tuple[torch.Tensor, list[int]]:
    """uint8 [N, C, H, W] -> (the PNG streams of every :data:`PNG_CHUNK` images, or fewer where their stacked
    rows would pass :data:`PNG_MAX_ROWS` or their pixels :data:`PNG_MAX_PIXELS`, concatenated, uint8 [M]; the
    byte length of each stream), at zlib ``level`` 0..9, with the codec ``backend`` (default: the installed one)."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    images = images.cpu().contiguous()
    rows = images.shape[2] * (1 if images.shape[1] == 3 else images.shape[1])  # sprite rows per image
    if rows > PNG_MAX_ROWS or images.shape[3] > PNG_MAX_ROWS:
        raise ValueError(f"images of shape {tuple(images.shape[1:])} exceed PNG's {PNG_MAX_ROWS} rows / columns")
    chunk = max(1, min(PNG_CHUNK, PNG_MAX_ROWS // rows, PNG_MAX_PIXELS // max(1, rows * images.shape[3])))
    streams = [encode_png(_sprite(images[i:i + chunk]), level, backend)
               for i in range(0, len(images), chunk)] if images.numel() else []
    sizes = [int(s.numel()) for s in streams]
    return (torch.cat(streams) if streams else torch.zeros(0, dtype=torch.uint8)), sizes


def png_decode(streams: torch.Tensor, sizes: list[int], shape: tuple[int, ...],
               backend: Backend | None = None) -> torch.Tensor:
    """Inverse of :func:`png_encode`: uint8 [N, C, H, W] of ``shape`` from the concatenated streams.

    Raises:
        ValueError: the sizes do not add up, a stream is not a valid PNG, or the pixels do not fill ``shape``.
    """
    if sum(sizes) != streams.numel() or len(shape) != 4:
        raise ValueError(f"{len(sizes)} PNG streams of {sum(sizes)} bytes in total do not match the "
                         f"{streams.numel()} bytes stored")
    parts, start = [], 0
    for size in sizes:
        try:
            parts.append(_unsprite(decode_png(streams[start:start + size], backend), shape[1:]))
        except ValueError as exc:
            raise ValueError(f"invalid PNG stream ({str(exc)[:80]})") from None
        start += size
    images = torch.cat(parts) if parts else torch.zeros(shape, dtype=torch.uint8)
    if tuple(images.shape) != tuple(shape):
        raise ValueError(f"decoded {tuple(images.shape)} images, expected {tuple(shape)}")
    return images


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().numpy().tobytes()


def _encode_split(arrays: ImageArrays, level: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored tensors of one split and their checksums and PNG stream sizes (kept in the metadata)."""
    images = arrays.images.cpu().contiguous()
    pixels, sizes = png_encode(images, level)
    labels = arrays.labels.cpu().to(torch.int64).clone()
    stored = {"shape": list(images.shape), "pixels": pixels, "labels": labels}
    sums = {"shape": list(images.shape), "png_sizes": sizes, "pixels_png_sha256": _sha256(_tensor_bytes(pixels)),
            "pixels_sha256": _sha256(_tensor_bytes(images)), "labels_sha256": _sha256(_tensor_bytes(labels))}
    return stored, sums


def _decode_split(stored: Any, sums: dict[str, Any], class_names: tuple[str, ...], path: Path,
                  split: str) -> ImageArrays:
    def corrupt(what: str) -> DataCacheError:
        return DataCacheError(f"data cache '{path}' is corrupt or was edited ({split} {what} checksum "
                              "mismatch); "
                              "export it again (nothing was used)")

    if not isinstance(stored, dict):
        raise corrupt("split")
    pixels, labels = stored.get("pixels"), stored.get("labels")
    if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.dim() != 1:
        raise corrupt("pixels")
    if _sha256(_tensor_bytes(pixels)) != sums["pixels_png_sha256"]:
        raise corrupt("pixels")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise corrupt("labels")
    if _sha256(_tensor_bytes(labels)) != sums["labels_sha256"]:
        raise corrupt("labels")
    try:
        images = png_decode(pixels, [int(s) for s in sums["png_sizes"]], tuple(int(d) for d in sums["shape"]))
    except (ValueError, TypeError, KeyError):
        raise corrupt("pixels") from None
    if _sha256(_tensor_bytes(images)) != sums["pixels_sha256"]:
        raise corrupt("decoded pixels")
    try:
        return ImageArrays(images, labels, class_names)
    except ValueError as exc:
        raise DataCacheError(f"data cache '{path}': {split} split is inconsistent ({exc}); "
                             "export it again") from None


def split_fields(cfg: DataConfig) -> dict[str, Any]:
    """The data-config values that determine the split content, as JSON-ready values."""
    dumped = cfg.model_dump(mode="json")
    return {name: dumped[name] for name in SPLIT_FIELDS}


def export_cache(data: LongTailData, cfg: DataConfig, path: str | Path, level: int = 9) -> dict[str, Any]:
    """Write ``data`` (train, validation, test, manifest, statistics) to ``path``; refuses to overwrite.

    ``level`` is the PNG (zlib) compression level, 0..9. Returns the path, the file's bytes and the raw
    pixel bytes.
    """
    path = Path(path)
    if path.exists():
        raise DataCacheError(f"'{path}' already exists; choose another --out (nothing was written)")
    if not isinstance(data.train, ImageArrays):
        raise DataCacheError(f"data.dataset={data.name} streams image files from disk and has no cache; "
                             "copy the images and list files instead")
    check_writable(path.parent)
    checksums: dict[str, dict[str, Any]] = {}
    meta = {
        "format": CACHE_FORMAT,
        "name": data.name,
        "class_names": list(data.train.class_names),
        "mean": list(data.mean),
        "std": list(data.std),
        "split_fields": split_fields(cfg),
        "manifest": data.manifest.to_dict(),
        "checksums": checksums,
    }
    payload: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        payload[split], checksums[split] = _encode_split(getattr(data, split), level)
    payload["meta"] = strict_json.dumps(meta)
    payload["meta_sha256"] = _sha256(payload["meta"].encode())
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    raw = sum(getattr(data, s).images.numel() for s in ("train", "val", "test"))
    return {"path": str(path), "bytes": path.stat().st_size, "raw_pixel_bytes": raw}


def load_cache(path: str | Path, cfg: DataConfig) -> LongTailData:
    """Read a cache written by :func:`export_cache`, checking it matches ``cfg``'s split fields."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataCacheError(f"data cache '{path}' not found; make one with `ccsam data export --out {path}`")
    payload = load_torch_file(path, "data cache", f"Export it again with `ccsam data export --out {path}`")
    meta = _checked_meta(payload, path)
    wanted, stored = split_fields(cfg), meta["split_fields"]
    for key in SPLIT_FIELDS:
        had = stored.get(key, _BEFORE_FIELD.get(key))
        if wanted[key] != had:
            raise DataCacheError(
                f"data cache '{path}' was exported with data.{key}={had!r} but this run asks for "
                f"{wanted[key]!r}; export a cache for this configuration or drop data.cache"
            )
    names = tuple(meta["class_names"])
    splits = {s: _decode_split(payload.get(s), meta["checksums"][s], names, path, s)
              for s in ("train", "val", "test")}
    try:
        manifest = SplitManifest.from_dict(meta["manifest"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataCacheError(f"data cache '{path}': its split manifest is invalid ({str(exc)[:120]}); "
                             "export it again") from None
    counts = torch.as_tensor(manifest.class_counts, dtype=torch.long)
    if torch.bincount(splits["train"].labels, minlength=len(names)).tolist() != counts.tolist():
        raise DataCacheError(f"data cache '{path}': the training labels do not match the split manifest's "
                             "class counts; export it again")
    return LongTailData(meta["name"], splits["train"], splits["val"], splits["test"], counts, manifest,
                        tuple(meta["mean"]), tuple(meta["std"]))


def _checked_meta(payload: Any, path: Path) -> dict[str, Any]:
    """The cache's metadata after checking its format and its checksum."""
    try:
        text = payload["meta"]
        meta = json.loads(text)
    except (TypeError, KeyError, ValueError) as exc:
        raise DataCacheError(f"'{path}' is not a ccsam data cache ({exc.__class__.__name__}); pass a file "
                             "written by `ccsam data export`") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        what = _OLD_FORMATS.get(found, "unknown") if isinstance(found, int) else "unknown"
        raise DataCacheError(f"data cache '{path}' has format {found} ({what}), "
                             f"this version of ccsam reads format {CACHE_FORMAT} (PNG pixels); re-export it "
                             "with `ccsam data export --out NEW_FILE` where the data set is (nothing was used)")
    if payload.get("meta_sha256") != _sha256(text.encode()):
        raise DataCacheError(f"data cache '{path}' is corrupt or was edited (metadata checksum mismatch); "
                             "export it again (nothing was used)")
    return meta
