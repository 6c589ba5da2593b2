"""LDAM loss with optional deferred re-weighting (Cao et al., NeurIPS 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import (
    ClassCounts,
    as_class_counts,
    check_epoch,
    check_logits_targets,
    check_real,
    subtract_at_targets,
)
from ccsam.losses.weights import _effective_number_weights

__all__ = ["LDAMLoss", "ldam_margins"]


def ldam_margins(class_counts: ClassCounts, max_margin: float = 0.5) -> Tensor:
    """``m_c = C' / n_c^{1/4}`` with ``C'`` such that ``max_c m_c = max_margin`` (at the rarest class).

    Equivalently ``m_c = max_margin * (n_min / n_c)^{1/4}``. Returns float32 ``[C]``.

    Example:
        >>> [round(m, 4) for m in ldam_margins([10000, 10], max_margin=0.5).tolist()]
        [0.0889, 0.5]
    """
    max_margin = check_real("max_margin", max_margin, low=0.0)
    return _ldam_margins(as_class_counts(class_counts), max_margin)


def _ldam_margins(counts: Tensor, max_margin: float) -> Tensor:
    return max_margin * (counts.min() / counts).pow(0.25)


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss: ``L = CE_w(s * (z - m_y e_y), y)`` (Cao et al. 2019).

    ``m`` comes from :func:`ldam_margins`. The logits ``z`` must be *cosines*: build the model head as
    ``CosineHead(d, C, scale=1.0)`` (:mod:`ccsam.models.heads`) and let this loss apply ``scale``; on
    raw linear logits the margin is meaningless. With ``drw_start_epoch`` set, the CE weights ``w`` follow
    :func:`~ccsam.losses.weights.drw_weights` (LDAM-DRW): call :meth:`set_epoch` at the start of every
    epoch (and after resuming); the weights are a pure function of that epoch. The weighted batch mean
    is PyTorch's ``sum_i w_{y_i} l_i / sum_i w_{y_i}``.

    Args:
        class_counts: training-set size per class ``[C]``, kept in a buffer.
        max_margin: margin of the rarest class (0.5 on CIFAR, 0.3 on large-scale sets).
        scale: ``s``, the logit scale applied after the margin (30).
        drw_start_epoch: first 0-based epoch with class-balanced weights; ``None`` = never re-weight.
        beta: effective-number ``beta`` of the DRW weights.

    Example:
        >>> import torch
        >>> loss = LDAMLoss([100, 10], drw_start_epoch=160)
        >>> loss.set_epoch(0)
        >>> loss(torch.zeros(2, 2), torch.tensor([0, 1])).shape
        torch.Size([])
    """

    class_counts: Tensor

    def __init__(
        self,
        class_counts: ClassCounts,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_start_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        self.max_margin = check_real("max_margin", max_margin, low=0.0)
        self.scale = check_real("scale", scale, low=0.0, low_open=True)
        self.beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
        self.drw_start_epoch = (
            None if drw_start_epoch is None else check_epoch("drw_start_epoch", drw_start_epoch)
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the 0-based epoch that selects the DRW weights (no effect without ``drw_start_epoch``)."""
        self.epoch = check_epoch("epoch", epoch)

    def margins(self) -> Tensor:
        """Per-class margins ``m_c`` ``[C]`` on the buffer's device."""
        return _ldam_margins(self.class_counts, self.max_margin)

    def class_weights(self) -> Tensor | None:
        """The CE weights for the current epoch (``drw_weights``), or ``None`` when DRW is off."""
        if self.drw_start_epoch is None:
            return None
        if self.epoch < self.drw_start_epoch:
            return torch.ones_like(self.class_counts)
        return _effective_number_weights(self.class_counts, self.beta)

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean LDAM loss of cosine ``logits [B, C]`` against ``targets [B]``.

        ``class_weight`` comes from a :class:`~ccsam.losses.drw.DeferredReweighting` wrapper (the
        composition form of LDAM-DRW); it cannot be combined with ``drw_start_epoch``.
        """
        dtype = check_logits_targets(logits, targets, self.class_counts.numel())
        adjusted = subtract_at_targets(logits.to(dtype), targets, self.margins())
        weight = self.class_weights()
        if class_weight is not None:
            if weight is not None:
                raise ValueError("LDAMLoss has drw_start_epoch set and is also wrapped in DRW; use one")
            weight = class_weight
        weight = None if weight is None else weight.to(dtype)
        return F.cross_entropy(self.scale * adjusted, targets, weight=weight)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.class_counts.numel()}, max_margin={self.max_margin}, scale={self.scale}, "
            f"drw_start_epoch={self.drw_start_epoch}, beta={self.beta}"
        )
