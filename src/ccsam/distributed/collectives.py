"""The collectives the engine needs beyond DDP's gradient all-reduce, each a no-op in one process.

* :func:`gather_rows` — the global batch of a per-sample quantity with the gradient path kept through
  this rank's own rows only (the other ranks' rows are detached constants): the CC-SAM class
  statistics of the global batch, differentiated exactly as in one process.
* :func:`gather_rows_summed_grad` — the global batch with the gradient of every row sent back to the
  rank that owns it (summed over ranks): what a BatchNorm over the global batch needs. The ranks may
  hold different numbers of rows (CC-SAM's class passes forward each class's rows of every rank).
* :func:`all_reduce_sum` — the sum over ranks (the per-class gradients of the paper-form CC-SAM scopes).
* :func:`all_reduce_sum_summed_grad` — the sum over ranks with the gradient of every rank's loss sent back
  to each summand: the global BatchNorm statistics that CC-SAM's class passes reuse.
* :func:`average_buffers` — floating buffers (BatchNorm running statistics) averaged over the ranks.
* :func:`all_gather_variable` — concatenate tensors of different lengths (sharded evaluation).

Parameter gradients are not averaged here: that is DDP's all-reduce (:mod:`ccsam.distributed.ddp`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ccsam.distributed.env import is_distributed, rank, world_size

__all__ = [
    "all_gather_variable",
    "all_reduce_mean",
    "all_reduce_sum",
    "all_reduce_sum_summed_grad",
    "average_buffers",
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


def _gather_sizes(rows: int, device: torch.device) -> list[int]:
    n = torch.tensor([rows], device=device)
    sizes = [torch.empty_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    return [int(s) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """Every rank's rows (``sizes[r]`` of them) concatenated in rank order."""
    if len(set(sizes)) == 1:
        return torch.cat(_gather_detached(x))
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


_BACKWARD_GROUPS: dict[int, Any] = {}


def _backward_group() -> Any:
    """A second process group (same ranks) for collectives issued *during* a backward pass: DDP's
    bucket all-reduces run asynchronously on the default group at the same time, and on Gloo two
    concurrent collectives of one group can pair up wrongly across ranks. Created on first use, which
    is in a forward pass, where every rank reaches it in the same order."""
    world = dist.group.WORLD
    key = id(world)
    if key not in _BACKWARD_GROUPS:
        _BACKWARD_GROUPS.clear()
        _BACKWARD_GROUPS[key] = dist.new_group(list(range(world_size())))
    return _BACKWARD_GROUPS[key]


class _GatherSummedGrad(torch.autograd.Function):
    """All-gather whose backward all-reduces (sums) the gradient and returns this rank's rows."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int], start: int) -> Tensor:  # type: ignore[override]
        ctx.start, ctx.rows, ctx.group = start, x.shape[0], _backward_group()
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.start : ctx.start + ctx.rows], None, None


def gather_rows_summed_grad(x: Tensor) -> tuple[Tensor, int]:
    """The global batch ``[sum_r b_r, ...]`` (the ranks' row counts ``b_r`` may differ, 0 included) and
    the first row of this rank's block in it; ``d/dx`` receives the sum over ranks of the gradients of
    their losses w.r.t. this rank's rows (so averaging parameter gradients over ranks stays exact)."""
    if not is_distributed():
        return x, 0
    sizes = _gather_sizes(x.shape[0], x.device)
    start = sum(sizes[: rank()])
    return _GatherSummedGrad.apply(x, sizes, start), start


class _AllReduceSummedGrad(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces (sums) the gradient: every summand receives the sum over
    ranks of the gradients of their losses w.r.t. the total."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.group = _backward_group()
        out = x.detach().clone().contiguous()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone().contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad


def all_reduce_sum_summed_grad(x: Tensor) -> Tensor:
    """``sum_r x_r`` on every rank, differentiable: ``d/dx`` receives the sum over ranks of the gradients of
    their losses w.r.t. the total (so averaging parameter gradients over ranks stays exact). ``x`` itself
    in one process. A collective in the forward and in the backward: every rank calls it and runs the
    backward through it."""
    if not is_distributed():
        return x
    return _AllReduceSummedGrad.apply(x)


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum over ranks of ``x`` (a new tensor, no gradient; ``x`` itself in one process)."""
    if not is_distributed():
        return x
    out = x.detach().clone().contiguous()
    dist.all_reduce(out)
    return out


def all_reduce_min(x: Tensor) -> Tensor:
    """The element-wise minimum over ranks of ``x`` (a new tensor; ``x`` itself in one process)."""
    if not is_distributed():
        return x
    out = x.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean over ranks of ``x`` (a new tensor; ``x`` itself in one process)."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


@torch.no_grad()
def average_buffers(module: nn.Module) -> None:
    """Floating buffers (BatchNorm ``running_mean`` / ``running_var``) <- their mean over the ranks, in
    one flat all-reduce; integer buffers (``num_batches_tracked``, the same on every rank) are left.

    The running mean is an exponential average of batch means, linear in them, so the mean over ranks
    of the per-rank averages is the average of the global-batch means (equal slices); the running
    variance so averaged leaves out the spread of the slice means (the per-GPU BatchNorm difference).
    """
    if not is_distributed():
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.reshape(-1).double() for b in buffers])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for b in buffers:
        b.copy_(flat[offset : offset + b.numel()].view_as(b))
        offset += b.numel()


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
