"""``runtime.sync_bn``: BatchNorm statistics of the global batch.

On CUDA this is PyTorch's :class:`torch.nn.SyncBatchNorm`. PyTorch's SyncBatchNorm refuses CPU tensors,
so on the CPU (Gloo) :class:`GlobalBatchNorm2d` computes the same thing by gathering the inputs:
``F.batch_norm`` over the ``[W * b, ...]`` global batch (running statistics from the global batch too),
this rank's rows kept, and the gradient of every row summed back to its owner. The ranks may hold
different numbers of rows (CC-SAM's per-class passes), as with PyTorch's SyncBatchNorm. It costs ``W`` times the
BN activations and exists so that the CPU tests can check the multi-rank step against one process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.distributed.collectives import all_reduce_sum, all_reduce_sum_summed_grad, gather_rows_summed_grad
from ccsam.distributed.env import is_distributed

__all__ = ["GlobalBatchNorm2d", "convert_sync_batchnorm", "global_batch_statistics", "normalises_global_batch"]


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose train-mode statistics are those of the global batch (CPU / Gloo)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Module's argument name
        if not (self.training and is_distributed()):
            return super().forward(input)
        rows = input.shape[0]
        everything, start = gather_rows_summed_grad(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        track = self.track_running_stats  # False inside bn_stats_frozen (SAM's second pass)
        if track and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        out = F.batch_norm(everything, self.running_mean if track else None,
                           self.running_var if track else None, self.weight, self.bias, True, momentum,
                           self.eps)
        return out[start : start + rows]


def _to_global(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats, device=module.weight.device,
                                dtype=module.weight.dtype)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        for p_new, p_old in zip(new.parameters(), module.parameters(), strict=True):
            p_new.requires_grad_(p_old.requires_grad)
        return new
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> :class:`torch.nn.SyncBatchNorm` on CUDA, -> :class:`GlobalBatchNorm2d` on the CPU
    (in place where possible; returns the model)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global(model)


def normalises_global_batch(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer that normalises with the statistics of the global batch here:
    :class:`torch.nn.SyncBatchNorm` or :class:`GlobalBatchNorm2d` under a process group."""
    return is_distributed() and isinstance(module, (nn.SyncBatchNorm, GlobalBatchNorm2d))


def global_batch_statistics(x: Tensor, dims: list[int]) -> tuple[Tensor, Tensor]:
    """Mean and biased variance of ``x`` over ``dims`` and over every rank's rows (two passes: the global
    mean, then the global mean squared deviation from it), differentiable w.r.t. every rank's ``x`` as in
    one process (:func:`all_reduce_sum_summed_grad`). The ranks may hold different numbers of rows, none
    included (then this rank adds nothing)."""
    count = all_reduce_sum(torch.tensor([x.numel() // max(x.shape[1], 1)], dtype=torch.float64, device=x.device))
    n = count.to(x.dtype)[0]
    mean = all_reduce_sum_summed_grad(x.sum(dims)) / n
    shape = [1] * x.dim()
    shape[1] = -1
    var = all_reduce_sum_summed_grad((x - mean.view(shape)).square().sum(dims)) / n
    return mean, var
