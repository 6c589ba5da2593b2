"""Balanced Softmax, logit-adjusted loss and post-hoc logit adjustment."""

import math

import pytest
import torch
from _loss_reference import ce64

from ccsam.losses import BalancedSoftmaxLoss, LogitAdjustedLoss, posthoc_logit_adjustment

COUNTS = [500, 120, 30, 5]


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(10, 4, generator=g) * 2, torch.randint(0, 4, (10,), generator=g)


def test_balanced_softmax_is_ce_on_logits_plus_log_counts() -> None:
    z, y = _batch(0)
    log_n = torch.tensor([math.log(n) for n in COUNTS], dtype=torch.float64)
    log_pi = log_n - math.log(sum(COUNTS))
    got = BalancedSoftmaxLoss(COUNTS)(z, y).double()
    assert torch.allclose(got, ce64(z.double() + log_n, y), atol=1e-6)
    assert torch.allclose(got, ce64(z.double() + log_pi, y), atol=1e-6)  # constant shift: same CE


@pytest.mark.parametrize("tau", [0.0, 0.5, 2.0])
def test_logit_adjusted_is_ce_on_logits_plus_tau_log_prior(tau: float) -> None:
    z, y = _batch(1)
    log_pi = torch.tensor([math.log(n / sum(COUNTS)) for n in COUNTS], dtype=torch.float64)
    got = LogitAdjustedLoss(COUNTS, tau=tau)(z, y).double()
    assert torch.allclose(got, ce64(z.double() + tau * log_pi, y), atol=1e-6)
    if tau == 0.0:
        assert torch.allclose(got, ce64(z, y), atol=1e-6)


def test_posthoc_adjustment_moves_argmax_to_tail() -> None:
    counts = [900, 100]
    z = torch.tensor([[1.0, 0.0], [5.0, 0.0]])
    adjusted = posthoc_logit_adjustment(z, counts, tau=1.0)
    # 1 - ln 0.9 = 1.105 < 0 - ln 0.1 = 2.303: the tail class wins the first row, not the second
    assert adjusted[0].tolist() == pytest.approx([1 - math.log(0.9), -math.log(0.1)], rel=1e-6)
    assert z.argmax(1).tolist() == [0, 0] and adjusted.argmax(1).tolist() == [1, 0]
    assert torch.equal(posthoc_logit_adjustment(z, counts, tau=0.0), z)


def test_validation() -> None:
    with pytest.raises(ValueError, match="classes"):
        posthoc_logit_adjustment(torch.zeros(2, 3), [1, 2])
    with pytest.raises(ValueError, match="tau"):
        LogitAdjustedLoss(COUNTS, tau=float("nan"))
    with pytest.raises(ValueError, match="built for 4"):
        BalancedSoftmaxLoss(COUNTS)(torch.zeros(2, 3), torch.tensor([0, 1]))
