"""The updates of the optimiser choices: one SGD pass, or the two passes of SAM / ASAM / ImbSAM.

BatchNorm running statistics are updated by the first pass only (the second pass runs with them
frozen), as in the SAM reference training code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from torch.optim import Optimizer

from ccsam.data.augment import MixedBatch
from ccsam.models import Classifier
from ccsam.models.bn import bn_stats_frozen
from ccsam.optim.base import SharpnessOptimizer
from ccsam.optim.imbsam import ImbSAM
from ccsam.optim.sam import maybe_no_sync
from ccsam.training.objectives import ErmObjective, StepOutput, mixup_loss

Autocast = Callable[[], contextlib.AbstractContextManager[object]]
#: The objective and optimiser arguments are ``Any``: the config pairs each update with its optimiser (SGD ->
#: any Optimizer, SAM / ASAM -> a SharpnessOptimizer, ImbSAM -> ImbSAM, which also needs an ErmObjective),
#: a pairing that one callable type cannot state.
Update = Callable[[Classifier, Any, MixedBatch, Any, Autocast], StepOutput]


class TwoPassOptimizer(SharpnessOptimizer, Protocol):
    """A :class:`SharpnessOptimizer` that is also a torch ``Optimizer`` (SAM, ASAM): it has ``zero_grad``."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...


def sgd_update(model: Classifier, objective: Callable, batch: MixedBatch, optimizer: Optimizer,
               autocast: Autocast) -> StepOutput:
    """Forward, backward, one optimiser step."""
    with autocast():
        out = objective(model, batch)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    return out


def sam_update(model: Classifier, objective: Callable, batch: MixedBatch, optimizer: TwoPassOptimizer,
               autocast: Autocast) -> StepOutput:
    """SAM / ASAM (Foret et al. 2021; Kwon et al. 2021): gradient at w + eps applied at w, through the
    two-pass protocol (:class:`ccsam.optim.base.SharpnessOptimizer`) alone."""
    optimizer.zero_grad(set_to_none=True)
    with maybe_no_sync(model), autocast():
        out = objective(model, batch)
    with maybe_no_sync(model):
        out.loss.backward()
    optimizer.first_step(zero_grad=True)
    with bn_stats_frozen(model), autocast():
        second = objective(model, batch)
    second.loss.backward()
    optimizer.second_step(zero_grad=True)
    return out


def imbsam_update(model: Classifier, objective: ErmObjective, batch: MixedBatch, optimizer: ImbSAM,
                  autocast: Autocast) -> StepOutput:
    """ImbSAM (Zhou et al. 2023): head-class loss gradient at w, tail-class loss gradient at w + eps_tail."""
    tail = optimizer.tail_classes.to(batch.targets_a.device)[batch.targets_a]
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        logits = model(batch.inputs)
        head_loss = mixup_loss(objective.criterion, logits, batch, ~tail)
        tail_loss = mixup_loss(objective.criterion, logits, batch, tail)
    head_loss.backward(retain_graph=True)
    optimizer.store_head_grad()
    tail_loss.backward()
    optimizer.first_step(zero_grad=True)
    with bn_stats_frozen(model), autocast():
        perturbed_tail = objective(model, batch, mask=tail)
    perturbed_tail.loss.backward()
    optimizer.second_step(zero_grad=True)
    return StepOutput((head_loss + tail_loss).detach(), logits.detach())
