"""effective_class_weights: the per-class w_c of a criterion's weighted batch mean, or None for a plain mean."""

from __future__ import annotations

import pytest
import torch
from _loss_reference import ce64

from ccsam.losses import (
    BalancedSoftmaxLoss,
    CrossEntropyLoss,
    DeferredReweighting,
    FocalLoss,
    LDAMLoss,
    effective_class_weights,
)

COUNTS = [100, 10, 1]
STATIC = [1.0, 2.0, 0.5]
BETA = 0.999


def _effective_number() -> list[float]:
    """(1 - beta) / (1 - beta^n_c), rescaled to sum to C, written out by hand."""
    raw = [(1 - BETA) / (1 - BETA**n) for n in COUNTS]
    return [r * len(COUNTS) / sum(raw) for r in raw]


def _values(weights: torch.Tensor | None) -> list[float] | None:
    return None if weights is None else weights.tolist()


def test_drw_gives_ones_then_effective_number_weights_times_the_wrapped_static_weights() -> None:
    drw = DeferredReweighting(CrossEntropyLoss(), COUNTS, start_epoch=2, beta=BETA)
    drw.set_epoch(1)
    assert _values(effective_class_weights(drw)) == [1.0, 1.0, 1.0]
    drw.set_epoch(2)
    assert _values(effective_class_weights(drw)) == pytest.approx(_effective_number(), rel=1e-6)

    weighted = DeferredReweighting(CrossEntropyLoss(weight=STATIC), COUNTS, start_epoch=2, beta=BETA)
    weighted.set_epoch(1)
    assert _values(effective_class_weights(weighted)) == STATIC  # ones times the static weights
    weighted.set_epoch(5)
    product = [s * w for s, w in zip(STATIC, _effective_number(), strict=True)]
    assert _values(effective_class_weights(weighted)) == pytest.approx(product, rel=1e-6)


def test_drw_of_a_loss_without_reduction_weights_is_the_drw_weights_alone() -> None:
    for inner in (LDAMLoss(COUNTS), FocalLoss(alpha=STATIC), BalancedSoftmaxLoss(COUNTS)):
        drw = DeferredReweighting(inner, COUNTS, start_epoch=0, beta=BETA)
        assert _values(effective_class_weights(drw)) == pytest.approx(_effective_number(), rel=1e-6)


def test_ldam_gives_its_drw_weights() -> None:
    assert effective_class_weights(LDAMLoss(COUNTS)) is None
    ldam = LDAMLoss(COUNTS, drw_start_epoch=3, beta=BETA)
    ldam.set_epoch(2)
    assert _values(effective_class_weights(ldam)) == [1.0, 1.0, 1.0]
    ldam.set_epoch(3)
    assert _values(effective_class_weights(ldam)) == pytest.approx(_effective_number(), rel=1e-6)


def test_cross_entropy_gives_its_weight_and_plain_means_give_none() -> None:
    assert effective_class_weights(CrossEntropyLoss()) is None
    assert _values(effective_class_weights(CrossEntropyLoss(weight=STATIC))) == STATIC
    assert _values(effective_class_weights(torch.nn.CrossEntropyLoss(weight=torch.tensor(STATIC)))) == STATIC
    assert effective_class_weights(torch.nn.CrossEntropyLoss()) is None
    assert effective_class_weights(torch.nn.CrossEntropyLoss(torch.tensor(STATIC), reduction="sum")) is None
    assert effective_class_weights(FocalLoss(alpha=STATIC)) is None  # alpha scales l_i; the mean is plain
    assert effective_class_weights(BalancedSoftmaxLoss(COUNTS)) is None


def test_the_weights_are_those_the_criterion_divides_by() -> None:
    """DRW(CE(weight)) equals the hand-written weighted mean with the returned weights."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 0, 1])
    drw = DeferredReweighting(CrossEntropyLoss(weight=STATIC), COUNTS, start_epoch=0, beta=BETA)
    w = effective_class_weights(drw)
    assert w is not None
    torch.testing.assert_close(drw(z, y), ce64(z, y, w), rtol=1e-6, atol=1e-9)
