"""Class-balanced loss weights from class counts (pure functions of counts and epoch).

* Effective number of samples: Cui, Jia, Lin, Song, Belongie, "Class-Balanced Loss Based on Effective
  Number of Samples", CVPR 2019.
* Deferred re-weighting (DRW): Cao, Wei, Gaidon, Arechiga, Ma, "Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss", NeurIPS 2019.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ccsam.losses._common import ClassCounts, as_class_counts, check_epoch, check_real

__all__ = ["drw_weights", "effective_number_weights"]


def effective_number_weights(class_counts: ClassCounts, beta: float = 0.9999) -> Tensor:
    """``w_c = (1 - beta) / (1 - beta^{n_c})``, rescaled so that ``sum_c w_c = C`` (Cui et al. 2019).

    ``(1 - beta^n) / (1 - beta)`` is the effective number of samples of a class of size ``n``; the
    weight is its inverse, so rarer classes weigh more. ``beta = 0`` gives all ones; ``beta -> 1``
    approaches inverse-frequency weights. ``1 - beta^n`` is evaluated as ``-expm1(n log beta)`` so that
    ``beta = 0.9999`` stays accurate in float32.

    Args:
        class_counts: ``n_c > 0`` per class, shape ``[C]``.
        beta: in ``[0, 1)``.

    Returns:
        float32 weights ``[C]`` on the device of ``class_counts``.

    Example:
        >>> effective_number_weights([1, 1], beta=0.5).tolist()
        [1.0, 1.0]
    """
    beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    return _effective_number_weights(as_class_counts(class_counts), beta)


def _effective_number_weights(counts: Tensor, beta: float) -> Tensor:
    """Kernel of :func:`effective_number_weights` for validated counts (no host-device sync)."""
    log_beta = math.log(beta) if beta > 0.0 else -math.inf
    inv_effective = (1.0 - beta) / -torch.expm1(counts * log_beta)
    return inv_effective * (counts.numel() / inv_effective.sum())


def drw_weights(class_counts: ClassCounts, epoch: int, start_epoch: int, beta: float = 0.9999) -> Tensor:
    """Deferred re-weighting: ones for ``epoch < start_epoch``, effective-number weights from it on.

    ``epoch`` is the loop's 0-based epoch counter, so ``start_epoch = 160`` re-weights the 161st epoch
    onward, as in LDAM-DRW's CIFAR recipe (Cao et al. 2019, ccsam-spec §7).

    Example:
        >>> drw_weights([100, 10], epoch=0, start_epoch=1).tolist()
        [1.0, 1.0]
    """
    epoch = check_epoch("epoch", epoch)
    start_epoch = check_epoch("start_epoch", start_epoch)
    if epoch >= start_epoch:
        return effective_number_weights(class_counts, beta)
    check_real("beta", beta, low=0.0, high=1.0, high_open=True)
    return torch.ones_like(as_class_counts(class_counts))
