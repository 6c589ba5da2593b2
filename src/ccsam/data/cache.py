"""One-file, lossless data cache of a run's three splits (``ccsam data export`` / ``data.cache``).

A machine without the data set (e.g. a lent GPU) trains from the cache alone. Pixels are stored as
residuals of the median edge detector (MED / LOCO-I, Weinberger et al., IEEE TIP 2000) predictor,
compressed with zlib: CIFAR-10-LT IR 100 (train + validation + test, 69.4 MB of pixels) takes 48 MB,
lossless, decoded in a few seconds.

Integrity: the metadata (JSON) carries a sha256 of every stored array (compressed pixels, decoded
pixels, labels) and the split manifest with its own sha256; the metadata itself is checksummed too.
Any changed byte is refused with one line before the data is used (a checksum is not a signature: it
catches corruption and edits, the safe loader keeps crafted files from running code).
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccsam import strict_json
from ccsam.atomic_io import atomic_write_bytes, check_writable
from ccsam.config.schema import DataConfig
from ccsam.data.arrays import ImageArrays
from ccsam.data.long_tail import LongTailData
from ccsam.data.splits import SplitManifest
from ccsam.errors import CcsamError
from ccsam.safe_load import load_torch_file

CACHE_FORMAT = 2  # 2: checksums of every array and of the metadata (format 1 checked decoded pixels only)
# The data-config fields that decide the content of the three splits; a run may only use a cache whose
# fields equal its own.
SPLIT_FIELDS = ("dataset", "profile", "imbalance_ratio", "n_max", "subset_seed", "subset_protocol",
                "val_per_class", "digits_test_per_class", "synthetic")
_BEFORE_FIELD = {"subset_protocol": "per_class_rng"}  # what caches written before a field existed used


class DataCacheError(CcsamError):
    """A cache file that is missing, corrupt, or built for another data configuration."""


def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left = np.zeros_like(x)
    left[..., 1:] = x[..., :-1]
    up = np.zeros_like(x)
    up[..., 1:, :] = x[..., :-1, :]
    up_left = np.zeros_like(x)
    up_left[..., 1:, 1:] = x[..., :-1, :-1]
    return left, up, up_left


def _med(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """MED prediction: min(a, b) if c >= max(a, b); max(a, b) if c <= min(a, b); else a + b - c."""
    hi, lo = np.maximum(left, up), np.minimum(left, up)
    return np.where(up_left >= hi, lo, np.where(up_left <= lo, hi, left + up - up_left))


def med_encode(images: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W] -> uint8 residuals (x - MED(left, up, up-left)) mod 256 (pixels outside are 0)."""
    x = images.astype(np.int16)
    return ((x - _med(*_neighbours(x))) % 256).astype(np.uint8)


def med_decode(residuals: np.ndarray) -> np.ndarray:
    """Inverse of :func:`med_encode`: rebuilds the pixels in raster order, vectorised over images."""
    res = residuals.astype(np.int16)
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().numpy().tobytes()


def _encode_split(arrays: ImageArrays, level: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored tensors of one split and their checksums (kept in the metadata)."""
    images = arrays.images.cpu().numpy()
    # a uint8 tensor, not ``bytes``: torch.save's pickle protocol would inflate bytes objects by ~50%
    compressed = bytearray(zlib.compress(med_encode(images).tobytes(), level))
    pixels = torch.frombuffer(compressed, dtype=torch.uint8)
    labels = arrays.labels.cpu().to(torch.int64).clone()
    stored = {"shape": list(images.shape), "pixels": pixels, "labels": labels}
    sums = {"shape": list(images.shape), "pixels_zlib_sha256": _sha256(_tensor_bytes(pixels)),
            "pixels_sha256": _sha256(images.tobytes()), "labels_sha256": _sha256(_tensor_bytes(labels))}
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
    if _sha256(_tensor_bytes(pixels)) != sums["pixels_zlib_sha256"]:
        raise corrupt("pixels")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise corrupt("labels")
    if _sha256(_tensor_bytes(labels)) != sums["labels_sha256"]:
        raise corrupt("labels")
    shape = tuple(sums["shape"])
    try:
        residuals = np.frombuffer(zlib.decompress(_tensor_bytes(pixels)), dtype=np.uint8).reshape(shape)
    except (zlib.error, ValueError):
        raise corrupt("pixels") from None
    images = med_decode(residuals)
    if _sha256(images.tobytes()) != sums["pixels_sha256"]:
        raise corrupt("decoded pixels")
    try:
        return ImageArrays(torch.from_numpy(images), labels, class_names)
    except ValueError as exc:
        raise DataCacheError(f"data cache '{path}': {split} split is inconsistent ({exc}); "
                             "export it again") from None


def split_fields(cfg: DataConfig) -> dict[str, Any]:
    """The data-config values that determine the split content, as JSON-ready values."""
    dumped = cfg.model_dump(mode="json")
    return {name: dumped[name] for name in SPLIT_FIELDS}


def export_cache(data: LongTailData, cfg: DataConfig, path: str | Path, level: int = 9) -> dict[str, Any]:
    """Write ``data`` (train, validation, test, manifest, statistics) to ``path``; refuses to overwrite."""
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
    raw = sum(int(np.prod(payload[s]["shape"])) for s in ("train", "val", "test"))
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
        raise DataCacheError(f"data cache '{path}' has format {found}, expected {CACHE_FORMAT} (older caches "
                             "carry no label checksums); export it again with this version of ccsam")
    if payload.get("meta_sha256") != _sha256(text.encode()):
        raise DataCacheError(f"data cache '{path}' is corrupt or was edited (metadata checksum mismatch); "
                             "export it again (nothing was used)")
    return meta
