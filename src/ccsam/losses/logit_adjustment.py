"""Prior-corrected softmax: Balanced Softmax and logit adjustment (training loss and post-hoc).

* Balanced Softmax: Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020.
* Logit adjustment: Menon et al., "Long-tail learning via logit adjustment", ICLR 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.losses._common import ClassCounts, as_class_counts, check_logits_targets, check_real, log_prior

__all__ = ["BalancedSoftmaxLoss", "LogitAdjustedLoss", "posthoc_logit_adjustment"]


class LogitAdjustedLoss(nn.Module):
    """``L = mean_i CE(z_i + tau log pi, y_i)`` with the empirical prior ``pi_c = n_c / sum_j n_j``.

    Train with this loss, predict with the raw logits ``z`` (Menon et al. 2021). ``tau = 0`` is plain CE.

    Args:
        class_counts: training-set size per class ``[C]``, kept in a buffer.
        tau: temperature of the prior, finite (1.0 by default; tuned in ``[0.5, 2]``).

    Example:
        >>> import torch
        >>> LogitAdjustedLoss([1, 1], tau=1.0)(torch.zeros(1, 2), torch.tensor([0])).item()
        0.6931471824645996
    """

    class_counts: Tensor

    def __init__(self, class_counts: ClassCounts, tau: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("class_counts", as_class_counts(class_counts))
        self.tau = check_real("tau", tau)

    def forward(self, logits: Tensor, targets: Tensor, class_weight: Tensor | None = None) -> Tensor:
        """Mean (with ``class_weight``: PyTorch-weighted mean) logit-adjusted CE of ``logits [B, C]``."""
        dtype = check_logits_targets(logits, targets, self.class_counts.numel())
        shift = self.tau * log_prior(self.class_counts).to(dtype)
        weight = None if class_weight is None else class_weight.to(dtype)
        return F.cross_entropy(logits.to(dtype) + shift, targets, weight=weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.class_counts.numel()}, tau={self.tau}"


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """``L = mean_i CE(z_i + log n, y_i)`` (Ren et al. 2020).

    Since ``log pi_c = log n_c - log N`` differs from ``log n_c`` by a constant that softmax ignores, this
    is exactly :class:`LogitAdjustedLoss` with ``tau = 1``.

    Args:
        class_counts: training-set size per class ``[C]``, kept in a buffer.
    """

    def __init__(self, class_counts: ClassCounts) -> None:
        super().__init__(class_counts, tau=1.0)

    def extra_repr(self) -> str:
        return f"num_classes={self.class_counts.numel()}"


def posthoc_logit_adjustment(logits: Tensor, class_counts: ClassCounts, tau: float = 1.0) -> Tensor:
    """Post-hoc logit adjustment for prediction: ``z - tau log pi`` (Menon et al. 2021, eq. 9).

    Apply to the logits of a model trained with plain CE; ``argmax`` of the result is the balanced
    prediction. Returns a new tensor in ``promote_types(logits.dtype, float32)``.

    Example:
        >>> import torch
        >>> posthoc_logit_adjustment(torch.tensor([[1.0, 0.0]]), [90, 10]).argmax(1).item()
        1
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError("logits must be a floating [N, C] tensor")
    tau = check_real("tau", tau)
    counts = as_class_counts(class_counts).to(logits.device)
    if counts.numel() != logits.shape[1]:
        raise ValueError(f"class_counts has {counts.numel()} classes, logits have {logits.shape[1]}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype) - tau * log_prior(counts).to(dtype)
