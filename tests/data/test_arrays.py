"""ImageArrays validation and helpers."""

from __future__ import annotations

import pytest
import torch

from ccsam.data.arrays import ImageArrays


def _images(n: int) -> torch.Tensor:
    return torch.arange(n * 2 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 2, 4, 4)


def test_valid_arrays_expose_sizes_and_counts() -> None:
    data = ImageArrays(_images(3), torch.tensor([0, 2, 2]), ["a", "b", "c"])  # type: ignore[arg-type]
    assert len(data) == 3
    assert data.num_classes == 3
    assert data.class_names == ("a", "b", "c")
    assert data.class_counts().tolist() == [1, 0, 2]


def test_non_contiguous_images_are_made_contiguous() -> None:
    images = _images(3).permute(0, 1, 3, 2)
    assert not images.is_contiguous()
    data = ImageArrays(images, torch.tensor([0, 1, 0]), ("a", "b"))
    assert data.images.is_contiguous()
    assert torch.equal(data.images, images)


def test_subset_keeps_order_and_checks_range() -> None:
    data = ImageArrays(_images(4), torch.tensor([0, 1, 0, 1]), ("a", "b"))
    sub = data.subset(torch.tensor([3, 0]))
    assert torch.equal(sub.images, data.images[[3, 0]])
    assert sub.labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="subset indices"):
        data.subset([4])


@pytest.mark.parametrize(
    ("images", "labels", "names", "match"),
    [
        (_images(2).float(), torch.tensor([0, 1]), ("a", "b"), "uint8"),
        (_images(2)[:, 0], torch.tensor([0, 1]), ("a", "b"), "uint8"),
        (_images(2), torch.tensor([0, 1], dtype=torch.int32), ("a", "b"), "int64"),
        (_images(2), torch.tensor([0, 1, 1]), ("a", "b"), "2 images but 3 labels"),
        (_images(2), torch.tensor([0, 2]), ("a", "b"), r"labels span \[0, 2\]"),
        (_images(2), torch.tensor([-1, 0]), ("a", "b"), "labels span"),
        (_images(2), torch.tensor([0, 0]), (), "class_names is empty"),
        (_images(2), torch.tensor([0, 0]), "ab", "sequence of strings"),
    ],
)
def test_invalid_arrays_raise(images: torch.Tensor, labels: torch.Tensor, names: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImageArrays(images, labels, names)
