"""The updates of the optimiser choices: one SGD pass, or the two passes of SAM / ASAM / ImbSAM.

``model`` is the trained model or, under torchrun, PyTorch's ``DistributedDataParallel`` around it
(:func:`ccsam.distributed.wrap_model`); every objective runs through :func:`ccsam.distributed.run_objective`,
so DDP all-reduces the gradient of each backward that follows a synchronised forward. Which passes
synchronise, and why (each makes the step the one-process step on the global batch):

* SGD: its one backward.
* SAM / ASAM: both. The first because ``eps = rho g / ||g||`` must come from the gradient of the
  global batch (a rank-local ``eps``, the usual ``no_sync`` shortcut, would make the perturbation
  depend on the number of GPUs); the second because it is the update.
* ImbSAM: the tail-class backward at ``w`` (it defines ``eps_tail``) and the backward at ``w + eps``.
  The head-class gradient at ``w`` is only added to the update, so it is taken rank-local with
  ``torch.autograd.grad`` (which fires no DDP hook) and put into ``p.grad`` before the second
  backward, whose all-reduce averages ``head(w) + tail(w + eps)`` in one go.

BatchNorm running statistics are updated by the first pass only (the second pass runs with them
frozen), as in the SAM reference training code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ccsam.data.augment import MixedBatch
from ccsam.distributed import run_objective
from ccsam.models.bn import bn_stats_frozen
from ccsam.optim.base import SharpnessOptimizer
from ccsam.optim.imbsam import ImbSAM
from ccsam.training.objectives import ErmObjective, StepOutput, mixup_loss

Autocast = Callable[[], contextlib.AbstractContextManager[object]]
#: ``update(model, objective, batch, optimizer, autocast)``; ``model`` is a Classifier or DDP around one.
#: The objective and optimiser arguments are ``Any``: the config pairs each update with its optimiser (SGD ->
#: any Optimizer, SAM / ASAM -> a SharpnessOptimizer, ImbSAM -> ImbSAM, which also needs an ErmObjective),
#: a pairing that one callable type cannot state.
Update = Callable[[nn.Module, Any, MixedBatch, Any, Autocast], StepOutput]


class TwoPassOptimizer(SharpnessOptimizer, Protocol):
    """A :class:`SharpnessOptimizer` that is also a torch ``Optimizer`` (SAM, ASAM): it has ``zero_grad``."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...


def sgd_update(model: nn.Module, objective: Callable, batch: MixedBatch, optimizer: Optimizer,
               autocast: Autocast) -> StepOutput:
    """Forward, backward (synchronised under DDP), one optimiser step."""
    with autocast():
        out = run_objective(model, objective, batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def sam_update(model: nn.Module, objective: Callable, batch: MixedBatch, optimizer: TwoPassOptimizer,
               autocast: Autocast) -> StepOutput:
    """SAM / ASAM (Foret et al. 2021; Kwon et al. 2021): gradient at w + eps applied at w, through the
    two-pass protocol (:class:`ccsam.optim.base.SharpnessOptimizer`) alone. Both backwards are
    synchronised under DDP (``eps`` from the global gradient)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        out = run_objective(model, objective, batch)
    out.loss.backward()
    optimizer.first_step(zero_grad=True)
    with bn_stats_frozen(model), autocast():
        second = run_objective(model, objective, batch)
    second.loss.backward()
    optimizer.second_step(zero_grad=True)
    return out


def _logits(model: nn.Module, batch: MixedBatch) -> Tensor:
    return model(batch.inputs)


def imbsam_update(model: nn.Module, objective: ErmObjective, batch: MixedBatch, optimizer: ImbSAM,
                  autocast: Autocast) -> StepOutput:
    """ImbSAM (Zhou et al. 2023): head-class loss gradient at w, tail-class loss gradient at w + eps_tail.

    ``p.grad`` before the base step is ``grad L_head(w) + lambda * grad L_tail(w + eps)`` (``lambda`` =
    ``optimizer.tail_weight``): the head part is added before the second backward (see the module
    docstring), which is the same sum in one process. The parts are those of :func:`mixup_loss` with a row
    mask: count shares of a plain-mean criterion, weight shares ``sum_{i in part} w_{y_i} / sum_i w_{y_i}``
    of a class-weighted one (DRW, LDAM-DRW, weighted CE), so ``L_head + L_tail`` is the criterion's batch loss.
    """
    tail = optimizer.tail_classes.to(batch.targets_a.device)[batch.targets_a]
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = run_objective(model, _logits, batch)
        head_loss = mixup_loss(objective.criterion, logits, batch, ~tail)
        tail_loss = mixup_loss(objective.criterion, logits, batch, tail)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    head_grads = torch.autograd.grad(head_loss, params, retain_graph=True, allow_unused=True)
    tail_loss.backward()
    optimizer.first_step(zero_grad=True)
    with torch.no_grad():
        for p, g in zip(params, head_grads, strict=True):
            p.grad = g
    with bn_stats_frozen(model), autocast():
        perturbed_tail = run_objective(model, objective, batch, mask=tail)
    (optimizer.tail_weight * perturbed_tail.loss).backward()  # x * 1.0 is exact: lambda = 1 is the plain sum
    optimizer.second_step(zero_grad=True)
    return StepOutput((head_loss + tail_loss).detach(), logits.detach())
