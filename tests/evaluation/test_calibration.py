"""Calibration: ECE on hand examples, a loop reference, bin boundaries, reliability bins."""

import math

import pytest
import torch

from ccsam.evaluation import expected_calibration_error, reliability_bins


def _two_class_logits(p_class0: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly [p, 1 - p] (float64)."""
    p = torch.tensor(p_class0, dtype=torch.float64)
    return torch.stack([p.log(), (1 - p).log()], dim=1)


# 5 bins of width 0.2. Samples (confidence, correct):
#   (0.9, yes) (0.9, no)  -> bin (0.8, 1]: acc 0.5, conf 0.9, weight 2/5 -> 2/5 * 0.4  = 0.16
#   (0.7, yes) (0.7, no)  -> bin (0.6, .8]: acc 0.5, conf 0.7, weight 2/5 -> 2/5 * 0.2  = 0.08
#   (0.55, yes)           -> bin (0.4, .6]: acc 1.0, conf .55, weight 1/5 -> 1/5 * 0.45 = 0.09
#   ECE = 0.16 + 0.08 + 0.09 = 0.33
HAND_LOGITS = _two_class_logits([0.9, 0.1, 0.7, 0.7, 0.55])  # the 2nd sample predicts class 1 with 0.9
HAND_LABELS = torch.tensor([0, 0, 0, 1, 0])


def test_ece_hand_example() -> None:
    assert expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=5) == pytest.approx(0.33, abs=1e-12)


def test_ece_zero_when_perfectly_calibrated() -> None:
    # 4 samples at confidence 0.75 with 3 correct, 5 samples at confidence 0.6 with 3 correct
    logits = _two_class_logits([0.75] * 4 + [0.6] * 5)
    labels = torch.tensor([0, 0, 0, 1] + [0, 0, 0, 1, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(logits, labels, num_bins=1) == pytest.approx(0.0, abs=1e-12)


def test_single_bin_is_gap_between_accuracy_and_mean_confidence() -> None:
    # one bin: |acc - mean conf| = |3/5 - (0.9 + 0.9 + 0.7 + 0.7 + 0.55) / 5| = |0.6 - 0.75| = 0.15
    assert expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=1) == pytest.approx(0.15, abs=1e-12)


def _ece_reference(logits: torch.Tensor, labels: torch.Tensor, num_bins: int) -> float:
    """Plain-loop ECE with explicit (lo, hi] bins, the first one closed at 0."""
    probs = logits.softmax(dim=1).tolist()
    total = 0.0
    for b in range(num_bins):
        lo, hi = b / num_bins, (b + 1) / num_bins
        members = [
            i for i, p in enumerate(probs) if (lo < max(p) <= hi) or (b == 0 and max(p) == 0.0)
        ]
        if members:
            conf = sum(max(probs[i]) for i in members) / len(members)
            acc = sum(probs[i].index(max(probs[i])) == labels[i].item() for i in members) / len(members)
            total += len(members) / len(probs) * abs(acc - conf)
    return total


@pytest.mark.parametrize("num_bins", [1, 7, 15])
def test_ece_matches_loop_reference(num_bins: int) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 6, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 6, (500,), generator=g)
    expected = _ece_reference(logits, labels, num_bins)
    assert expected_calibration_error(logits, labels, num_bins) == pytest.approx(expected, abs=1e-9)


def test_bin_boundaries_are_right_closed() -> None:
    # equal logits -> confidence exactly 0.5; [50, -50] -> confidence 1.0 in float64
    logits = torch.tensor([[0.0, 0.0], [50.0, -50.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    assert reliability_bins(logits, labels, num_bins=2)["count"] == [1, 1]  # 0.5 in (0, 0.5]
    assert reliability_bins(logits, labels, num_bins=4)["count"] == [0, 1, 0, 1]  # 0.5 in (0.25, 0.5]


def test_reliability_bins_hand_example() -> None:
    bins = reliability_bins(HAND_LOGITS, HAND_LABELS, num_bins=5)
    assert bins["edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 1, 2, 2]
    assert bins["num_samples"] == 5
    assert bins["confidence"][:2] == [None, None] and bins["accuracy"][:2] == [None, None]
    assert bins["confidence"][2:] == pytest.approx([0.55, 0.7, 0.9])
    assert bins["accuracy"][2:] == pytest.approx([1.0, 0.5, 0.5])
    filled = zip(bins["count"][2:], bins["accuracy"][2:], bins["confidence"][2:], strict=False)
    ece = sum(n / 5 * abs(a - c) for n, a, c in filled)
    assert ece == pytest.approx(expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins=5))


def test_half_precision_logits_are_accepted() -> None:
    ece = expected_calibration_error(HAND_LOGITS.half(), HAND_LABELS, num_bins=5)
    assert math.isclose(ece, 0.33, abs_tol=2e-3)


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True])
def test_invalid_num_bins_raises(num_bins: object) -> None:
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(HAND_LOGITS, HAND_LABELS, num_bins)  # type: ignore[arg-type]


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        reliability_bins(HAND_LOGITS[:0], HAND_LABELS[:0])
