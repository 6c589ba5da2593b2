"""The data sets of image files: ImageNet-LT, Places-LT, iNaturalist 2018, a user's lists or folders.

Roles of the splits (spec 3.2):

- ``imagenet_lt`` / ``places_lt``: ``*_train.txt`` trains, ``*_val.txt`` (20 per class) is the
  selection split, ``*_test.txt`` is evaluated once at the end; ``*_open.txt`` holds the open-set
  images of the OLTR protocol (:func:`read_open_set`).
- ``inat2018``: ``iNaturalist18_val.txt`` is the *reported* split (the literature's "test"), so it
  becomes ``test`` here and nothing may be selected on it; a selection split, when one is wanted, is
  carved from the train list (``data.selection_per_class``, drawn with ``data.subset_seed``).
- ``list_file``: the user's ``data.train_list`` / ``data.val_list`` (optional) / ``data.test_list``,
  with the same carving rule as iNat when there is no val list.
- ``image_folder``: ``data.root/train/<class>/*`` and ``data.root/test/<class>/*``; the long-tailed
  profile, subset seed and balanced validation split are applied to ``train/`` exactly as for CIFAR.

The list sets are already long-tailed: no profile is applied, the class counts are those of the train
list, and the split manifest records each list file's sha256 and per-class counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccsam.config.schema import DataConfig
from ccsam.data.image_files import (
    ImageFileError,
    ImageFiles,
    check_images_exist,
    file_sha256,
    listing_sha256,
    read_image_folder,
    read_list_file,
)
from ccsam.data.profiles import long_tail_counts
from ccsam.data.splits import SplitManifest, build_split

__all__ = ["FILE_LAYOUTS", "FileLayout", "FileSplits", "build_file_splits", "read_open_set"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INAT_MEAN, INAT_STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)  # spec 3.2 (classifier-balancing code)


@dataclass(frozen=True)
class FileLayout:
    """File names of one benchmark's list files, its normalisation and its standard ColorJitter."""

    train: str
    val: str | None
    test: str
    open: str | None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    color_jitter: float = 0.0


# ColorJitter(0.4, 0.4, 0.4, 0) on ImageNet-LT / Places-LT and none on iNat: the OLTR transforms that
# the CC-SAM repository copies (spec 3.2).
FILE_LAYOUTS: dict[str, FileLayout] = {
    "imagenet_lt": FileLayout(
        "ImageNet_LT_train.txt",
        "ImageNet_LT_val.txt",
        "ImageNet_LT_test.txt",
        "ImageNet_LT_open.txt",
        color_jitter=0.4,
    ),
    "places_lt": FileLayout(
        "Places_LT_train.txt",
        "Places_LT_val.txt",
        "Places_LT_test.txt",
        "Places_LT_open.txt",
        color_jitter=0.4,
    ),
    "inat2018": FileLayout(
        "iNaturalist18_train.txt", None, "iNaturalist18_val.txt", None, INAT_MEAN, INAT_STD
    ),
}


@dataclass(frozen=True)
class FileSplits:
    """Train / selection / test images of a file data set, its class counts, manifest and statistics."""

    train: ImageFiles
    val: ImageFiles
    test: ImageFiles
    class_counts: torch.Tensor
    manifest: SplitManifest
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color_jitter: float


def _layout(cfg: DataConfig) -> FileLayout:
    if cfg.dataset in FILE_LAYOUTS:
        return FILE_LAYOUTS[cfg.dataset]
    if cfg.dataset == "list_file":
        assert cfg.train_list is not None and cfg.test_list is not None  # checked by DataConfig
        return FileLayout(cfg.train_list, cfg.val_list, cfg.test_list, None)
    raise ValueError(f"data.dataset={cfg.dataset} is not a data set of image files")


def _source(files: ImageFiles, sha256: str) -> dict[str, Any]:
    return {
        "file": Path(files.source).name,
        "sha256": sha256,
        "images": len(files),
        "class_counts": files.class_counts().tolist(),
    }


def _names_from_paths(train: ImageFiles, num_classes: int) -> tuple[str, ...]:
    """Class ``c``'s name: the parent folder of its first training image (e.g. ``n01440764``), else ``c``."""
    names = [str(c) for c in range(num_classes)]
    seen: set[int] = set()
    for path, label in zip(train.paths, train.labels.tolist(), strict=True):
        if label not in seen:
            seen.add(label)
            parent = Path(path).parent.name
            names[label] = parent or str(label)
    return tuple(names) if len(set(names)) == num_classes else tuple(str(c) for c in range(num_classes))


def _check_labels(files: ImageFiles, num_classes: int) -> None:
    bad = torch.nonzero(files.labels >= num_classes).flatten()
    if len(bad):
        i = int(bad[0])
        raise ImageFileError(
            f"{files.where(i)}: label {int(files.labels[i])} is not a class of the train list "
            f"(0..{num_classes - 1}); the list files do not belong together"
        )


def _carve_selection(labels: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold out ``min(per_class, n_c // 2)`` images of every class (seeded); -> (keep, held) positions."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(2,))))
    array = labels.numpy()
    held: list[np.ndarray] = []
    for cls in range(int(array.max()) + 1):
        members = np.flatnonzero(array == cls)
        take = min(per_class, members.size // 2)
        held.append(np.sort(members[rng.permutation(members.size)[:take]]))
    held_index = np.concatenate(held) if held else np.zeros(0, np.int64)
    keep = np.ones(array.size, dtype=bool)
    keep[held_index] = False
    return torch.from_numpy(np.flatnonzero(keep)), torch.from_numpy(held_index.astype(np.int64))


def _list_splits(cfg: DataConfig, root: Path) -> FileSplits:
    layout = _layout(cfg)
    list_dir = Path(cfg.list_dir).expanduser() if cfg.list_dir else root
    roles = {"train": layout.train, "val": layout.val, "test": layout.test}
    read: dict[str, ImageFiles] = {}
    sources: dict[str, Any] = {}
    for role, name in roles.items():
        if name is None:
            continue
        path = Path(name).expanduser()
        path = path if path.is_absolute() else list_dir / path
        read[role] = read_list_file(path, root, role=role)
    num_classes = int(read["train"].labels.max()) + 1
    names = _names_from_paths(read["train"], num_classes)
    for role, files in read.items():
        _check_labels(files, num_classes)
        read[role] = files = files.with_names(names)
        check_images_exist(files)
        sources[role] = _source(files, file_sha256(Path(files.source)))
    full_train = read["train"]
    zeros = (0,) * num_classes
    if "val" in read:
        keep, held = torch.arange(len(full_train)), torch.zeros(0, dtype=torch.int64)
    else:
        keep, held = _carve_selection(full_train.labels, cfg.selection_per_class, cfg.subset_seed)
    train, val = full_train.subset(keep), read["val"] if "val" in read else full_train.subset(held)
    counts = train.class_counts()
    manifest = SplitManifest(
        tuple(keep.tolist()),
        tuple(held.tolist()),
        tuple(counts.tolist()),
        tuple(val.class_counts().tolist()) if "val" not in read else zeros,
        cfg.subset_seed,
        sources=sources,
    )
    jitter = layout.color_jitter if cfg.color_jitter is None else cfg.color_jitter
    return FileSplits(train, val, read["test"], counts, manifest, layout.mean, layout.std, jitter)


def _folder_splits(cfg: DataConfig, root: Path) -> FileSplits:
    full_train = read_image_folder(root / "train", root)
    test = read_image_folder(root / "test", root, class_names=full_train.class_names)
    available = full_train.class_counts()
    n_max = cfg.n_max if cfg.n_max is not None else int(available.min())
    counts = long_tail_counts(n_max, full_train.num_classes, cfg.imbalance_ratio, cfg.profile)
    split = build_split(
        full_train.labels, counts, subset_seed=cfg.subset_seed, val_per_class=cfg.val_per_class,
        protocol=cfg.subset_protocol,
    )
    sources = {
        "train": _source(full_train, listing_sha256(full_train)),
        "test": _source(test, listing_sha256(test)),
    }
    manifest = SplitManifest(
        split.train_indices,
        split.val_indices,
        split.class_counts,
        split.val_counts,
        split.subset_seed,
        subset_protocol=split.subset_protocol,
        sources=sources,
    )
    train, val = full_train.subset(split.train_indices), full_train.subset(split.val_indices)
    jitter = 0.0 if cfg.color_jitter is None else cfg.color_jitter
    return FileSplits(
        train,
        val,
        test,
        torch.as_tensor(counts, dtype=torch.long),
        manifest,
        IMAGENET_MEAN,
        IMAGENET_STD,
        jitter,
    )


def build_file_splits(cfg: DataConfig, root: Path) -> FileSplits:
    """Read a file data set's lists (or folders) under ``root`` and return its three splits.

    Raises:
        ImageFileError: a list file or image is missing, or a line or label is garbled.
    """
    return _folder_splits(cfg, root) if cfg.dataset == "image_folder" else _list_splits(cfg, root)


def read_open_set(cfg: DataConfig, root: Path, class_names: tuple[str, ...]) -> ImageFiles:
    """The open-set images of ImageNet-LT / Places-LT (``*_open.txt``), every label ``-1``.

    Raises:
        ImageFileError: the data set has no open set, or its list or images are missing.
    """
    layout = _layout(cfg)
    if layout.open is None:
        raise ImageFileError(
            f"data.dataset={cfg.dataset} has no open-set list; eval.open_set needs imagenet_lt or places_lt"
        )
    list_dir = Path(cfg.list_dir).expanduser() if cfg.list_dir else root
    files = read_list_file(list_dir / layout.open, root, role="open", open_set=True).with_names(class_names)
    check_images_exist(files)
    return files
