"""Long-tailed class-count profiles: pure functions of ``(n_max, C, IR)``.

The exponential profile is the one of Cao et al. 2019 (LDAM-DRW) that CIFAR-10/100-LT use
everywhere, class 0 being the head: ``n_i = int(n_max * (1/IR) ** (i / (C - 1)))``.
"""

from __future__ import annotations

import math
from typing import Literal

from ccsam.checks import check_int

__all__ = ["long_tail_counts"]


def long_tail_counts(
    n_max: int,
    num_classes: int,
    imbalance_ratio: float,
    profile: Literal["exp", "step"] = "exp",
    minority_fraction: float = 0.5,
) -> list[int]:
    """Compute the number of training images per class of a long-tailed profile.

    ``exp``: ``n_i = int(n_max * (1/IR) ** (i / (C-1)))`` for ``i = 0..C-1``, evaluated in float64
    exactly in that order, so CIFAR-10-LT (n_max 5000) gives 12,406 images at IR 100 and
    CIFAR-100-LT (n_max 500) gives 10,847. ``step``: the first ``round(C * (1 - minority_fraction))``
    classes get ``n_max``, the rest ``int(n_max / IR)``.

    Args:
        n_max: images of the head class (class 0).
        num_classes: number of classes ``C``.
        imbalance_ratio: ``IR = n_max / n_min``, at least 1 (1 gives a balanced set).
        profile: ``"exp"`` or ``"step"``.
        minority_fraction: share of tail classes in the step profile, in ``[0, 1]``.

    Returns:
        ``C`` counts, non-increasing, ``counts[0] == n_max``.

    Example:
        >>> sum(long_tail_counts(5000, 10, 100))
        12406
    """
    check_int("n_max", n_max, low=1)
    check_int("num_classes", num_classes, low=1)
    if not math.isfinite(imbalance_ratio) or imbalance_ratio < 1:
        raise ValueError(
            f"imbalance_ratio must be a finite number >= 1 (IR = n_max / n_min), got {imbalance_ratio!r}"
        )
    n_min = int(n_max / imbalance_ratio)
    if n_min < 1:
        raise ValueError(
            f"imbalance_ratio {imbalance_ratio} leaves the tail class int({n_max}/{imbalance_ratio}) = 0 "
            f"images; use imbalance_ratio <= {n_max} or a larger n_max"
        )
    if profile == "exp":
        if num_classes == 1:
            return [n_max]
        # Same expression and evaluation order as the LDAM-DRW reference: the published
        # totals depend on where int() truncates, so the float64 rounding must match.
        return [int(n_max * (1.0 / imbalance_ratio) ** (i / (num_classes - 1))) for i in range(num_classes)]
    if profile == "step":
        if not 0.0 <= minority_fraction <= 1.0:
            raise ValueError(f"minority_fraction must lie in [0, 1], got {minority_fraction!r}")
        num_head = round(num_classes * (1.0 - minority_fraction))
        return [n_max] * num_head + [n_min] * (num_classes - num_head)
    raise ValueError(f"unknown profile {profile!r}; use 'exp' or 'step'")
