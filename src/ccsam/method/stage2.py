"""CC-SAM stage 2 of the released code: class-weighted losses at adversarially displaced features
(ccsam-spec §2.2), in closed form over the batch (no loop over classes; the features are never mutated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ccsam.method._common import check_counts, check_head, class_mask, counts_tensor, no_autocast, residuals
from ccsam.method.radius import GRAD_NORM_FLOOR

__all__ = ["adversarial_class_weights", "adversarial_feature_losses"]


def adversarial_class_weights(class_counts: Tensor | Sequence[float], div: float = 2.0) -> Tensor:
    """Stage-2 class weights of the released code (ccsam-spec §2.2 step 3).

    ``w_c = ln(n_max / n_c + 0.01) / div`` with ``n_max = max_c n_c``: about ``0.005`` for the head
    class and ``ln(IR + 0.01) / div`` for the rarest class. The weight sets both the feature step length
    and the weight of the adversarial loss of class ``c``.

    Args:
        class_counts: training count per class, shape ``[C]``, all ``> 0``.
        div: divisor, ``> 0`` (the code's ``div = 2``).

    Returns:
        ``[C]`` weights in ``promote_types(counts.dtype, float32)`` on the device of ``class_counts``.

    Example:
        >>> adversarial_class_weights([5000, 50])  # [ln(1.01) / 2, ln(100.01) / 2]
        tensor([0.0050, 2.3026])
    """
    if not div > 0:
        raise ValueError(f"div must be > 0, got {div}")
    counts = counts_tensor(class_counts)
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if not bool((counts > 0).all()):
        raise ValueError("class_counts must all be > 0 for the adversarial class weights")
    return _class_weights(counts, div)


def _class_weights(counts: Tensor, div: float) -> Tensor:
    """``ln(n_max / n_c + 0.01) / div`` without input checks (no host synchronisation)."""
    counts = counts.to(torch.promote_types(counts.dtype, torch.float32))
    return torch.log(counts.max() / counts + 0.01) / div


def adversarial_feature_losses(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    class_counts: Tensor | Sequence[float],
    *,
    div: float = 2.0,
    step: float = 1.0,
    validate: bool = True,
) -> Tensor:
    """Per-sample stage-2 adversarial-feature losses of the released code (ccsam-spec §2.2 step 4).

    For each class ``c`` in the batch, ``G_c`` is the gradient w.r.t. the whole ``[B, d]`` feature
    matrix of the mean clean cross-entropy of the class-``c`` samples; its class-``c`` rows are
    ``(1/m_c) W^T r_i`` (``r_i = p_i - e_{y_i}``) and ``||G_c||_F = (1/m_c) sqrt(sum_{i in c}
    ||W^T r_i||^2)`` (floored at 1e-12). With ``w_c`` from :func:`adversarial_class_weights`,
    ``z_adv_i = z_i + step * w_c * (G_c)_i / ||G_c||_F`` (a constant displacement) and the output is
    ``a_i = w_{y_i} * CE(W z_adv_i + b, y_i)``. Gradients reach ``features``, ``W`` and ``b`` through
    ``W z_adv + b``. ``L_A`` of the code is ``a.mean()``.

    Args:
        features: ``[B, d]`` features ``z``.
        weight: ``[C, d]`` classifier weight ``W``.
        bias: ``[C]`` classifier bias or ``None``.
        labels: ``[B]`` integer labels.
        class_counts: ``[C]`` training counts, all ``> 0``.
        div: divisor of the class weights (the code's ``div = 2``).
        step: step multiplier ``>= 0`` (the code's ``adver_reg = 1``).
        validate: check label range and counts > 0 (a host read); ``False`` skips it.

    Returns:
        ``[B]`` losses in ``promote_types(input dtype, float32)``; autocast is disabled inside.

    Example:
        >>> z, W = torch.randn(6, 4), torch.randn(3, 4)
        >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> adversarial_feature_losses(z, W, None, y, [500, 50, 5]).shape
        torch.Size([6])
    """
    num_classes, dtype = check_head(features, weight, bias, labels, validate)
    if not 0 <= step < math.inf:
        raise ValueError(f"step must be finite and >= 0, got {step}")
    counts = check_counts(class_counts, num_classes, features.device, dtype, validate)
    # in the compute dtype, even for integer counts
    class_w = adversarial_class_weights(counts, div) if validate else _class_weights(counts, div)
    labels = labels.to(device=features.device, dtype=torch.long)

    with no_autocast(features.device.type):
        z, w = features.to(dtype), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        with torch.no_grad():
            b_d = None if b is None else b.detach()
            residual = residuals(F.linear(z.detach(), w.detach(), b_d), labels, None, dtype)
            row_grad = residual @ w.detach()  # W^T r_i, i.e. m_c times row i of G_c
            mask, m = class_mask(labels, dtype)
            g_norm = ((mask @ row_grad.square().sum(1)).sqrt() / m).clamp_min(GRAD_NORM_FLOOR)
            w_i = class_w[labels]
            displacement = (step * w_i / (m * g_norm))[:, None] * row_grad
        adv_logits = F.linear(z + displacement, w, b)
        return w_i * F.cross_entropy(adv_logits, labels, reduction="none")
