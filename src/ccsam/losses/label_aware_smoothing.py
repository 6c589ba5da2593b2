"""Label-aware smoothing, the MiSLAS stage-2 loss (Zhong, Cui, Liu, Jia, CVPR 2021)."""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import (
    ClassCounts,
    as_class_counts,
    check_logits_targets,
    check_real,
    class_weighted_mean,
)

__all__ = ["LabelAwareSmoothingLoss", "SmoothingShape", "label_aware_epsilons"]

SmoothingShape = Literal["concave", "linear"]


def label_aware_epsilons(
    class_counts: ClassCounts,
    eps_head: float = 0.3,
    eps_tail: float = 0.0,
    shape: SmoothingShape = "concave",
) -> Tensor:
    """Per-class smoothing ``eps_c = eps_tail + (eps_head - eps_tail) * f(r_c)``, ``r_c = (n_c - n_min) /
    (n_max - n_min)``, with ``f(r) = sin(pi r / 2)`` ("concave") or ``f(r) = r`` ("linear").

    The largest class gets ``eps_head``, the smallest ``eps_tail``. When every class has the same size
    (``n_max = n_min``) all classes get ``eps_head``. Returns float32 ``[C]``.

    Example:
        >>> label_aware_epsilons([100, 10], eps_head=0.4, eps_tail=0.1).tolist()
        [0.4000000059604645, 0.10000000149011612]
    """
    eps_head = check_real("eps_head", eps_head, low=0.0, high=1.0)
    eps_tail = check_real("eps_tail", eps_tail, low=0.0, high=1.0)
    if shape not in get_args(SmoothingShape):
        raise ValueError(f"shape must be one of {', '.join(get_args(SmoothingShape))}, got {shape!r}")
    return _label_aware_epsilons(as_class_counts(class_counts), eps_head, eps_tail, shape)


def _label_aware_epsilons(counts: Tensor, eps_head: float, eps_tail: float, shape: str) -> Tensor:
    """Kernel of :func:`label_aware_epsilons` (no data-dependent branch, so no host-device sync)."""
    span = counts.max() - counts.min()
    ratio = (counts - counts.min()) / span.clamp_min(torch.finfo(counts.dtype).tiny)
    ratio = torch.where(span > 0, ratio, torch.ones_like(counts))
    if shape == "concave":
        ratio = (0.5 * math.pi * ratio).sin()
    return eps_tail + (eps_head - eps_tail) * ratio


class LabelAwareSmoothingLoss(nn.Module):
    """``L = mean_i -sum_j q_ij log p_ij`` with ``q_i = (1 - eps_{y_i}) e_{y_i} + eps_{y_i} / C``.

    That is ``(1 - eps_y) (-log p_y) + eps_y * mean_j(-log p_j)`` per sample, i.e. standard label
    smoothing whose ``eps`` depends on the true class through :func:`label_aware_epsilons` (MiSLAS;
    CIFAR-10 0.3/0.0, CIFAR-100 0.4/0.1, ImageNet-LT and iNat 0.3/0.0, Places 0.4/0.1).

    Args:
        class_counts: training-set size per class ``[C]``, kept in a buffer.
        eps_head: smoothing of the largest class, in ``[0, 1]``.
        eps_tail: smoothing of the smallest class, in ``[0, 1]``.
        shape: "concave" (sine) or "linear" interpolation in the class size.

    Example:
        >>> import torch
        >>> LabelAwareSmoothingLoss([100, 10])(torch.zeros(2, 2), torch.tensor([0, 1])).shape
        torch.Size([])
    """

    class_counts: Tensor

    def __init__(
        self,
        class_counts: ClassCounts,
        eps_head: float = 0.3,
        eps_tail: float = 0.0,
        shape: SmoothingShape = "concave",
    ) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        label_aware_epsilons(self.class_counts, eps_head, eps_tail, shape)  # validates the arguments
        self.eps_head, self.eps_tail, self.shape = float(eps_head), float(eps_tail), shape

    def epsilons(self) -> Tensor:
        """Per-class ``eps_c`` ``[C]`` on the buffer's device."""
        return _label_aware_epsilons(self.class_counts, self.eps_head, self.eps_tail, self.shape)

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean (with ``class_weight``: class-weighted mean) label-aware-smoothed CE of ``logits [B, C]``."""
        dtype = check_logits_targets(logits, targets, self.class_counts.numel())
        log_p = F.log_softmax(logits.to(dtype), dim=1)
        nll = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
        uniform = -log_p.mean(dim=1)
        eps = self.epsilons().to(dtype)[targets]
        return class_weighted_mean((1.0 - eps) * nll + eps * uniform, targets, class_weight)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.class_counts.numel()}, eps_head={self.eps_head}, eps_tail={self.eps_tail}, "
            f"shape={self.shape!r}"
        )
