"""FocalLoss: gamma=0 is CE, hand example, alpha weights, finite gradients when saturated."""

import math

import pytest
import torch
from _loss_reference import ce64

from ccsam.losses import FocalLoss


def test_gamma_zero_equals_ce() -> None:
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 5, generator=g) * 2, torch.randint(0, 5, (8,), generator=g)
    assert torch.allclose(FocalLoss(gamma=0.0)(z, y).double(), ce64(z, y), atol=1e-6)


def test_hand_example() -> None:
    # softmax([0, ln 3]) = [1/4, 3/4]
    z = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    y = torch.tensor([0, 1])
    per_sample = [0.75**2 * math.log(4.0), 0.25**2 * math.log(4.0 / 3.0)]
    assert FocalLoss(gamma=2.0)(z, y).item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)
    alpha = [2.0, 0.5]
    weighted = (2.0 * per_sample[0] + 0.5 * per_sample[1]) / 2
    assert FocalLoss(gamma=2.0, alpha=alpha)(z, y).item() == pytest.approx(weighted, rel=1e-5)


def test_saturated_logits_keep_finite_gradient() -> None:
    z = torch.tensor([[200.0, 0.0]], requires_grad=True)
    FocalLoss(gamma=0.5)(z, torch.tensor([0])).backward()
    assert torch.isfinite(z.grad).all()


def test_validation() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="built for 3"):
        FocalLoss(alpha=[1.0, 1.0, 1.0])(torch.zeros(2, 2), torch.tensor([0, 1]))
