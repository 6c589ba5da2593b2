"""Softmax cross-entropy, the ERM baseline (optionally label-smoothed and class-weighted)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import ClassCounts, as_class_vector, check_logits_targets, check_real

__all__ = ["CrossEntropyLoss"]


def _combine(weight: Tensor | None, class_weight: Tensor | None) -> Tensor | None:
    if weight is None or class_weight is None:
        return class_weight if weight is None else weight
    return weight * class_weight.to(weight.device)


class CrossEntropyLoss(nn.Module):
    """``L = mean_i -sum_j q_ij log softmax(z_i)_j`` with ``q_i = (1 - eps) e_{y_i} + eps / C``.

    A thin, validated wrapper over :func:`torch.nn.functional.cross_entropy`. Label smoothing follows
    Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016 (``eps = label_smoothing``).
    With ``weight`` the batch reduction is PyTorch's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``
    (as in LDAM-DRW's class-balanced CE), not a plain mean.

    Args:
        label_smoothing: ``eps`` in ``[0, 1]``.
        weight: optional per-class weights ``[C]`` (finite, ``>= 0``), kept in a buffer.

    Example:
        >>> import torch
        >>> CrossEntropyLoss(label_smoothing=0.1)(torch.zeros(2, 4), torch.tensor([0, 3])).item()
        1.3862943649291992
    """

    weight: Tensor | None

    def __init__(self, label_smoothing: float = 0.0, weight: ClassCounts | None = None) -> None:
        super().__init__()
        self.label_smoothing = check_real("label_smoothing", label_smoothing, low=0.0, high=1.0)
        self.register_buffer("weight", None if weight is None else as_class_vector(weight, "weight"))

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean (or weighted mean) cross-entropy of ``logits [B, C]`` against ``targets [B]``.

        ``class_weight`` (from :class:`~ccsam.losses.drw.DeferredReweighting`) multiplies ``weight``.
        """
        num_classes = None if self.weight is None else self.weight.numel()
        dtype = check_logits_targets(logits, targets, num_classes)
        weight = _combine(self.weight, class_weight)
        weight = None if weight is None else weight.to(dtype)
        return F.cross_entropy(
            logits.to(dtype), targets, weight=weight, label_smoothing=self.label_smoothing
        )

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}, weighted={self.weight is not None}"
