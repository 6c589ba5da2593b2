"""Readers on injected fake files (exact pixels back) and on the shared real data."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ccsam.data.readers import (
    ARRAY_DATASETS,
    DATASET_NAMES,
    DatasetNotFoundError,
    make_synthetic,
    read_cifar10,
    read_cifar100,
    read_dataset,
    read_digits,
    read_fashion_mnist,
)
from ccsam.errors import CcsamError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _shared_data_root() -> Path:
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(os.environ.get("CCSAM_DATA_ROOT", default))


def _real(folder: str) -> Path:
    """The shared data root, skipping the test when its ``folder`` is absent (the only reason to skip)."""
    root = _shared_data_root()
    if not (root / folder).is_dir():
        pytest.skip(f"real data {root / folder} is absent; set CCSAM_DATA_ROOT to run this test")
    return root


def _pickle(path: Path, obj: dict) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _fake_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture()
def fake_cifar10(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, list[int]]]]:
    """Six tiny batches (3 images each) in the python-pickle layout; row 0 of batch 1 a ramp."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    content = {}
    for i, name in enumerate([*(f"data_batch_{b}" for b in range(1, 6)), "test_batch"]):
        rows = _fake_rows(3, seed=i)
        if i == 0:
            rows[0] = np.arange(3072) % 251
        labels = [(i + j) % 10 for j in range(3)]
        _pickle(folder / name, {"batch_label": name, "labels": labels, "data": rows, "filenames": ["x"] * 3})
        content[name] = (rows, labels)
    _pickle(
        folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 3, "num_vis": 3072}
    )
    return tmp_path, content


def test_cifar10_fake_train_pixels_and_labels(fake_cifar10) -> None:
    root, content = fake_cifar10
    data = read_cifar10(root, "train")
    batches = [content[f"data_batch_{b}"] for b in range(1, 6)]
    assert data.images.shape == (15, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [label for _, labels in batches for label in labels]
    assert data.class_names == tuple(CIFAR10_NAMES)
    expected = np.concatenate([rows for rows, _ in batches]).reshape(15, 3, 32, 32)
    assert torch.equal(data.images, torch.from_numpy(expected))
    # CHW row order: byte 1024 + 5 * 32 + 7 of a row is the green pixel at row 5, column 7.
    assert int(data.images[0, 1, 5, 7]) == (1024 + 5 * 32 + 7) % 251
    assert int(data.images[0, 2, 31, 31]) == 3071 % 251
    assert int(data.images[0, 0, 0, 1]) == 1


def test_cifar10_fake_test_split_and_folder_as_root(fake_cifar10) -> None:
    root, content = fake_cifar10
    rows, labels = content["test_batch"]
    for where in (root, root / "cifar-10-batches-py", str(root)):
        data = read_cifar10(where, "test")
        assert torch.equal(data.images, torch.from_numpy(rows.reshape(3, 3, 32, 32)))
        assert data.labels.tolist() == labels


def test_cifar10_missing_folder_and_file(tmp_path: Path, fake_cifar10) -> None:
    empty = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        read_cifar10(empty, "train")
    message = str(info.value)
    assert str(empty / "cifar-10-batches-py" / "data_batch_1") in message
    assert "--data-root" in message and "data.download=true" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CcsamError)
    root, _ = fake_cifar10
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        read_cifar10(root, "train")
    with pytest.raises(ValueError, match="split"):
        read_cifar10(root, "val")  # type: ignore[arg-type]


def test_cifar100_fake_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"fine_{i}" for i in range(100)]
    splits = {}
    for i, split in enumerate(("train", "test")):
        rows = _fake_rows(4, seed=10 + i)
        fine = [99, 0, 42, 7] if split == "train" else [1, 2, 3, 98]
        _pickle(folder / split, {"data": rows, "fine_labels": fine, "coarse_labels": [0, 1, 2, 3]})
        splits[split] = (rows, fine)
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["c"] * 20})
    for split, (rows, fine) in splits.items():
        data = read_cifar100(tmp_path, split)  # type: ignore[arg-type]
        assert data.num_classes == 100 and data.class_names == tuple(names)
        assert data.labels.tolist() == fine
        assert torch.equal(data.images, torch.from_numpy(rows.reshape(4, 3, 32, 32)))
    assert read_cifar100(folder, "test").labels.tolist() == [1, 2, 3, 98]
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        read_cifar100(tmp_path / "missing", "train")


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, payload in (
        (f"{prefix}-images-idx3-ubyte", _idx_bytes(images, 2051)),
        (f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels, 2049)),
    ):
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / stem).write_bytes(payload)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_fake_idx(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    images[0, 3, 20] = 201
    labels = np.array([9, 0, 3, 3, 1], dtype=np.uint8)
    _write_fashion(tmp_path / "fashion-mnist", "train", images, labels, gz)
    _write_fashion(tmp_path / "fashion-mnist", "t10k", images[:2], labels[:2], gz)
    for where in (tmp_path, tmp_path / "fashion-mnist"):
        data = read_fashion_mnist(where, "train")
        assert data.images.shape == (5, 1, 28, 28)
        assert torch.equal(data.images[:, 0], torch.from_numpy(images))
        assert int(data.images[0, 0, 3, 20]) == 201
        assert data.labels.tolist() == [9, 0, 3, 3, 1] and data.labels.dtype == torch.int64
        assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert len(read_fashion_mnist(tmp_path, "test")) == 2


def test_fashion_mnist_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "fashion-mnist"
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    _write_fashion(folder, "train", images, np.array([0, 1]), gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1]), 2051))
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        read_fashion_mnist(tmp_path, "train")
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1]), 2049)[:-1])
    with pytest.raises(ValueError, match="truncated"):
        read_fashion_mnist(tmp_path, "train")
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([0, 1, 2]), 2049))
    with pytest.raises(ValueError, match="2 images but"):
        read_fashion_mnist(tmp_path, "train")
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte"):
        read_fashion_mnist(tmp_path, "test")


def test_digits_split_and_rescale() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits()
    full = read_digits("train", test_per_class=0)
    expected = np.floor(raw.data * 255 / 16 + 0.5).reshape(-1, 1, 8, 8)
    assert torch.equal(full.images, torch.from_numpy(expected.astype(np.uint8)))
    assert int(full.images.max()) == 255 and int(full.images[0, 0, 0, 3]) == round(13 * 255 / 16)
    train, test = read_digits("train"), read_digits("test")
    assert len(train) + len(test) == 1797
    assert test.class_counts().tolist() == [50] * 10
    assert torch.equal(read_digits("test").images, test.images)
    assert not torch.equal(read_digits("test", seed=1).images, test.images)
    with pytest.raises(ValueError, match="test_per_class"):
        read_digits("test", test_per_class=200)


def test_synthetic_is_deterministic_and_learnable() -> None:
    options = {"num_classes": 4, "per_class_train": 30, "per_class_test": 10, "image_size": 6, "channels": 2}
    train = make_synthetic("train", seed=3, **options)
    test = make_synthetic("test", seed=3, **options)
    assert train.images.shape == (120, 2, 6, 6) and test.images.shape == (40, 2, 6, 6)
    assert train.class_counts().tolist() == [30] * 4
    assert torch.equal(train.images, make_synthetic("train", seed=3, **options).images)
    assert not torch.equal(train.images, make_synthetic("train", seed=4, **options).images)
    # Nearest class mean (fitted on train) classifies the test split: the classes are learnable.
    flat = train.images.flatten(1).float()
    means = torch.stack([flat[train.labels == c].mean(0) for c in range(4)])
    predicted = torch.cdist(test.images.flatten(1).float(), means).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.9


def test_read_dataset_dispatch(fake_cifar10) -> None:
    root, _ = fake_cifar10
    assert len(read_dataset("cifar10", root, "test")) == 3
    synthetic = read_dataset("synthetic", None, "train", num_classes=3, per_class_train=2)
    assert synthetic.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(read_dataset("digits", None, "test", test_per_class=5)) == 50
    with pytest.raises(ValueError, match=r"unknown data set 'mnist'.*cifar100"):
        read_dataset("mnist", root, "train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no extra options"):
        read_dataset("cifar10", root, "train", num_classes=3)
    assert set(ARRAY_DATASETS) == {"digits", "fashion_mnist", "cifar10", "cifar100", "synthetic"}
    assert set(ARRAY_DATASETS) < set(DATASET_NAMES)
    with pytest.raises(ValueError, match="image files"):
        read_dataset("imagenet_lt", root, "train")  # type: ignore[arg-type]


def test_real_cifar10() -> None:
    data_root = _real("cifar-10-batches-py")
    train = read_cifar10(data_root, "train")
    assert train.images.shape == (50_000, 3, 32, 32)
    assert train.class_counts().tolist() == [5000] * 10
    assert train.class_names == tuple(CIFAR10_NAMES)
    totals = sum(chunk.to(torch.int64).sum(dim=(0, 2, 3)) for chunk in train.images.split(5000))
    mean = totals.double() / (50_000 * 32 * 32 * 255)
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465], dtype=torch.float64), atol=1e-3)
    test = read_cifar10(data_root, "test")
    assert len(test) == 10_000 and test.class_counts().tolist() == [1000] * 10


def test_real_fashion_mnist() -> None:
    data_root = _real("fashion-mnist")
    train = read_fashion_mnist(data_root, "train")
    test = read_fashion_mnist(data_root, "test")
    assert train.images.shape == (60_000, 1, 28, 28) and len(test) == 10_000
    assert train.class_counts().tolist() == [6000] * 10
