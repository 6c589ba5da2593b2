"""VSLoss: reduces to CE and to logit adjustment; general case against the written-out formula."""

import math

import pytest
import torch
from _loss_reference import ce64

from ccsam.losses import LogitAdjustedLoss, VSLoss

COUNTS = [400, 80, 20]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(12, 3, generator=g) * 2, torch.randint(0, 3, (12,), generator=g)


def test_gamma_and_tau_zero_is_ce() -> None:
    z, y = _batch()
    assert torch.allclose(VSLoss(COUNTS, gamma=0.0, tau=0.0)(z, y).double(), ce64(z, y), atol=1e-6)


def test_gamma_zero_is_logit_adjustment() -> None:
    z, y = _batch()
    for tau in (0.5, 1.0):
        assert torch.allclose(VSLoss(COUNTS, gamma=0.0, tau=tau)(z, y), LogitAdjustedLoss(COUNTS, tau)(z, y))


def test_general_case_matches_formula() -> None:
    z, y = _batch()
    gamma, tau = 0.3, 1.0
    delta = torch.tensor([(n / 400) ** gamma for n in COUNTS], dtype=torch.float64)  # [1, 0.617, 0.405]
    iota = torch.tensor([tau * math.log(n / 500) for n in COUNTS], dtype=torch.float64)
    expected = ce64(z.double() * delta + iota, y)
    assert torch.allclose(VSLoss(COUNTS, gamma=gamma, tau=tau)(z, y).double(), expected, atol=1e-6)


def test_validation() -> None:
    with pytest.raises(ValueError, match="gamma"):
        VSLoss(COUNTS, gamma=-0.1)
