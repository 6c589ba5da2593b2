"""CrossEntropyLoss: manual smoothing formula, weighted mean, validation."""

import pytest
import torch
from _loss_reference import ce64, log_softmax64

from ccsam.losses import CrossEntropyLoss


def _batch(seed: int = 0, b: int = 6, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * 3, torch.randint(0, c, (b,), generator=g)


def test_plain_ce_matches_manual() -> None:
    z, y = _batch()
    assert torch.allclose(CrossEntropyLoss()(z, y).double(), ce64(z, y), atol=1e-6)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothing_matches_manual_formula(eps: float) -> None:
    z, y = _batch(1)
    c = z.shape[1]
    q = torch.full(z.shape, eps / c, dtype=torch.float64)
    q[torch.arange(len(y)), y] += 1 - eps
    expected = -(q * log_softmax64(z)).sum(1).mean()
    assert torch.allclose(CrossEntropyLoss(label_smoothing=eps)(z, y).double(), expected, atol=1e-6)


def test_weighted_mean() -> None:
    z, y = _batch(2)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    assert torch.allclose(CrossEntropyLoss(weight=w)(z, y).double(), ce64(z, y, w), atol=1e-6)
    assert "weight" in CrossEntropyLoss(weight=w).state_dict()


def test_validation() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match="label_smoothing"):
        CrossEntropyLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight"):
        CrossEntropyLoss(weight=[1.0, -1.0])
    with pytest.raises(ValueError, match="built for 3"):
        CrossEntropyLoss(weight=[1.0, 1.0, 1.0])(z, y)
    with pytest.raises(ValueError, match="targets"):
        CrossEntropyLoss()(z, y.float())
    with pytest.raises(ValueError, match="logits"):
        CrossEntropyLoss()(z[0], y[:1])
