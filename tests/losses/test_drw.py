"""DeferredReweighting: the composition DRW(LDAM) equals the old LDAM-DRW bit for bit; DRW(CE) and
DRW(focal) against weighted means written out here (value and gradient)."""

from __future__ import annotations

import pytest
import torch
from _loss_reference import ce64, log_softmax64

from ccsam.config.schema import LossConfig
from ccsam.losses import CrossEntropyLoss, DeferredReweighting, FocalLoss, LDAMLoss
from ccsam.training.assembly import build_criterion

COUNTS = [500, 120, 30, 8]
START = 3


def _batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    cos = (torch.rand(64, 4, generator=g) * 2 - 1).to(dtype)
    return cos, torch.randint(0, 4, (64,), generator=g)


Pair = tuple[torch.Tensor, torch.Tensor]


def _value_and_grad(loss: torch.nn.Module, logits: torch.Tensor, y: torch.Tensor) -> Pair:
    x = logits.clone().requires_grad_(True)
    value = loss(x, y)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def _effective_weights64(beta: float = 0.9999) -> torch.Tensor:
    n = torch.tensor(COUNTS, dtype=torch.float64)
    w = (1 - beta) / (1 - beta**n)
    return w * len(COUNTS) / w.sum()


@pytest.mark.parametrize("epoch", [0, START - 1, START, START + 5])
def test_drw_ldam_equals_old_ldam_drw_bit_for_bit(epoch: int) -> None:
    cos, y = _batch()
    old = LDAMLoss(COUNTS, max_margin=0.5, scale=30.0, drw_start_epoch=START)
    new = DeferredReweighting(LDAMLoss(COUNTS, max_margin=0.5, scale=30.0), COUNTS, start_epoch=START)
    old.set_epoch(epoch)
    new.set_epoch(epoch)
    old_value, old_grad = _value_and_grad(old, cos, y)
    new_value, new_grad = _value_and_grad(new, cos, y)
    assert torch.equal(old_value, new_value) and torch.equal(old_grad, new_grad)


@pytest.mark.parametrize("epoch", [START - 1, START])
def test_drw_ce_is_the_weighted_mean(epoch: int) -> None:
    logits, y = _batch(torch.float64)
    loss = DeferredReweighting(CrossEntropyLoss(), COUNTS, start_epoch=START)
    loss.set_epoch(epoch)
    value, grad = _value_and_grad(loss, logits, y)
    weight = _effective_weights64() if epoch >= START else torch.ones(4, dtype=torch.float64)
    x = logits.clone().requires_grad_(True)
    expected = ce64(x, y, weight)
    (expected_grad,) = torch.autograd.grad(expected, x)
    assert torch.allclose(value, expected, rtol=1e-6)
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-9)
    if epoch >= START:  # the re-weighting really changes the gradient
        assert not torch.allclose(grad, _value_and_grad(CrossEntropyLoss(), logits, y)[1], atol=1e-4)


def test_drw_focal_is_the_class_weighted_mean_of_focal_terms() -> None:
    logits, y = _batch(torch.float64)
    loss = DeferredReweighting(FocalLoss(gamma=2.0), COUNTS, start_epoch=0)
    value, grad = _value_and_grad(loss, logits, y)
    x = logits.clone().requires_grad_(True)
    log_pt = log_softmax64(x)[torch.arange(64), y]
    w = _effective_weights64()[y]
    expected = (w * -(1 - log_pt.exp()) ** 2 * log_pt).sum() / w.sum()
    (expected_grad,) = torch.autograd.grad(expected, x)
    assert torch.allclose(value, expected, rtol=1e-6)
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-9)


def test_config_builds_the_wrapper_and_rejects_double_drw() -> None:
    counts = torch.tensor(COUNTS)
    wrapped = build_criterion(LossConfig(name="ce", drw={"start_epoch": 2}), counts)
    assert isinstance(wrapped, DeferredReweighting) and wrapped.start_epoch == 2
    assert isinstance(build_criterion(LossConfig(name="ce"), counts), CrossEntropyLoss)
    with pytest.raises(ValueError, match="DRW once"):
        LossConfig(name="ldam", options={"drw_start_epoch": 1}, drw={"start_epoch": 1})
    with pytest.raises(ValueError, match="already re-weights"):
        DeferredReweighting(LDAMLoss(COUNTS, drw_start_epoch=1), COUNTS, start_epoch=1)
    with pytest.raises(ValueError, match="class_weight"):
        DeferredReweighting(torch.nn.CrossEntropyLoss(), COUNTS, start_epoch=1)
