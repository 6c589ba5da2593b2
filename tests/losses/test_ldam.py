"""LDAMLoss: margins from counts, loss = CE on s * (z - m_y e_y), DRW via set_epoch."""

import math

import pytest
import torch
from _loss_reference import ce64

from ccsam.losses import LDAMLoss, ldam_margins

COUNTS = [1000, 100, 10]


def test_margins_hand_example() -> None:
    m = ldam_margins(COUNTS, max_margin=0.5)
    # m_c = 0.5 * (10 / n_c)^(1/4): 0.5 * 0.01^0.25, 0.5 * 0.1^0.25, 0.5
    assert m.tolist() == pytest.approx([0.1581139, 0.2811707, 0.5], rel=1e-6)
    assert m.max().item() == pytest.approx(0.5) and m.argmax().item() == 2
    c_prime = [mi * n**0.25 for mi, n in zip(m.tolist(), COUNTS, strict=False)]
    assert c_prime == pytest.approx([c_prime[0]] * 3, rel=1e-6)  # m proportional to n^-1/4


def test_loss_equals_ce_on_scaled_margin_logits() -> None:
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(7, 3, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    margins = [0.5 * (10 / n) ** 0.25 for n in COUNTS]
    adjusted = cos.double().clone()
    for i, yi in enumerate(y.tolist()):
        adjusted[i, yi] -= margins[yi]
    expected = ce64(30.0 * adjusted, y)
    assert torch.allclose(LDAMLoss(COUNTS)(cos, y).double(), expected, atol=1e-5)


def test_drw_weights_follow_set_epoch() -> None:
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(9, 3, generator=g) * 2 - 1
    y = torch.randint(0, 3, (9,), generator=g)
    loss = LDAMLoss(COUNTS, scale=10.0, drw_start_epoch=5)
    no_drw = LDAMLoss(COUNTS, scale=10.0)
    loss.set_epoch(4)
    assert torch.allclose(loss(cos, y), no_drw(cos, y))
    loss.set_epoch(5)
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in COUNTS]
    w = torch.tensor([r * 3 / sum(raw) for r in raw])
    adjusted = cos.double() - torch.nn.functional.one_hot(y, 3) * torch.tensor(
        [0.5 * (10 / n) ** 0.25 for n in COUNTS], dtype=torch.float64
    )
    assert torch.allclose(loss(cos, y).double(), ce64(10.0 * adjusted, y, w), atol=1e-5)
    assert not math.isclose(loss(cos, y).item(), no_drw(cos, y).item(), rel_tol=1e-3)


def test_buffer_gradient_and_validation() -> None:
    loss = LDAMLoss(COUNTS)
    assert torch.equal(loss.state_dict()["class_counts"], torch.tensor(COUNTS, dtype=torch.float32))
    cos = torch.zeros(2, 3, requires_grad=True)
    loss(cos, torch.tensor([0, 2])).backward()
    assert cos.grad is not None and cos.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="built for 3"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epoch"):
        loss.set_epoch(-1)
    with pytest.raises(ValueError, match="scale"):
        LDAMLoss(COUNTS, scale=0.0)
