"""Reference formulas written out independently of ccsam.losses (float64, explicit log-sum-exp)."""

from __future__ import annotations

import torch
from torch import Tensor


def log_softmax64(z: Tensor) -> Tensor:
    z = z.double()
    top = z.max(dim=1, keepdim=True).values
    return z - top - (z - top).exp().sum(dim=1, keepdim=True).log()


def ce64(z: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean (or PyTorch-style weighted mean) of -log softmax(z)_y."""
    nll = -log_softmax64(z)[torch.arange(len(y)), y]
    if weight is None:
        return nll.mean()
    w = weight.double()[y]
    return (w * nll).sum() / w.sum()
