"""Long-tailed count profiles: published totals (golden values) and invariants."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from ccsam.data.profiles import long_tail_counts


@pytest.mark.parametrize(
    ("n_max", "num_classes", "ratio", "total"),
    [
        (5000, 10, 200, 11_203),  # CIFAR-10-LT
        (5000, 10, 100, 12_406),
        (5000, 10, 50, 13_996),
        (500, 100, 200, 9_502),  # CIFAR-100-LT
        (500, 100, 100, 10_847),
        (500, 100, 50, 12_608),
    ],
)
def test_exp_profile_matches_published_totals(n_max: int, num_classes: int, ratio: float, total: int) -> None:
    assert sum(long_tail_counts(n_max, num_classes, ratio)) == total


def test_exp_profile_cifar10_ir100_golden_counts() -> None:
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.mark.parametrize(
    ("n_max", "num_classes", "ratio"),
    [(5000, 10, 200), (5000, 10, 100), (500, 100, 100), (500, 100, 10), (100, 7, 3.5), (50, 2, 1)],
)
def test_exp_profile_is_monotone_with_exact_endpoints(n_max: int, num_classes: int, ratio: float) -> None:
    counts = long_tail_counts(n_max, num_classes, ratio)
    assert len(counts) == num_classes
    assert all(isinstance(c, int) for c in counts)
    assert all(a >= b for a, b in pairwise(counts))
    assert counts[0] == n_max
    assert counts[-1] == int(n_max / ratio)


def test_exp_profile_follows_the_formula_term_by_term() -> None:
    expected = [int(500 * (1 / 100) ** (i / 99)) for i in range(100)]
    assert long_tail_counts(500, 100, 100) == expected


def test_ratio_one_is_balanced_and_single_class_is_n_max() -> None:
    assert long_tail_counts(300, 5, 1) == [300] * 5
    assert long_tail_counts(300, 1, 10) == [300]


def test_step_profile() -> None:
    assert long_tail_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tail_counts(500, 10, 10, "step", minority_fraction=0.3) == [500] * 7 + [50] * 3
    assert long_tail_counts(500, 4, 10, "step", minority_fraction=1.0) == [50] * 4


@pytest.mark.parametrize("ratio", [0.5, 0.0, -3.0, math.nan, math.inf])
def test_bad_imbalance_ratio_raises(ratio: float) -> None:
    with pytest.raises(ValueError, match="imbalance_ratio"):
        long_tail_counts(5000, 10, ratio)


def test_other_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="n_max"):
        long_tail_counts(0, 10, 10)
    with pytest.raises(ValueError, match="num_classes"):
        long_tail_counts(100, 0, 10)
    with pytest.raises(ValueError, match="profile"):
        long_tail_counts(100, 10, 10, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="minority_fraction"):
        long_tail_counts(100, 10, 10, "step", minority_fraction=1.5)
    with pytest.raises(ValueError, match="0 images"):
        long_tail_counts(100, 10, 200)
