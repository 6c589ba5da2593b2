"""Input checks and small tensor helpers shared by the loss modules (private)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ccsam.checks import check_int, check_number

ClassCounts = Tensor | Sequence[float]
"""Training-set size of every class, shape ``[C]`` (a tensor or any sequence of numbers)."""


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float inside the given bounds, else raise a one-line ValueError."""
    v = check_number(name, value)
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if below or above:
        left = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        right = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {left}, {right}, got {value!r}")
    return v


def check_epoch(name: str, value: object) -> int:
    """Return ``value`` if it is an int ``>= 0`` (an epoch counter), else raise a one-line ValueError."""
    return check_int(name, value, low=0)


def as_class_counts(class_counts: ClassCounts, name: str = "class_counts") -> Tensor:
    """``class_counts`` as a 1-D float32 tensor of positive finite values (kept on its device).

    float32 holds integer counts exactly up to 2**24 per class, far beyond any LT benchmark.
    """
    counts = _as_vector(class_counts, name)
    if not bool((torch.isfinite(counts) & (counts > 0)).all()):
        raise ValueError(f"{name} must be finite and > 0 for every class")
    return counts


def as_class_vector(values: ClassCounts, name: str) -> Tensor:
    """A per-class vector (e.g. class weights) as a 1-D float32 tensor of finite values ``>= 0``."""
    vec = _as_vector(values, name)
    if not bool((torch.isfinite(vec) & (vec >= 0)).all()):
        raise ValueError(f"{name} must be finite and >= 0 for every class")
    return vec


def _as_vector(values: ClassCounts, name: str) -> Tensor:
    try:
        vec = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a 1-D tensor or sequence of numbers ({err})") from None
    if vec.dim() != 1 or vec.numel() == 0 or vec.dtype == torch.bool or vec.is_complex():
        raise ValueError(f"{name} must be a non-empty 1-D real tensor, got {vec.dtype} {tuple(vec.shape)}")
    return vec.detach().to(torch.float32)


def _describe(x: object) -> str:
    return f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def check_logits_targets(logits: Tensor, targets: Tensor, num_classes: int | None = None) -> torch.dtype:
    """Check shapes and dtypes; return the compute dtype ``promote_types(logits.dtype, float32)``.

    Target *values* are not range-checked here (that would force a host-device sync every step);
    out-of-range labels fail inside ``gather`` / ``cross_entropy``.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating [B, C] tensor, got {_describe(logits)}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"logits have {logits.shape[1]} classes but the loss was built for {num_classes}")
    if not isinstance(targets, Tensor) or targets.dtype != torch.long or targets.shape != logits.shape[:1]:
        expected = f"int64 tensor of shape ({logits.shape[0]},)"
        raise ValueError(f"targets must be an {expected}, got {_describe(targets)}")
    return torch.promote_types(logits.dtype, torch.float32)


def class_weighted_mean(per_sample: Tensor, targets: Tensor, class_weight: Tensor | None) -> Tensor:
    """``mean_i l_i``, or with class weights PyTorch's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``
    (the reduction of ``F.cross_entropy(weight=w)``, used by deferred re-weighting)."""
    if class_weight is None:
        return per_sample.mean()
    w = class_weight.to(per_sample.dtype)[targets]
    return (w * per_sample).sum() / w.sum()


def subtract_at_targets(logits: Tensor, targets: Tensor, per_class: Tensor) -> Tensor:
    """``z - per_class[y_i] e_{y_i}`` row-wise: lower only the true-class logit (out of place)."""
    shift = per_class.to(logits.dtype)[targets].unsqueeze(1)
    return logits.scatter_add(1, targets.unsqueeze(1), -shift)


def log_prior(class_counts: Tensor) -> Tensor:
    """``log pi_c = log n_c - log sum_j n_j`` (the empirical class prior, in log space)."""
    return torch.log(class_counts) - torch.log(class_counts.sum())
