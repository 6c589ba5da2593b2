"""Data set readers: files on disk (or bundled / generated data) -> :class:`ImageArrays`.

Readers parse the standard distribution formats directly (CIFAR python pickles, idx files), so
they never depend on a downloader's integrity checks. Downloading happens only when asked for
(``download=True``) and only when the files are missing; it goes through torchvision, imported
lazily.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ccsam.checks import check_int
from ccsam.config.schema import DATASET_NAMES, FILE_DATASETS, DatasetName
from ccsam.data.arrays import ImageArrays
from ccsam.errors import CcsamError, DataFileError
from ccsam.safe_load import load_cifar_pickle

__all__ = [
    "ARRAY_DATASETS",
    "DATASET_NAMES",
    "DatasetNotFoundError",
    "make_synthetic",
    "read_cifar10",
    "read_cifar100",
    "read_dataset",
    "read_digits",
    "read_fashion_mnist",
]

#: The data sets read into memory as uint8 arrays (the rest of :data:`DATASET_NAMES` are image files).
ARRAY_DATASETS: tuple[str, ...] = tuple(n for n in DATASET_NAMES if n not in FILE_DATASETS)

PathLike = str | os.PathLike[str]
Split = Literal["train", "test"]


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


class DatasetNotFoundError(CcsamError, FileNotFoundError):
    """A data set's files are not where the reader looked; the message names the path and the fix.

    A :class:`~ccsam.errors.CcsamError`, so the command line reports it as one line.
    """


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _not_found(title: str, expected: Path, folder: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{title} not found: expected {expected}; pass --data-root pointing at the folder that holds "
        f"{folder}/, or set data.download=true to fetch it"
    )


def _find_folder(root: PathLike, folder: str, marker: str) -> Path | None:
    """Return ``root/folder`` or ``root`` itself, whichever holds ``marker``; None if neither."""
    base = Path(root).expanduser()
    for candidate in (base / folder, base):
        if (candidate / marker).is_file():
            return candidate
    return None


def _unpickle(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing, so {path.parent} is incomplete; restore the file or re-extract the archive"
        )
    content = load_cifar_pickle(path)
    if not isinstance(content, dict) or any(key not in content for key in keys):
        raise DataFileError(f"{path} is not a CIFAR python pickle with keys {keys}; re-extract the archive")
    return content


@dataclass(frozen=True)
class _CifarLayout:
    """Where a CIFAR variant keeps its pickles and which keys hold labels and class names."""

    title: str
    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: str
    meta: str
    names_key: str


_CIFAR10 = _CifarLayout(
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key="labels",
    meta="batches.meta",
    names_key="label_names",
)
_CIFAR100 = _CifarLayout(
    title="CIFAR-100",
    folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    label_key="fine_labels",
    meta="meta",
    names_key="fine_label_names",
)


def _read_cifar(layout: _CifarLayout, root: PathLike, split: Split, download: bool) -> ImageArrays:
    _check_split(split)
    marker = layout.files[split][0]
    base = _find_folder(root, layout.folder, marker)
    if base is None and download:
        # Lazy import: torchvision is needed only to fetch, never to read.
        from torchvision import datasets

        fetcher = datasets.CIFAR10 if layout is _CIFAR10 else datasets.CIFAR100
        fetcher(str(Path(root).expanduser()), train=split == "train", download=True)
        base = _find_folder(root, layout.folder, marker)
    if base is None:
        raise _not_found(layout.title, Path(root).expanduser() / layout.folder / marker, layout.folder)
    parts = [_cifar_batch(base / name, layout) for name in layout.files[split]]
    data = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    names = _unpickle(base / layout.meta, (layout.names_key,))[layout.names_key]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataFileError(f"{base / layout.meta} holds no list of class names; re-extract the archive")
    # Rows are stored channel-major (1024 red, 1024 green, 1024 blue), each plane row by row.
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return _checked_arrays(images, torch.from_numpy(labels), tuple(names), base)


def _cifar_batch(path: Path, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file as uint8 rows [N, 3072] and int64 labels [N], checked for layout."""
    batch = _unpickle(path, ("data", layout.label_key))
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[layout.label_key])
    except (TypeError, ValueError) as exc:
        raise DataFileError(
            f"{path} holds no image array ({exc.__class__.__name__}); re-extract the archive"
        ) from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(
            f"{path}: 'data' is {data.dtype} {list(data.shape)}, expected uint8 [N, 3072]; "
            "re-extract the archive"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataFileError(
            f"{path}: '{layout.label_key}' is {labels.dtype} {list(labels.shape)}, expected {data.shape[0]} "
            "integer labels; re-extract the archive"
        )
    return data, labels.astype(np.int64)


def read_cifar10(root: PathLike, split: Split, download: bool = False) -> ImageArrays:
    """Read CIFAR-10 from ``root/cifar-10-batches-py/`` (or ``root`` being that folder).

    Returns ``uint8 [N, 3, 32, 32]`` images (50,000 train, 10,000 test), labels and the class
    names from ``batches.meta``. With ``download=True`` and the files missing, torchvision fetches
    the archive into ``root`` first.

    Example (``"path/to/data"`` stands for your own data folder, so the call is not run here):
        >>> train = read_cifar10("path/to/data", "train")  # doctest: +SKIP
        >>> train.images.shape  # doctest: +SKIP
        torch.Size([50000, 3, 32, 32])
    """
    return _read_cifar(_CIFAR10, root, split, download)


def read_cifar100(root: PathLike, split: Split, download: bool = False) -> ImageArrays:
    """Read CIFAR-100 (fine labels) from ``root/cifar-100-python/`` (or ``root`` being that folder).

    Returns ``uint8 [N, 3, 32, 32]`` images (50,000 train, 10,000 test), the 100 fine labels and
    the names from ``meta`` ``fine_label_names``. ``download=True`` fetches via torchvision.

    Example (``"path/to/data"`` stands for your own data folder, so the call is not run here):
        >>> train = read_cifar100("path/to/data", "train")  # doctest: +SKIP
        >>> len(train.class_names)  # doctest: +SKIP
        100
    """
    return _read_cifar(_CIFAR100, root, split, download)


def _checked_arrays(
    images: torch.Tensor, labels: torch.Tensor, names: tuple[str, ...], where: Path
) -> ImageArrays:
    """:class:`ImageArrays` of data read from files; an inconsistency (a label with no class) names them."""
    try:
        return ImageArrays(images, labels, names)
    except ValueError as exc:
        raise DataFileError(
            f"{where}: {str(exc).split(';')[0]}; the files are corrupt, fetch them again"
        ) from None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an idx file (raw or gzip) of unsigned bytes, checking its magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataFileError(
            f"{path} is a truncated or corrupt gzip file ({exc.__class__.__name__}); fetch it again"
        ) from None
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if found != magic:
        raise DataFileError(
            f"{path} has idx magic number {found}, expected {magic}; pass the matching idx file"
        )
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(raw[4 + 4 * d : 8 + 4 * d], "big") for d in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(shape)):
        raise DataFileError(
            f"{path} holds {len(raw) - offset} data bytes but its header says {shape}; "
            "the file is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


def _find_idx(base: Path, stem: str) -> Path | None:
    for candidate in (base / "fashion-mnist", base, base / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (candidate / name).is_file():
                return candidate / name
    return None


def read_fashion_mnist(root: PathLike, split: Split, download: bool = False) -> ImageArrays:
    """Read Fashion-MNIST idx files (raw or ``.gz``) from ``root/fashion-mnist/`` (or ``root`` itself).

    Returns ``uint8 [N, 1, 28, 28]`` images (60,000 train, 10,000 test), labels and the 10 class
    names. ``download=True`` fetches via torchvision (into ``root/FashionMNIST/raw``).

    Example (``"path/to/data"`` stands for your own data folder, so the call is not run here):
        >>> test = read_fashion_mnist("path/to/data", "test")  # doctest: +SKIP
        >>> test.images.shape  # doctest: +SKIP
        torch.Size([10000, 1, 28, 28])
    """
    _check_split(split)
    base = Path(root).expanduser()
    prefix = "train" if split == "train" else "t10k"
    image_stem, label_stem = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
    if _find_idx(base, image_stem) is None and download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(base), train=split == "train", download=True)
    image_path, label_path = _find_idx(base, image_stem), _find_idx(base, label_stem)
    if image_path is None or label_path is None:
        stem = image_stem if image_path is None else label_stem
        raise _not_found("Fashion-MNIST", base / "fashion-mnist" / f"{stem}[.gz]", "fashion-mnist")
    images = _read_idx(image_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(label_path, _IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataFileError(
            f"{image_path} has {images.shape[0]} images but {label_path} has {labels.shape[0]} labels; "
            "use files of the same split"
        )
    tensor = torch.from_numpy(images).unsqueeze(1).contiguous()
    labels_tensor = torch.from_numpy(labels.astype(np.int64))
    return _checked_arrays(tensor, labels_tensor, FASHION_MNIST_CLASSES, label_path)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as read-only ``uint8`` pixels ``[1797, 64]`` and int64 labels (parsed once)."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

    bunch = load_digits()
    pixels = np.floor(np.asarray(bunch.data, dtype=np.float64) * 255.0 / 16.0 + 0.5).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    pixels.flags.writeable = False
    labels.flags.writeable = False
    return pixels, labels


def read_digits(split: Split, *, test_per_class: int = 50, seed: int = 0) -> ImageArrays:
    """Return scikit-learn's bundled 8x8 digits (1,797 images) as ``uint8 [N, 1, 8, 8]``, split by class.

    Pixels 0..16 are rescaled to ``round(x * 255 / 16)``. Per class, a permutation from
    ``Generator(PCG64(seed))`` (used over classes in ascending order) sends the first
    ``test_per_class`` images to test and the rest to train; both keep data set order.

    Example:
        >>> test = read_digits("test")  # 500 images, 50 per class
        >>> test.images.shape, test.images.dtype
        (torch.Size([500, 1, 8, 8]), torch.uint8)
        >>> torch.bincount(test.labels).tolist()
        [50, 50, 50, 50, 50, 50, 50, 50, 50, 50]
    """
    _check_split(split)
    check_int("test_per_class", test_per_class, low=0)
    pixels, labels = _digits()
    rng = np.random.Generator(np.random.PCG64(seed))
    in_test = np.zeros(labels.size, dtype=bool)
    for cls in range(10):
        members = np.flatnonzero(labels == cls)
        if members.size <= test_per_class:
            raise ValueError(
                f"digit class {cls} has {members.size} images, test_per_class={test_per_class} would leave "
                "none for training; lower test_per_class"
            )
        in_test[members[rng.permutation(members.size)[:test_per_class]]] = True
    keep = in_test if split == "test" else ~in_test
    images = torch.from_numpy(pixels[keep].reshape(-1, 1, 8, 8))
    return ImageArrays(images, torch.from_numpy(labels[keep]), tuple(str(c) for c in range(10)))


def make_synthetic(
    split: Split,
    *,
    num_classes: int = 10,
    per_class_train: int = 100,
    per_class_test: int = 20,
    image_size: int = 8,
    channels: int = 1,
    seed: int = 0,
) -> ImageArrays:
    """Generate a learnable image data set: per-class random prototypes plus per-image noise.

    Each class has a fixed uniform-random uint8 prototype; every image is its prototype plus
    Gaussian noise (std 48), clipped to 0..255. Prototypes depend on ``seed`` only, so train and
    test share them; the noise streams of the two splits are separate. Labels are grouped by
    class (``per_class_*`` images of class 0, then class 1, ...).

    Example:
        >>> train = make_synthetic("train", num_classes=10, per_class_train=64)
        >>> train.images.shape, train.class_names[:2]
        (torch.Size([640, 1, 8, 8]), ('class_0', 'class_1'))
    """
    _check_split(split)
    checks = {
        "num_classes": (num_classes, 1),
        "per_class_train": (per_class_train, 0),
        "per_class_test": (per_class_test, 0),
        "image_size": (image_size, 1),
        "channels": (channels, 1),
        "seed": (seed, 0),
    }
    for name, (value, low) in checks.items():
        check_int(f"make_synthetic {name}", value, low=low)
    shape = (channels, image_size, image_size)
    prototypes = np.random.Generator(np.random.PCG64(seed)).integers(0, 256, (num_classes, *shape))
    stream = 1 if split == "train" else 2
    noise_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream,))))
    per_class = per_class_train if split == "train" else per_class_test
    labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
    pixels = prototypes[labels] + noise_rng.normal(0.0, 48.0, (labels.size, *shape))
    images = torch.from_numpy(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return ImageArrays(images, torch.from_numpy(labels), tuple(f"class_{c}" for c in range(num_classes)))


def read_dataset(
    name: DatasetName,
    root: PathLike | None,
    split: Split,
    download: bool = False,
    **synthetic_kwargs: Any,
) -> ImageArrays:
    """Read the in-memory data set called ``name`` (one of :data:`ARRAY_DATASETS`) for ``split``.

    ``root`` is ignored by ``digits`` and ``synthetic``; extra keyword arguments go to
    :func:`read_digits` or :func:`make_synthetic` and are refused by the file readers.

    Example (``"path/to/data"`` stands for your own data folder, so that call is not run here):
        >>> train = read_dataset("cifar10", "path/to/data", "train")  # doctest: +SKIP
        >>> test = read_dataset("synthetic", None, "test", num_classes=3, per_class_test=4)
        >>> test.labels.tolist()
        [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    """
    if name not in ARRAY_DATASETS:
        hint = " (read from image files: ccsam.data.file_sets)" if name in FILE_DATASETS else ""
        raise ValueError(f"unknown data set {name!r}{hint}; choose one of {list(ARRAY_DATASETS)}")
    if name == "synthetic":
        return make_synthetic(split, **synthetic_kwargs)
    if name == "digits":
        return read_digits(split, **synthetic_kwargs)
    if synthetic_kwargs:
        raise ValueError(
            f"data set {name!r} takes no extra options, got {sorted(synthetic_kwargs)}; remove them"
        )
    if root is None:
        raise ValueError(f"data set {name!r} needs a root folder; pass --data-root")
    readers = {"fashion_mnist": read_fashion_mnist, "cifar10": read_cifar10, "cifar100": read_cifar100}
    return readers[name](root, split, download)
