"""LabelAwareSmoothingLoss: reduces to CE / uniform smoothing; per-class epsilons by hand."""

import math

import pytest
import torch
from _loss_reference import ce64, log_softmax64

from ccsam.losses import CrossEntropyLoss, LabelAwareSmoothingLoss, label_aware_epsilons

COUNTS = [100, 55, 10]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return torch.randn(9, 3, generator=g) * 2, torch.tensor([0, 1, 2, 0, 1, 2, 2, 2, 0])


def test_zero_smoothing_is_ce() -> None:
    z, y = _batch()
    loss = LabelAwareSmoothingLoss(COUNTS, eps_head=0.0, eps_tail=0.0)
    assert torch.allclose(loss(z, y).double(), ce64(z, y), atol=1e-6)


def test_equal_eps_is_uniform_label_smoothing() -> None:
    z, y = _batch()
    loss = LabelAwareSmoothingLoss(COUNTS, eps_head=0.2, eps_tail=0.2)
    assert torch.allclose(loss(z, y), CrossEntropyLoss(label_smoothing=0.2)(z, y), atol=1e-6)
    assert torch.allclose(loss(z, y), torch.nn.functional.cross_entropy(z, y, label_smoothing=0.2), atol=1e-6)


def test_per_class_eps_hand_example() -> None:
    # r = (n - 10) / 90 = [1, 0.5, 0]
    concave = label_aware_epsilons(COUNTS, eps_head=0.4, eps_tail=0.1, shape="concave")
    assert concave.tolist() == pytest.approx([0.4, 0.1 + 0.3 * math.sin(math.pi / 4), 0.1], rel=1e-6)
    linear = label_aware_epsilons(COUNTS, eps_head=0.4, eps_tail=0.1, shape="linear")
    assert linear.tolist() == pytest.approx([0.4, 0.25, 0.1], rel=1e-6)
    assert label_aware_epsilons([7, 7], eps_head=0.3, eps_tail=0.0).tolist() == pytest.approx([0.3, 0.3])


def test_loss_uses_true_class_eps() -> None:
    z, y = _batch()
    eps_by_class = [0.4, 0.1 + 0.3 * math.sin(math.pi / 4), 0.1]
    log_p = log_softmax64(z)
    q = torch.zeros_like(log_p)
    for i, yi in enumerate(y.tolist()):
        q[i] = eps_by_class[yi] / 3
        q[i, yi] += 1 - eps_by_class[yi]
    expected = -(q * log_p).sum(1).mean()
    got = LabelAwareSmoothingLoss(COUNTS, eps_head=0.4, eps_tail=0.1)(z, y).double()
    assert torch.allclose(got, expected, atol=1e-6)


def test_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        LabelAwareSmoothingLoss(COUNTS, shape="convex")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps_head"):
        LabelAwareSmoothingLoss(COUNTS, eps_head=1.2)
