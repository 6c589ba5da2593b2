"""Gradient averaging at every optimiser step: the global-batch gradient, in one process's order.

Each rank's loss is the mean over its ``B / W`` rows, so the mean over ranks of the gradients is the
gradient of the global-batch mean. :func:`average_gradients_before_steps` all-reduces ``p.grad`` right
before every call that reads it — ``step`` (SGD), ``first_step`` / ``second_step`` (SAM / ASAM:
the perturbation is computed from the globally averaged gradient, the step from the averaged gradient at
``w + eps``) and ``store_head_grad`` (ImbSAM's head-class gradient at ``w``) — so each of them sees
exactly what it sees in one process. The engine's model is not wrapped in ``DistributedDataParallel``:
its objectives call ``model.features`` and ``model.head`` separately and SAM's first pass must not be
synchronised by DDP anyway, so the explicit all-reduce is simpler and exact (it does not overlap with
the backward pass as DDP's bucketed hooks do; see benchmarks/results/distributed.md).
"""

from __future__ import annotations

import functools
from typing import Any

from torch.optim import Optimizer

from ccsam.distributed.collectives import average_gradients
from ccsam.distributed.env import is_distributed

__all__ = ["average_gradients_before_steps"]

#: The methods that read ``p.grad``: of a SAM-family optimiser (its ``step(closure)`` goes through
#: ``first_step`` / ``second_step``), else of a plain one.
_SHARPNESS_METHODS = ("first_step", "second_step", "store_head_grad")


def average_gradients_before_steps(optimizer: Optimizer) -> Optimizer:
    """Make ``optimizer``'s gradient-reading methods average ``p.grad`` over the ranks first (in place;
    nothing changes in one process). Returns ``optimizer``."""
    if not is_distributed() or getattr(optimizer, "_ccsam_averaging", False):
        return optimizer
    params = [p for group in optimizer.param_groups for p in group["params"]]
    names = _SHARPNESS_METHODS if hasattr(optimizer, "first_step") else ("step",)
    for name in names:
        method = getattr(optimizer, name, None)
        if method is not None:
            setattr(optimizer, name, _averaging(method, params))
    optimizer._ccsam_averaging = True  # type: ignore[attr-defined]
    return optimizer


def _averaging(method: Any, params: list) -> Any:
    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        average_gradients(params)
        return method(*args, **kwargs)

    return wrapped
