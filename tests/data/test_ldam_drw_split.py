"""``data.subset_protocol=ldam_drw`` against LDAM-DRW's ``IMBALANCECIFAR10/100`` draw, re-written here.

The reference loop below is written from the description of ``gen_imbalanced_data`` (Cao et al. 2019):
``np.random.seed(0)``; for each class in ascending order, ``idx = np.where(targets == c)[0]``,
``np.random.shuffle(idx)``, keep ``idx[:n_c]`` with ``n_c = int(img_max * imb_factor ** (c / (C - 1.0)))``.
It uses numpy's *global* generator, exactly as the reference does (state restored afterwards).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccsam.config import resolve_config
from ccsam.data.build import build_data
from ccsam.data.profiles import long_tail_counts
from ccsam.data.readers import read_dataset
from ccsam.data.splits import build_split, ldam_drw_subset

# LDAM-DRW's --imb_factor values: IR 10, 20, 50, 100, 200.
IMB_FACTORS = (0.1, 0.05, 0.02, 0.01, 0.005)


def _reference_counts(img_max: int, num_classes: int, imb_factor: float) -> list[int]:
    return [int(img_max * (imb_factor ** (c / (num_classes - 1.0)))) for c in range(num_classes)]


def _reference_indices(targets: np.ndarray, img_max: int, imb_factor: float, seed: int = 0) -> np.ndarray:
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        picked = []
        classes = np.unique(targets)
        for the_class, n in zip(classes, _reference_counts(img_max, len(classes), imb_factor), strict=True):
            idx = np.where(targets == the_class)[0]
            np.random.shuffle(idx)
            picked.append(idx[:n])
        return np.concatenate(picked)
    finally:
        np.random.set_state(saved)


def _check_protocol(targets: np.ndarray, img_max: int) -> None:
    labels = torch.from_numpy(targets)
    num_classes = int(targets.max()) + 1
    for imb_factor in IMB_FACTORS:
        ir = 1.0 / imb_factor
        counts = long_tail_counts(img_max, num_classes, ir)
        assert counts == _reference_counts(img_max, num_classes, imb_factor), ir
        ours = ldam_drw_subset(labels, counts, seed=0).numpy()
        expected = _reference_indices(targets, img_max, imb_factor)
        assert np.array_equal(ours, expected), f"IR {ir}: overlap {np.isin(ours, expected).mean():.3f}"


def test_matches_reference_on_real_cifar10_labels(shared_data_root) -> None:
    targets = read_dataset("cifar10", shared_data_root, "train").labels.numpy().astype(np.int64)
    _check_protocol(targets, img_max=5000)


def test_matches_reference_on_generated_100_class_labels() -> None:
    # CIFAR-100's shape (500 per class) in a seeded interleaved order; no CIFAR-100 files needed.
    targets = np.random.default_rng(7).permutation(np.repeat(np.arange(100), 500)).astype(np.int64)
    _check_protocol(targets, img_max=500)


def test_global_numpy_state_is_untouched_and_protocols_differ() -> None:
    targets = np.random.default_rng(1).permutation(np.repeat(np.arange(10), 50))
    labels = torch.from_numpy(targets)
    counts = long_tail_counts(50, 10, 10)
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    ldam = build_split(labels, counts, subset_seed=0, val_per_class=5, protocol="ldam_drw")
    assert np.random.random() == before
    other = build_split(labels, counts, subset_seed=0, val_per_class=5, protocol="per_class_rng")
    assert ldam.class_counts == other.class_counts and ldam.train_indices != other.train_indices
    assert ldam.subset_protocol == "ldam_drw" and other.subset_protocol == "per_class_rng"
    with pytest.raises(ValueError, match="subset protocol"):
        build_split(labels, counts, protocol="ldam")  # type: ignore[arg-type]


def test_validation_comes_from_unselected_images() -> None:
    targets = np.random.default_rng(2).permutation(np.repeat(np.arange(10), 60))
    labels = torch.from_numpy(targets)
    counts = long_tail_counts(50, 10, 10)
    manifest = build_split(labels, counts, subset_seed=0, val_per_class=8, protocol="ldam_drw")
    train, val = set(manifest.train_indices), set(manifest.val_indices)
    assert not train & val
    assert manifest.val_counts == (8,) * 10  # every class has >= 10 unselected images
    assert np.bincount(targets[sorted(val)], minlength=10).tolist() == [8] * 10
    # The validation draw does not depend on the subset protocol's stream: same seed, own stream.
    assert manifest.train_indices == tuple(ldam_drw_subset(labels, counts, seed=0).tolist())


def test_cifar_presets_default_to_ldam_drw(shared_data_root) -> None:
    cfg = resolve_config("cifar10-lt-ce", [f"data.root={shared_data_root}"])
    assert cfg.data.subset_protocol == "ldam_drw"
    data = build_data(cfg.data)
    targets = read_dataset("cifar10", shared_data_root, "train").labels.numpy().astype(np.int64)
    assert np.array_equal(np.asarray(data.manifest.train_indices), _reference_indices(targets, 5000, 0.01))
    assert data.manifest.val_counts[0] == 0 and min(data.manifest.val_counts[1:]) == 20
