"""BatchNorm running statistics updated once per two-pass (SAM-family) step.

A SAM step runs two forward passes in train mode; without care every BatchNorm layer folds both
batches into ``running_mean`` / ``running_var`` (the second at the perturbed weights ``w + eps``) and
counts ``num_batches_tracked`` twice. Here the second pass is run with ``track_running_stats = False``:
in train mode BatchNorm then normalises with the batch statistics exactly as before but neither reads
nor writes its buffers, so the step leaves them as one forward pass at ``w`` would. (Setting
``momentum = 0`` instead, as davda54/sam does, still increments ``num_batches_tracked``, breaks
``momentum=None`` (cumulative averaging), and turns a NaN batch statistic into NaN buffers via ``0 * NaN``.)

Covers every ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d, SyncBatchNorm, lazy ones);
not InstanceNorm, whose functional form updates tracked buffers regardless.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ccsam.distributed.sync_bn import global_batch_statistics, normalises_global_batch

__all__ = [
    "BatchStatistics", "bn_stats_frozen", "disable_running_stats", "enable_running_stats", "eval_mode",
    "normalised_with", "recorded_batch_statistics",
]

#: Per train-mode BatchNorm layer: the mean and biased variance of its input over every dimension but
#: the channels (what the layer normalised one batch with), as tensors of that batch's graph.
BatchStatistics = dict[_BatchNorm, tuple[Tensor, Tensor]]

# Each layer's own flag before disable_running_stats, restored by enable_running_stats. Weak keys:
# no attribute is added to the user's modules and no module is kept alive by this table.
_saved_flags: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _batch_norms(model: nn.Module) -> Iterator[_BatchNorm]:
    return (m for m in model.modules() if isinstance(m, _BatchNorm))


def disable_running_stats(model: nn.Module) -> None:
    """Stop every BatchNorm layer of ``model`` from updating its running statistics.

    Train-mode outputs are unchanged (batch statistics); eval-mode layers keep using their buffers.
    Idempotent: a second call does not overwrite the saved flags.

    Example::

        disable_running_stats(model)
        loss_fn(model(x), y).backward()  # the perturbed pass of a SAM step
        enable_running_stats(model)
    """
    for m in _batch_norms(model):
        if m not in _saved_flags:
            _saved_flags[m] = m.track_running_stats
        m.track_running_stats = False


def enable_running_stats(model: nn.Module) -> None:
    """Undo :func:`disable_running_stats`: each layer gets back its own ``track_running_stats``."""
    for m in _batch_norms(model):
        if m in _saved_flags:
            m.track_running_stats = _saved_flags.pop(m)


@contextlib.contextmanager
def bn_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which BatchNorm running statistics of ``model`` are not updated (restored on exit).

    Use it around the second (perturbed) forward pass of a SAM-family step.

    Example::

        with bn_stats_frozen(model):
            loss_fn(model(x), y).backward()
    """
    disable_running_stats(model)
    try:
        yield model
    finally:
        enable_running_stats(model)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode (BatchNorm uses its running statistics); restore each module's own
    flag after, also on an exception (``model.train(flag)`` would overwrite mixed flags, e.g. a frozen
    backbone kept in eval mode under a head in train mode)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def _normalising_with_batch_statistics(module: _BatchNorm) -> bool:
    """Whether ``module`` normalises with its input's statistics (as PyTorch decides: train mode, or no
    running statistics to use)."""
    return module.training or (module.running_mean is None and module.running_var is None)


@contextlib.contextmanager
def _forwards_replaced(replacements: dict[_BatchNorm, Callable[[Tensor], Tensor]]) -> Iterator[None]:
    """Each layer's ``forward`` replaced on the instance (which ``torch.compile`` guards, unlike hooks
    added after compiling), and restored on exit: a layer's own instance-level forward, if it had one."""
    own = {module: vars(module).get("forward") for module in replacements}
    for module, forward in replacements.items():
        module.forward = forward  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for module, previous in own.items():
            if previous is None:
                del module.forward  # the class's forward again
            else:
                module.forward = previous  # type: ignore[method-assign]


@contextlib.contextmanager
def recorded_batch_statistics(model: nn.Module) -> Iterator[BatchStatistics]:
    """Context that records, for every BatchNorm layer of ``model`` that normalises with batch statistics
    (train mode, or no running statistics), the statistics of its input inside it: ``mean_c = E[x_c]`` and
    ``var_c = E[(x_c - mean_c)^2]`` over the batch and spatial dimensions, in float32 at least. They stay in the
    batch's autograd graph, as the layer's own statistics do: a loss of rows normalised with them has the
    gradient those rows have in the batch. A layer that normalises over the processes (SyncBatchNorm under
    torchrun) records the global batch's, differentiable through every process's rows. A layer that runs
    twice inside the context is an error (one set of statistics per layer)."""
    stats: BatchStatistics = {}

    def recording(module: _BatchNorm) -> Callable[[Tensor], Tensor]:
        original = module.forward

        def forward(input: Tensor) -> Tensor:
            if module in stats:
                raise RuntimeError(f"{module.__class__.__name__} layer ran twice in one forward; its batch "
                                   "statistics are recorded once (use class_pass_bn=class_rows with this model)")
            x = input.to(torch.promote_types(input.dtype, torch.float32))
            dims = [d for d in range(x.dim()) if d != 1]
            if normalises_global_batch(module):  # SyncBatchNorm under torchrun: the global batch's, as it uses
                stats[module] = global_batch_statistics(x, dims)
            else:
                stats[module] = (x.mean(dims), x.var(dims, unbiased=False))
            return original(input)

        return forward

    layers = [m for m in _batch_norms(model) if _normalising_with_batch_statistics(m)]
    with _forwards_replaced({m: recording(m) for m in layers}):
        yield stats


@contextlib.contextmanager
def normalised_with(stats: BatchStatistics) -> Iterator[None]:
    """Context in which each BatchNorm layer of ``stats`` computes ``(x - mean) / sqrt(var + eps) * weight
    + bias`` with the given statistics instead of its input's (in float32 at least, differentiably in both, unlike
    ``F.batch_norm``, whose running statistics take no gradient; the output in the input's dtype) and
    updates no running statistics; its ``weight`` / ``bias`` are read at call time (e.g. perturbed ones
    under ``torch.func.functional_call``). The layer runs no collective: statistics recorded from a
    SyncBatchNorm under torchrun are already the global batch's."""

    def fixed(module: _BatchNorm, mean: Tensor, var: Tensor) -> Callable[[Tensor], Tensor]:
        def forward(input: Tensor) -> Tensor:
            shape = (1, -1) + (1,) * (input.dim() - 2)
            dtype = torch.promote_types(input.dtype, torch.float32)
            y = (input.to(dtype) - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
            if module.weight is not None:
                y = y * module.weight.to(dtype).view(shape) + module.bias.to(dtype).view(shape)
            return y.to(input.dtype)

        return forward

    with _forwards_replaced({m: fixed(m, mean, var) for m, (mean, var) in stats.items()}):
        yield
