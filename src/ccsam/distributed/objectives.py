"""CC-SAM objectives whose class statistics are those of the global batch (all ranks together).

The CC-SAM perturbations are functions of the whole batch: stage 1's per-class head gradients (their
norms, the within-class Gram terms) and stage 2's per-class feature-gradient norms. Each rank gathers
the detached per-sample quantities (features, labels and, under mixup, the partners' labels:
``B * (d + 2)`` numbers),
evaluates the closed form on the global batch with the gradient path through its own rows only
(:func:`ccsam.distributed.collectives.gather_rows`) and keeps its own rows' losses. The perturbation is a
constant of the closed form, so ``o'_i = (W + eps_{y_i}) f_i + b + eps_{y_i,b}`` with ``eps`` from the
global statistics, and the mean over ranks of the local mean losses is the global-batch mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ccsam.data.augment import MixedBatch
from ccsam.distributed.collectives import gather_rows
from ccsam.distributed.env import is_distributed, world_size
from ccsam.distributed.sharding import local_rows
from ccsam.method import adversarial_feature_losses
from ccsam.method.head import class_conditional_logits
from ccsam.models import Classifier
from ccsam.training.objectives import (
    CcsamStage1Objective,
    CcsamStage2Objective,
    Objective,
    StepOutput,
    mixup_loss,
)

__all__ = ["GlobalCcsamStage1", "GlobalCcsamStage2", "distribute_objective"]


@dataclass(frozen=True)
class GlobalCcsamStage1:
    """:class:`~ccsam.training.objectives.CcsamStage1Objective` with global-batch class statistics
    (every ``radius_mode``): ``(1 - beta) * clean + beta * criterion(own rows of the global perturbed
    logits)``."""

    inner: CcsamStage1Objective

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        o = self.inner
        features = model.features(batch.inputs)
        logits = model.head(features)
        clean = mixup_loss(o.criterion, logits, batch)
        if o.flat_ratio == 0.0:
            return StepOutput(clean, logits.detach())
        all_features, labels = gather_rows(features), gather_rows(batch.targets_a)
        soft = None
        if batch.lam < 1.0:  # the global mixup partners' labels, not a [B, C] soft-target matrix
            everything = MixedBatch(batch.inputs, labels, gather_rows(batch.targets_b), batch.lam)
            soft = everything.soft_targets(logits.shape[1])
        rows = local_rows(all_features.shape[0], world=world_size())
        perturbed = class_conditional_logits(
            all_features, model.head.weight, model.head.bias, labels,
            o.class_counts, noise_scale=o.noise_scale, soft_targets=soft, validate=False,
            radius_mode=o.radius_mode, rho=o.rho, generator=o.generator,
        )[rows]
        loss = (1.0 - o.flat_ratio) * clean + o.flat_ratio * o.criterion(perturbed, batch.targets_a)
        return StepOutput(loss, logits.detach())


@dataclass(frozen=True)
class GlobalCcsamStage2:
    """:class:`~ccsam.training.objectives.CcsamStage2Objective` with the per-class feature-gradient
    norms of the global batch: ``alpha * mean(own adversarial losses) + (1 - alpha) * CE(own rows)``."""

    inner: CcsamStage2Objective

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        o = self.inner
        with torch.no_grad():
            features = model.features(batch.inputs)
        logits = model.head(features)
        clean = F.cross_entropy(logits, batch.targets_a)
        all_features = gather_rows(features)
        rows = local_rows(all_features.shape[0], world=world_size())
        adversarial = adversarial_feature_losses(
            all_features, model.head.weight, model.head.bias, gather_rows(batch.targets_a),
            o.class_counts, div=o.div, step=o.step, validate=False,
        )[rows].mean()
        return StepOutput(o.alpha * adversarial + (1.0 - o.alpha) * clean, logits.detach())


def distribute_objective(objective: Objective) -> Objective:
    """The global-batch form of a CC-SAM objective under a process group; any other objective (ERM,
    head re-training) is per-sample and is returned unchanged, as is everything in one process."""
    if not is_distributed():
        return objective
    if isinstance(objective, CcsamStage1Objective):
        return GlobalCcsamStage1(objective)
    if isinstance(objective, CcsamStage2Objective):
        return GlobalCcsamStage2(objective)
    return objective
