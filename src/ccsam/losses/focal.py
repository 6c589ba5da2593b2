"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import (
    ClassCounts,
    as_class_vector,
    check_logits_targets,
    check_real,
    class_weighted_mean,
)

__all__ = ["FocalLoss", "focal_term"]


def focal_term(log_pt: Tensor, gamma: float, *, detach_weight: bool = False) -> Tensor:
    """Per-sample ``-(1 - p_t)^gamma log p_t`` from ``log p_t`` (any shape).

    ``1 - p_t`` is computed as ``-expm1(log p_t)`` (accurate when ``p_t`` is close to 1) and clamped at
    the smallest normal number so that ``gamma < 1`` keeps a finite gradient at ``p_t = 1``. With
    ``detach_weight`` the factor ``(1 - p_t)^gamma`` is a constant for autograd (same value, gradient
    ``-(1 - p_t)^gamma d log p_t`` only), as in the official GCL loss; Lin et al.'s focal loss
    differentiates through it.
    """
    nll = -log_pt
    if gamma == 0.0:
        return nll
    source = log_pt.detach() if detach_weight else log_pt
    one_minus_pt = (-torch.expm1(source)).clamp_min(torch.finfo(log_pt.dtype).tiny)
    return one_minus_pt.pow(gamma) * nll


class FocalLoss(nn.Module):
    """``L = mean_i alpha_{y_i} (1 - p_{i,y_i})^gamma (-log p_{i,y_i})``, ``p_i = softmax(z_i)``.

    ``gamma = 0`` and no ``alpha`` is plain cross-entropy. LT codebases (LDAM, GCL, Saddle-LongTail) use
    ``gamma = 1`` on CIFAR-LT. ``alpha`` is a per-class weight vector (the multi-class form of the
    paper's alpha-balancing); the reduction is a plain mean over the batch, not a weighted mean.

    Args:
        gamma: focusing parameter, ``>= 0``.
        alpha: optional per-class weights ``[C]`` (finite, ``>= 0``), kept in a buffer.

    Example:
        >>> import torch
        >>> FocalLoss(gamma=2.0)(torch.zeros(1, 2), torch.tensor([0])).item()  # (1 - 1/2)^2 * log 2
        0.1732867956161499
    """

    alpha: Tensor | None

    def __init__(self, gamma: float = 1.0, alpha: ClassCounts | None = None) -> None:
        super().__init__()
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.register_buffer("alpha", None if alpha is None else as_class_vector(alpha, "alpha"))

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean (with ``class_weight``: class-weighted mean) focal loss of ``logits [B, C]``."""
        num_classes = None if self.alpha is None else self.alpha.numel()
        dtype = check_logits_targets(logits, targets, num_classes)
        log_pt = F.log_softmax(logits.to(dtype), dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        loss = focal_term(log_pt, self.gamma)
        if self.alpha is not None:
            loss = loss * self.alpha.to(dtype)[targets]
        return class_weighted_mean(loss, targets, class_weight)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha is not None}"
