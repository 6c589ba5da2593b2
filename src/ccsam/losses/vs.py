"""Vector-scaling (VS) loss (Kini, Paraskevas, Oymak, Thrampoulidis, NeurIPS 2021)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import ClassCounts, as_class_counts, check_logits_targets, check_real, log_prior

__all__ = ["VSLoss"]


class VSLoss(nn.Module):
    """``L = mean_i CE(Delta * z_i + iota, y_i)`` with per-class affine logit terms.

    ``Delta_j = (n_j / n_max)^gamma`` (multiplicative, shrinks tail logits during training) and
    ``iota_j = tau log pi_j`` (additive, as in logit adjustment), ``pi_j = n_j / sum_k n_k``.
    ``gamma = 0`` reduces to :class:`~ccsam.losses.logit_adjustment.LogitAdjustedLoss` with the same
    ``tau``; ``gamma = tau = 0`` to plain CE. Predict with the raw logits ``z``.

    Args:
        class_counts: training-set size per class ``[C]``, kept in a buffer.
        gamma: exponent of the multiplicative term, ``>= 0`` (0.3 by default; tuned in ``[0.05, 0.5]``).
        tau: temperature of the additive term, finite (1.0 by default; tuned in ``[0.5, 1.5]``).

    Example:
        >>> import torch
        >>> VSLoss([10, 10])(torch.zeros(3, 2), torch.tensor([0, 1, 0])).shape
        torch.Size([])
    """

    class_counts: Tensor

    def __init__(self, class_counts: ClassCounts, gamma: float = 0.3, tau: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        self.gamma = check_real("gamma", gamma, low=0.0)
        self.tau = check_real("tau", tau)

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean (with ``class_weight``: PyTorch-weighted mean) VS loss of ``logits [B, C]``."""
        dtype = check_logits_targets(logits, targets, self.class_counts.numel())
        counts = self.class_counts
        delta = (counts / counts.max()).pow(self.gamma).to(dtype)
        iota = (self.tau * log_prior(counts)).to(dtype)
        weight = None if class_weight is None else class_weight.to(dtype)
        return F.cross_entropy(logits.to(dtype) * delta + iota, targets, weight=weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.class_counts.numel()}, gamma={self.gamma}, tau={self.tau}"
