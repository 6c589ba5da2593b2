"""effective_number_weights and drw_weights: normalisation, ordering, hand values, the DRW switch."""

import pytest
import torch

from ccsam.losses import drw_weights, effective_number_weights

COUNTS = [5000, 2000, 500, 100, 50]


def test_weights_sum_to_num_classes_and_favour_rare_classes() -> None:
    w = effective_number_weights(COUNTS)
    assert w.sum().item() == pytest.approx(len(COUNTS), rel=1e-6)
    assert (w[1:] > w[:-1]).all()


def test_hand_example() -> None:
    # beta = 0.5: raw (1 - b)/(1 - b^n) = [1, 2/3]; scaled to sum 2 -> [1.2, 0.8]
    assert effective_number_weights([1, 2], beta=0.5).tolist() == pytest.approx([1.2, 0.8], rel=1e-6)
    assert effective_number_weights([1, 7, 3], beta=0.0).tolist() == [1.0, 1.0, 1.0]


def test_float32_matches_float64_formula_at_default_beta() -> None:
    beta = 0.9999
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = [r * len(COUNTS) / sum(raw) for r in raw]
    assert effective_number_weights(torch.tensor(COUNTS)).tolist() == pytest.approx(expected, rel=1e-5)


def test_drw_switches_exactly_at_start_epoch() -> None:
    assert drw_weights(COUNTS, epoch=0, start_epoch=160).tolist() == [1.0] * 5
    assert drw_weights(COUNTS, epoch=159, start_epoch=160).tolist() == [1.0] * 5
    for epoch in (160, 199):
        assert torch.equal(drw_weights(COUNTS, epoch, 160), effective_number_weights(COUNTS))
    assert torch.equal(drw_weights(COUNTS, 0, 0, beta=0.5), effective_number_weights(COUNTS, beta=0.5))


def test_validation() -> None:
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights(COUNTS, beta=1.0)
    with pytest.raises(ValueError, match="class_counts"):
        effective_number_weights([10, 0])
    with pytest.raises(ValueError, match="class_counts"):
        effective_number_weights([[1, 2]])
    with pytest.raises(ValueError, match="epoch"):
        drw_weights(COUNTS, epoch=-1, start_epoch=0)
    with pytest.raises(ValueError, match="start_epoch"):
        drw_weights(COUNTS, epoch=1, start_epoch=True)
