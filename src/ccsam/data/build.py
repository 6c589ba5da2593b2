"""From a :class:`DataConfig` to the long-tailed train set, a balanced validation set and the test set."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from ccsam.config.schema import FILE_DATASETS, DataConfig
from ccsam.data.arrays import ImageArrays
from ccsam.data.cache import load_cache
from ccsam.data.file_sets import build_file_splits, read_open_set
from ccsam.data.image_files import ImageFiles, LoadOptions
from ccsam.data.long_tail import LongTailData
from ccsam.data.profiles import long_tail_counts
from ccsam.data.readers import read_dataset
from ccsam.data.splits import SplitManifest, build_split
from ccsam.errors import ConfigError

__all__ = ["DATA_ROOT_ENV", "LongTailData", "build_data", "resolve_data_root"]

DATA_ROOT_ENV = "CCSAM_DATA_ROOT"

# Normalisation statistics. CIFAR: the official CC-SAM code's values (spec 1.4); Fashion-MNIST: the
# training-set mean / std. Digits and synthetic data are computed from their training split.
_FIXED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


def _subset(arrays: ImageArrays, indices: tuple[int, ...]) -> ImageArrays:
    index = torch.as_tensor(indices, dtype=torch.long)
    return ImageArrays(arrays.images[index].contiguous(), arrays.labels[index].contiguous(), arrays.class_names)


def resolve_data_root(cfg: DataConfig) -> Path:
    """``data.root`` if set, else ``$CCSAM_DATA_ROOT``, else ``./data``."""
    return Path(cfg.root or os.environ.get(DATA_ROOT_ENV) or "data").expanduser()


def _stats(name: str, train: ImageArrays) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if name in _FIXED_STATS:
        return _FIXED_STATS[name]
    x = train.images.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _draw_split(cfg: DataConfig, full_train: ImageArrays) -> SplitManifest:
    available = torch.bincount(full_train.labels, minlength=full_train.num_classes)
    n_max = cfg.n_max if cfg.n_max is not None else int(available.min())
    try:
        counts = long_tail_counts(n_max, full_train.num_classes, cfg.imbalance_ratio, cfg.profile)
        return build_split(
            full_train.labels, counts, subset_seed=cfg.subset_seed, val_per_class=cfg.val_per_class,
            protocol=cfg.subset_protocol,
        )
    except ValueError as exc:  # a profile the data set cannot supply: the user's data.* settings
        raise ConfigError(f"data.dataset={cfg.dataset}: {exc}") from None


def build_manifest(cfg: DataConfig) -> SplitManifest:
    """The split manifest :func:`build_data` would produce for ``cfg``, reading only the training split
    (or the manifest stored in ``data.cache``)."""
    if cfg.cache is not None:
        return load_cache(cfg.cache, cfg).manifest
    extra = cfg.synthetic.model_dump() if cfg.dataset == "synthetic" else {}
    if cfg.dataset == "digits":
        extra = {"test_per_class": cfg.digits_test_per_class}
    full_train = read_dataset(cfg.dataset, resolve_data_root(cfg), "train", download=cfg.download, **extra)
    return _draw_split(cfg, full_train)


def build_data(cfg: DataConfig) -> LongTailData:
    """Read the data set, choose its long-tailed subset and validation split, and return all three splits.

    The long-tailed profile is ``long_tail_counts(n_max, C, IR, profile)`` with ``n_max`` defaulting to the
    smallest full class size; the subset and the validation images are chosen with ``subset_seed`` only
    (independent of the training seed). The test split is the data set's own, untouched. With
    ``data.cache`` set, all three splits come from that file instead (checked against ``cfg``).
    """
    if cfg.cache is not None:
        return load_cache(cfg.cache, cfg)
    root = resolve_data_root(cfg)
    if cfg.dataset in FILE_DATASETS:
        return _build_file_data(cfg, root)
    extra = cfg.synthetic.model_dump() if cfg.dataset == "synthetic" else {}
    if cfg.dataset == "digits":
        extra = {"test_per_class": cfg.digits_test_per_class}
    full_train = read_dataset(cfg.dataset, root, "train", download=cfg.download, **extra)
    test = read_dataset(cfg.dataset, root, "test", download=cfg.download, **extra)
    manifest = _draw_split(cfg, full_train)
    train = _subset(full_train, manifest.train_indices)
    val = _subset(full_train, manifest.val_indices)
    mean, std = _stats(cfg.dataset, full_train)
    class_counts = torch.as_tensor(manifest.class_counts, dtype=torch.long)
    return LongTailData(cfg.dataset, train, val, test, class_counts, manifest, mean, std)


def _build_file_data(cfg: DataConfig, root: Path) -> LongTailData:
    """ImageNet-LT, Places-LT, iNaturalist 2018, a user's lists or folders (:mod:`ccsam.data.file_sets`)."""
    got = build_file_splits(cfg, root)
    loading = _loading(cfg, got.color_jitter)
    train, val, test = (replace(s, loading=loading) for s in (got.train, got.val, got.test))
    return LongTailData(cfg.dataset, train, val, test, got.class_counts, got.manifest, got.mean, got.std)


def _loading(cfg: DataConfig, color_jitter: float) -> LoadOptions:
    return LoadOptions(cfg.image_size, color_jitter, cfg.decode, cfg.num_workers, cfg.prefetch_factor)


def build_open_images(cfg: DataConfig, data: LongTailData) -> ImageFiles:
    """The OLTR open-set images (``*_open.txt`` of ImageNet-LT / Places-LT, every label -1), read and
    batched like ``data.test``; see :func:`ccsam.data.file_sets.read_open_set`."""
    opened = read_open_set(cfg, resolve_data_root(cfg), data.train.class_names)
    return replace(opened, loading=_loading(cfg, 0.0))
