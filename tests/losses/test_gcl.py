"""GCLLoss: deterministic limit, one-sided noise growing with rarity, seeded reproducibility."""

import math

import pytest
import torch
from _loss_reference import ce64, log_softmax64

from ccsam.losses import GCLLoss, gcl_cloud_sizes

COUNTS = [1000, 100, 10]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.rand(8, 3, generator=g) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2, 1, 0])


def _margin_logits(cos: torch.Tensor, y: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    out = cos.double().clone()
    for i, yi in enumerate(y.tolist()):
        out[i, yi] -= margin
    return scale * out


def test_no_noise_is_scaled_margin_ce() -> None:
    cos, y = _batch()
    expected = ce64(_margin_logits(cos, y, 20.0, 0.1), y)
    plain = GCLLoss(COUNTS, scale=20.0, margin=0.1, noise_mul=0.0)
    assert torch.allclose(plain(cos, y).double(), expected, atol=1e-5)
    noisy = GCLLoss(COUNTS, scale=20.0, margin=0.1, noise_mul=0.5).eval()
    assert torch.allclose(noisy(cos, y).double(), expected, atol=1e-5)


def test_focal_factor() -> None:
    cos, y = _batch()
    log_pt = log_softmax64(_margin_logits(cos, y, 30.0, 0.0))[torch.arange(8), y]
    expected = (-(1 - log_pt.exp()) * log_pt).mean()
    assert torch.allclose(GCLLoss(COUNTS, noise_mul=0.0, gamma=1.0)(cos, y).double(), expected, atol=1e-5)


def test_noise_only_lowers_logits_and_more_for_rarer_classes() -> None:
    assert gcl_cloud_sizes(COUNTS).tolist() == pytest.approx([0.0, 0.5, 1.0])
    n = 20000
    cos, y = torch.zeros(n, 3), torch.zeros(n, dtype=torch.long)
    loss = GCLLoss(COUNTS, scale=1.0, noise_mul=0.5, generator=torch.Generator().manual_seed(0))
    drop = -loss.adjusted_logits(cos, y)
    assert (drop >= 0).all() and (drop[:, 0] == 0).all()
    assert (drop[:, 1] <= 0.25 + 1e-6).all() and (drop[:, 2] <= 0.5 + 1e-6).all()
    mean_abs = math.sqrt(2 / math.pi) / 3  # E|N(0, std 1/3)|; the [-1, 1] clip is ~3 sigma
    assert drop[:, 2].mean().item() == pytest.approx(0.5 * mean_abs, rel=0.03)
    assert drop[:, 1].mean().item() == pytest.approx(0.25 * mean_abs, rel=0.03)


def test_seeded_generator_reproduces_and_noise_is_fresh() -> None:
    cos, y = _batch()

    def loss_with_seed(seed: int) -> GCLLoss:
        return GCLLoss(COUNTS, generator=torch.Generator().manual_seed(seed))

    a, b = loss_with_seed(7), loss_with_seed(7)
    first = a(cos, y)
    assert torch.equal(first, b(cos, y))
    assert not torch.equal(first, a(cos, y))


def test_validation() -> None:
    with pytest.raises(ValueError, match="generator"):
        GCLLoss(COUNTS, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_mul"):
        GCLLoss(COUNTS, noise_mul=-0.5)
    assert gcl_cloud_sizes([5, 5]).tolist() == [0.0, 0.0]


def _gcl_reference(
    cos: torch.Tensor, y: torch.Tensor, scale: float, margin: float, gamma: float
) -> torch.Tensor:
    """Official GCL stage-2 loss in float64: per-sample CE weighted by (1 - p_y)^gamma with p detached."""
    log_pt = log_softmax64(_margin_logits(cos, y, scale, margin))[torch.arange(len(y)), y]
    weight = (1 - log_pt.detach().exp()) ** gamma
    return (-weight * log_pt).mean()


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_focal_weight_is_detached_value_and_gradient(gamma: float) -> None:
    cos, y = _batch()
    ref_in = cos.double().clone().requires_grad_(True)
    expected = _gcl_reference(ref_in, y, 20.0, 0.1, gamma)
    (expected_grad,) = torch.autograd.grad(expected, ref_in)
    ours_in = cos.double().clone().requires_grad_(True)
    value = GCLLoss(COUNTS, scale=20.0, margin=0.1, noise_mul=0.0, gamma=gamma)(ours_in, y)
    (grad,) = torch.autograd.grad(value, ours_in)
    # The margin buffer is float32 (0.1 is not exact), hence 1e-7 rather than float64 round-off.
    assert torch.allclose(value, expected, rtol=1e-7, atol=0)
    # An undetached focal factor moves the gradient by ~6 % (gamma 1) to ~9 % (gamma 2) of its norm.
    assert (grad - expected_grad).norm() <= 1e-6 * expected_grad.norm()
