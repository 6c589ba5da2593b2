"""PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` around the trained model, and the two
small accessors that keep the wrapper from leaking: :func:`run_objective` and :func:`unwrap_model`.

The engine's objectives are functions ``objective(model, batch, ...)`` that call ``model.features``,
``model.head`` or ``torch.func.functional_call`` on the plain model, not ``model(x)``. DDP arms its
gradient all-reduce in its own ``forward`` (the reducer expects one backward after every forward that
ran with gradient synchronisation on), so DDP wraps an :class:`ObjectiveModule` whose ``forward`` is
``objective(model, batch)``: every objective runs inside DDP's forward, sees the unwrapped model, and
the backward of its loss is all-reduced by DDP's bucketed hooks, overlapped with the backward pass.

Choices (see README, "Multiple GPUs and machines"):

* ``device_ids=[this GPU]`` on CUDA (NCCL), ``None`` on the CPU (Gloo).
* no buffer broadcast before every forward (``broadcast_buffers=False``; ``forward_sync_buffers=False``
  from PyTorch 2.14): with ``runtime.sync_bn`` every rank computes the BatchNorm running
  statistics of the global batch, so they agree already and a broadcast before every forward (two to
  ``M + 1`` per step for the SAM family, GP and MP) would cost a collective for nothing. Without it,
  broadcasting would throw away every rank's statistics but rank 0's; the engine instead averages the
  running statistics over the ranks once per epoch (:func:`ccsam.distributed.average_buffers`).
* ``find_unused_parameters=False``: every objective's loss reaches every parameter that requires a
  gradient (a frozen backbone's parameters have ``requires_grad=False`` and DDP leaves them out), so
  the extra graph traversal per step is not needed; a stage that changes which parameters train
  (stage 2) gets a new wrapper.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ccsam.distributed.env import is_distributed

__all__ = ["ObjectiveModule", "is_wrapped", "run_objective", "unwrap_model", "wrap_model"]


#: No buffer broadcast before each forward (the buffers are still synchronised when DDP is built). PyTorch
#: 2.14 renamed ``broadcast_buffers`` to ``forward_sync_buffers``; ``torch>=2.4`` has only the old name.
_NO_FORWARD_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class ObjectiveModule(nn.Module):
    """The module DDP wraps: ``forward(objective, *args)`` returns ``objective(model, *args)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, objective: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``objective`` on the plain model (inside DDP's forward when wrapped)."""
        return objective(self.model, *args, **kwargs)


def wrap_model(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(ObjectiveModule(model))`` inside a process group of several ranks,
    else ``model`` itself. Its parameters are ``model``'s (shared, not copied); the wrapper covers the
    parameters that require a gradient at the time of the call."""
    if not is_distributed():
        return model
    device = next(model.parameters()).device
    device_ids = None
    if device.type == "cuda":  # this rank's GPU (init_process_group set it to cuda:LOCAL_RANK)
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(
        ObjectiveModule(model), device_ids=device_ids, find_unused_parameters=False, **_NO_FORWARD_BUFFER_SYNC
    )


def is_wrapped(model: nn.Module) -> bool:
    """True for a model returned wrapped by :func:`wrap_model`."""
    return isinstance(model, DistributedDataParallel)


def run_objective(model: nn.Module, objective: Any, *args: Any, **kwargs: Any) -> Any:
    """``objective(plain model, *args)``: through DDP's forward (arming the gradient all-reduce of the
    next backward) for a wrapped model, a direct call otherwise."""
    if isinstance(model, DistributedDataParallel):
        return model(objective, *args, **kwargs)
    return objective(model, *args, **kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a :func:`wrap_model` wrapper (``model`` itself when not wrapped); the one
    place that knows DDP's ``.module``."""
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return model.model if isinstance(model, ObjectiveModule) else model
