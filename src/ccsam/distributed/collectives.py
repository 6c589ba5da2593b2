"""The collectives the engine needs beyond DDP's gradient all-reduce, each a no-op in one process.

* :func:`gather_rows` — the global batch of a per-sample quantity with the gradient path kept through
  this rank's own rows only (the other ranks' rows are detached constants): the CC-SAM class
  statistics of the global batch, differentiated exactly as in one process.
* :func:`gather_rows_summed_grad` — the global batch with the gradient of every row sent back to the
  rank that owns it (summed over ranks): what a BatchNorm over the global batch needs.
* :func:`average_gradients` — ``p.grad <- mean over ranks`` in one flat all-reduce.
* :func:`all_gather_variable` — concatenate tensors of different lengths (sharded evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ccsam.distributed.env import is_distributed, rank, world_size

__all__ = [
    "all_gather_variable",
    "all_reduce_mean",
    "average_gradients",
    "broadcast_module",
    "gather_rows",
    "gather_rows_summed_grad",
]


def _gather_detached(x: Tensor) -> list[Tensor]:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return parts


def gather_rows(x: Tensor) -> Tensor:
    """``[W * b, ...]``: every rank's ``[b, ...]`` rows in rank order; this rank's block is ``x`` itself
    (gradient flows into it), the others are constants. ``x`` unchanged in one process."""
    if not is_distributed():
        return x
    parts = _gather_detached(x)
    parts[rank()] = x
    return torch.cat(parts)


class _GatherSummedGrad(torch.autograd.Function):
    """All-gather whose backward all-reduces (sums) the gradient and returns this rank's block."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rows = x.shape[0]
        return torch.cat(_gather_detached(x))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_rows_summed_grad(x: Tensor) -> Tensor:
    """The global batch ``[W * b, ...]``; ``d/dx`` receives the sum over ranks of the gradients of their
    losses w.r.t. this rank's rows (so averaging parameter gradients over ranks stays exact)."""
    return _GatherSummedGrad.apply(x) if is_distributed() else x


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean over ranks of ``x`` (a new tensor; ``x`` itself in one process)."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


@torch.no_grad()
def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """``p.grad <- (1/W) sum_r p.grad_r`` for every parameter with a gradient, in one flat all-reduce.

    Parameters without a gradient on this rank must have none on every rank (the same model and the
    same code path run everywhere), so the flat buffers line up.
    """
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not is_distributed():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def all_gather_variable(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` (``[n_r, ...]``, ``n_r`` may differ) in rank order."""
    if not is_distributed():
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.empty_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)])
