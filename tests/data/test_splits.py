"""Long-tailed subsets, balanced validation sets and the split manifest."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from ccsam.data.profiles import long_tail_counts
from ccsam.data.splits import (
    SplitManifest,
    balanced_validation_subset,
    build_split,
    long_tail_subset,
)

NUM_CLASSES = 10
PER_CLASS = 100


@pytest.fixture()
def labels() -> torch.Tensor:
    """A balanced label vector (100 per class) in a shuffled, interleaved order."""
    base = torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS)
    return base[torch.randperm(base.numel(), generator=torch.Generator().manual_seed(123))]


@pytest.fixture()
def counts() -> list[int]:
    return long_tail_counts(PER_CLASS, NUM_CLASSES, 20)  # head class uses all of its 100 images


def test_subset_has_exact_counts_and_no_duplicates(labels: torch.Tensor, counts: list[int]) -> None:
    idx = long_tail_subset(labels, counts, seed=0)
    assert idx.dtype == torch.int64
    assert idx.unique().numel() == idx.numel() == sum(counts)
    assert torch.bincount(labels[idx], minlength=NUM_CLASSES).tolist() == counts
    # Grouped by class, class 0 first.
    assert torch.equal(labels[idx], torch.arange(NUM_CLASSES).repeat_interleave(torch.tensor(counts)))


def test_subset_is_seeded_and_independent_of_global_rngs(labels: torch.Tensor, counts: list[int]) -> None:
    torch.manual_seed(1)
    np.random.seed(1)
    first = long_tail_subset(labels, counts, seed=7)
    torch.manual_seed(2)
    np.random.seed(2)
    torch.rand(10)
    second = long_tail_subset(labels, counts, seed=7)
    assert torch.equal(first, second)
    assert not torch.equal(first, long_tail_subset(labels, counts, seed=8))


def test_lower_counts_give_nested_subsets(labels: torch.Tensor) -> None:
    mild = long_tail_subset(labels, long_tail_counts(PER_CLASS, NUM_CLASSES, 2), seed=3)
    steep = long_tail_subset(labels, long_tail_counts(PER_CLASS, NUM_CLASSES, 20), seed=3)
    assert set(steep.tolist()) <= set(mild.tolist())


def test_subset_golden_indices() -> None:
    # Pins the numpy PCG64 stream so manifests of earlier runs stay reproducible.
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    assert long_tail_subset(labels, [3, 2, 1], seed=0).tolist() == [6, 0, 3, 10, 7, 5]


def test_class_too_small_raises(labels: torch.Tensor) -> None:
    counts = [10] * NUM_CLASSES
    counts[3] = PER_CLASS + 1
    with pytest.raises(ValueError, match=r"class 3 has 100 images but the profile asks for 101"):
        long_tail_subset(labels, counts)


def test_bad_inputs_raise(labels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="one count per class"):
        long_tail_subset(labels, [1] * (NUM_CLASSES - 1))
    with pytest.raises(ValueError, match="1-D integer"):
        long_tail_subset(labels.float(), [1] * NUM_CLASSES)
    with pytest.raises(ValueError, match="seed"):
        long_tail_subset(labels, [1] * NUM_CLASSES, seed=-1)
    with pytest.raises(ValueError, match="exclude"):
        balanced_validation_subset(labels, torch.tensor([labels.numel()]))


def test_validation_is_balanced_and_disjoint(labels: torch.Tensor, counts: list[int]) -> None:
    train = long_tail_subset(labels, counts, seed=0)
    val = balanced_validation_subset(labels, train, per_class=20, seed=0)
    assert not set(val.tolist()) & set(train.tolist())
    assert val.unique().numel() == val.numel()
    expected = [min(20, PER_CLASS - c) for c in counts]
    assert expected[0] == 0  # the head class is used in full
    assert torch.bincount(labels[val], minlength=NUM_CLASSES).tolist() == expected
    few = balanced_validation_subset(labels, train, per_class=3, seed=0)
    assert torch.bincount(labels[few], minlength=NUM_CLASSES).tolist() == [0] + [3] * (NUM_CLASSES - 1)


def test_validation_stream_differs_from_subset_stream(labels: torch.Tensor) -> None:
    # With nothing excluded, an identical stream would pick the same first images as the subset.
    counts = [20] * NUM_CLASSES
    train = long_tail_subset(labels, counts, seed=5)
    val = balanced_validation_subset(labels, torch.zeros(0, dtype=torch.int64), per_class=20, seed=5)
    assert not torch.equal(train, val)
    assert torch.equal(val, balanced_validation_subset(labels, torch.zeros(0, dtype=torch.int64), 20, 5))


def test_build_split_manifest(labels: torch.Tensor, counts: list[int]) -> None:
    manifest = build_split(labels, counts, subset_seed=4, val_per_class=15)
    assert manifest.class_counts == tuple(counts)
    assert manifest.val_counts == tuple(min(15, PER_CLASS - c) for c in counts)
    assert manifest.num_classes == NUM_CLASSES
    assert manifest.subset_seed == 4
    assert list(manifest.train_indices) == long_tail_subset(labels, counts, seed=4).tolist()
    assert manifest == build_split(labels, counts, subset_seed=4, val_per_class=15)
    assert manifest.sha256() != build_split(labels, counts, subset_seed=5, val_per_class=15).sha256()


def test_manifest_sha256_is_the_canonical_json_hash(labels: torch.Tensor, counts: list[int]) -> None:
    manifest = build_split(labels, counts)
    canonical = json.dumps(
        {"train_indices": list(manifest.train_indices), "val_indices": list(manifest.val_indices)},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert manifest.sha256() == hashlib.sha256(canonical.encode()).hexdigest()


def test_manifest_round_trips(tmp_path: Path, labels: torch.Tensor, counts: list[int]) -> None:
    manifest = build_split(labels, counts, subset_seed=2)
    assert SplitManifest.from_dict(manifest.to_dict()) == manifest
    path = tmp_path / "run" / "split.json"
    manifest.save_json(path)
    loaded = SplitManifest.load_json(path)
    assert loaded == manifest
    assert loaded.sha256() == manifest.sha256() == json.loads(path.read_text())["sha256"]
    assert not list(path.parent.glob("*.tmp"))


def test_manifest_tampering_is_detected(tmp_path: Path, labels: torch.Tensor, counts: list[int]) -> None:
    manifest = build_split(labels, counts)
    path = tmp_path / "split.json"
    manifest.save_json(path)
    stored = json.loads(path.read_text())
    outside = sorted(set(range(labels.numel())) - set(manifest.train_indices) - set(manifest.val_indices))
    stored["train_indices"][0] = outside[0]
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        SplitManifest.load_json(path)
    del stored["sha256"]
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="sha256"):
        SplitManifest.load_json(path)


def test_manifest_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="overlap"):
        SplitManifest((0, 1), (1,), (2,), (1,), 0)
    with pytest.raises(ValueError, match="add up"):
        SplitManifest((0, 1), (2,), (3,), (1,), 0)
    with pytest.raises(ValueError, match="lacks"):
        SplitManifest.from_dict({"train_indices": [0]})


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_validation_split_short_of_val_per_class_is_named_in_one_warning(caplog) -> None:
    labels = torch.arange(3).repeat_interleave(30)  # 30 images per class
    with caplog.at_level(logging.WARNING, logger="ccsam.data.splits"):
        manifest = build_split(labels, [25, 20, 5], val_per_class=5)  # every class keeps 5 unused images
    assert manifest.val_counts == (5, 5, 5) and not _warnings(caplog)
    with caplog.at_level(logging.WARNING, logger="ccsam.data.splits"):
        manifest = build_split(labels, [25, 20, 5], val_per_class=8)
    assert manifest.val_counts == (5, 8, 8)
    assert len(_warnings(caplog)) == 1 and "data.val_per_class<=5" in _warnings(caplog)[0]


def test_a_class_left_without_validation_images_is_named_in_a_warning(caplog) -> None:
    labels = torch.arange(4).repeat_interleave(30)  # 30 images per class
    counts = [30, 20, 30, 5]  # classes 0 and 2 used in full by the training subset
    with caplog.at_level(logging.WARNING, logger="ccsam.data.splits"):
        manifest = build_split(labels, counts, val_per_class=10)
    pool = torch.bincount(labels).tolist()
    empty = [c for c in range(4) if min(10, pool[c] - counts[c]) == 0]  # independent: what each class has left
    assert empty == [0, 2] and [c for c, n in enumerate(manifest.val_counts) if n == 0] == empty
    messages = _warnings(caplog)
    assert len(messages) == 1 and "no image of classes 0, 2:" in messages[0]
    assert "lower data.n_max" in messages[0] and "data.val_per_class=10" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ccsam.data.splits"):
        build_split(labels, [30, 20, 10, 5], val_per_class=10)  # one class used in full
    assert [m for m in _warnings(caplog) if "no image of class 0:" in m]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ccsam.data.splits"):
        assert build_split(labels, counts, val_per_class=0).val_counts == (0, 0, 0, 0)  # no validation asked
    assert not _warnings(caplog)
