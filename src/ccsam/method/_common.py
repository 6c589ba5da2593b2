"""Input checks and batch statistics shared by the CC-SAM forms (head, scoped, stage 2).

Notation: ``B`` samples, ``C`` classes; ``p_i = softmax(o_i)``, ``q_i`` the (soft) target of sample
``i``, residual ``r_i = (sum_j q_ij) p_i - q_i``; class mask ``M_ij = [y_i == y_j]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_counts", "check_head", "class_mask", "counts_tensor", "no_autocast", "residuals"]


def no_autocast(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Disable autocast so the tiny head math runs in the promoted dtype (softmax, Gram, norms)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def check_head(
    features: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, validate: bool = True
) -> tuple[int, torch.dtype]:
    """Validate the head inputs; return ``C`` and the compute dtype (at least float32).

    Shapes and dtypes are always checked; the label range (a device-to-host read) only if ``validate``.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [B, d], got shape {tuple(features.shape)}")
    if weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"weight must be [C, {features.shape[1]}], got shape {tuple(weight.shape)}")
    num_classes = weight.shape[0]
    if num_classes < 1:
        raise ValueError("weight has no classes (C = 0)")
    if bias is not None and bias.shape != (num_classes,):
        raise ValueError(f"bias must have shape ({num_classes},), got {tuple(bias.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if validate and labels.numel() and (bool(labels.min() < 0) or bool(labels.max() >= num_classes)):
        got = f"[{int(labels.min())}, {int(labels.max())}]"
        raise ValueError(f"labels must lie in [0, {num_classes}), got range {got}")
    for name, t in (("features", features), ("weight", weight), ("bias", bias)):
        if t is not None and not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    dtype = torch.promote_types(features.dtype, weight.dtype)
    if bias is not None:
        dtype = torch.promote_types(dtype, bias.dtype)
    return num_classes, torch.promote_types(dtype, torch.float32)


def counts_tensor(class_counts: Tensor | Sequence[float]) -> Tensor:
    """``class_counts`` as a 1-D real tensor (on its own device)."""
    counts = torch.as_tensor(class_counts)
    if counts.dim() != 1 or counts.dtype == torch.bool or counts.is_complex():
        got = f"{counts.dtype} of shape {tuple(counts.shape)}"
        raise ValueError(f"class_counts must be a 1-D real tensor or sequence, got {got}")
    return counts


def check_counts(
    class_counts: Tensor | Sequence[float],
    num_classes: int,
    device: torch.device,
    dtype: torch.dtype,
    validate: bool = True,
) -> Tensor:
    """Validate ``class_counts`` (shape ``[C]``, finite, ``>= 0``) and move it to ``device``/``dtype``."""
    counts = counts_tensor(class_counts)
    if counts.shape != (num_classes,):
        raise ValueError(f"class_counts must have shape ({num_classes},), got {tuple(counts.shape)}")
    counts = counts.to(device=device, dtype=dtype)
    if validate and not bool((torch.isfinite(counts) & (counts >= 0)).all()):
        raise ValueError("class_counts must be finite and >= 0")
    return counts


def residuals(logits: Tensor, labels: Tensor, soft_targets: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``r_i = d/d o_i [-sum_j q_ij log softmax(o_i)_j] = (sum_j q_ij) p_i - q_i``."""
    probs = torch.softmax(logits, dim=1)
    if soft_targets is None:
        return probs - F.one_hot(labels, logits.shape[1]).to(dtype)
    q = soft_targets.detach().to(device=logits.device, dtype=dtype)
    return probs * q.sum(1, keepdim=True) - q


def class_mask(labels: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Same-class mask ``M_ij = [y_i == y_j]`` (``[B, B]``) and batch class counts ``m_{y_i}`` (``[B]``)."""
    mask = (labels[:, None] == labels[None, :]).to(dtype)
    return mask, mask.sum(1)
