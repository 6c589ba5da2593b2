"""Calibration of softmax confidences: expected calibration error and reliability-diagram bins.

Confidence of a sample is its maximum softmax probability ``conf_i = max_k softmax(z_i)_k`` and it is
correct when ``argmax_k z_ik == y_i``. The unit interval is cut into ``B`` equal-width bins
``(b/B, (b+1)/B]``, the first one closed at 0, and (Guo et al., ICML 2017, eq. 3)

    ECE = sum_b (n_b / N) * |acc_b - conf_b|

with ``acc_b`` and ``conf_b`` the mean correctness and mean confidence of the ``n_b`` samples in bin b.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ccsam.checks import check_int

__all__ = ["expected_calibration_error", "reliability_bins"]


def _check_logits_labels(logits: Tensor, labels: Tensor) -> Tensor:
    """Validate ``[N, C]`` logits against ``[N]`` integer labels in ``[0, C)``; return float logits.

    Half-precision logits (AMP) are upcast to float32 so softmax and sums are not computed in 16 bits.
    """
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor):
        raise ValueError("logits and labels must be torch.Tensor")
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape [N, C] with C >= 1, got {tuple(logits.shape)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels must have shape [{logits.shape[0]}], got {tuple(labels.shape)}")
    if labels.device != logits.device:
        raise ValueError(f"logits ({logits.device}) and labels ({labels.device}) must be on the same device")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        low, high = int(labels.min()), int(labels.max())
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values in [{low}, {high}]")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.detach()


def _bin_sums(logits: Tensor, labels: Tensor, num_bins: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-bin sample counts, confidence sums and correct counts, plus the bin edges ``[B + 1]``."""
    check_int("num_bins", num_bins, low=1)
    logits = _check_logits_labels(logits, labels)
    if logits.shape[0] == 0:
        raise ValueError("calibration needs at least one sample")
    conf, pred = logits.softmax(dim=1).max(dim=1)
    correct = (pred == labels).to(conf.dtype)
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=conf.dtype, device=conf.device)
    # bucketize(right=False) returns b with edges[b] < conf <= edges[b+1] over the inner edges, i.e. the
    # (lo, hi] bins; conf = 0 lands in bin 0 and conf = 1 in bin B-1.
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    # index_add_ rather than bincount(weights=...): the latter raises under deterministic mode on CUDA.
    zeros = torch.zeros(num_bins, dtype=conf.dtype, device=conf.device)
    counts = torch.bincount(idx, minlength=num_bins)
    conf_sum = zeros.clone().index_add_(0, idx, conf)
    correct_sum = zeros.clone().index_add_(0, idx, correct)
    return counts, conf_sum, correct_sum, edges


def expected_calibration_error(logits: Tensor, labels: Tensor, num_bins: int = 15) -> float:
    """Expected calibration error ``sum_b (n_b / N) |acc_b - conf_b|`` over equal-width confidence bins.

    Uses the identity ``(n_b / N) |acc_b - conf_b| = |sum_{i in b} correct_i - sum_{i in b} conf_i| / N``.
    Returned as a fraction in ``[0, 1]``.

    Args:
        logits: ``[N, C]`` unnormalised scores.
        labels: ``[N]`` integer class indices.
        num_bins: number of equal-width bins over ``[0, 1]`` (15 as in Guo et al. 2017).

    Example:
        >>> logits = torch.log(torch.tensor([[0.75, 0.25]] * 4))
        >>> round(expected_calibration_error(logits, torch.tensor([0, 0, 0, 1])), 6)  # acc == conf
        0.0
    """
    counts, conf_sum, correct_sum, _ = _bin_sums(logits, labels, num_bins)
    return float((correct_sum - conf_sum).abs().sum() / counts.sum())


def reliability_bins(logits: Tensor, labels: Tensor, num_bins: int = 15) -> dict:
    """Per-bin statistics for a reliability diagram, as plain Python values (JSON-ready).

    Returns:
        ``{"edges": [B + 1 floats], "count": [B ints], "confidence": [mean conf_i in bin or None],
        "accuracy": [mean correct_i in bin or None], "num_samples": N}``; empty bins give ``None``.
    """
    counts, conf_sum, correct_sum, edges = _bin_sums(logits, labels, num_bins)
    n = counts.tolist()
    conf_l, correct_l = conf_sum.tolist(), correct_sum.tolist()
    return {
        "edges": edges.tolist(),
        "count": n,
        "confidence": [c / k if k else None for c, k in zip(conf_l, n, strict=False)],
        "accuracy": [a / k if k else None for a, k in zip(correct_l, n, strict=False)],
        "num_samples": int(sum(n)),
    }
