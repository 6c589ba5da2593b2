"""Per-method training objectives: ``objective(model, batch) -> StepOutput``.

The training loop is the same for every method; what differs is the loss computed from a batch, and
that lives here. The CC-SAM math itself is in :mod:`ccsam.functional` (pure tensor functions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ccsam.data.augment import MixedBatch
from ccsam.functional import adversarial_feature_losses, class_conditional_logits
from ccsam.models import Classifier


@dataclass(frozen=True)
class StepOutput:
    """The loss to back-propagate and the clean logits (for running accuracy)."""

    loss: torch.Tensor
    logits: torch.Tensor


def mixup_cross_entropy(logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
    """mean_i [lam CE(o_i, y_a,i) + (1 - lam) CE(o_i, y_b,i)]; plain CE when lam = 1."""
    loss = F.cross_entropy(logits, batch.targets_a)
    if batch.lam < 1.0:
        loss = batch.lam * loss + (1.0 - batch.lam) * F.cross_entropy(logits, batch.targets_b)
    return loss


@dataclass(frozen=True)
class ErmObjective:
    """Empirical risk minimisation: (mixup-aware) cross-entropy on the clean logits."""

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        logits = model(batch.inputs)
        return StepOutput(mixup_cross_entropy(logits, batch), logits.detach())


@dataclass(frozen=True)
class CcsamStage1Objective:
    """CC-SAM stage 1 (released-code semantics, spec 1.3):

    L = (1 - beta) * clean mixup CE + beta * mean_i CE(h_{theta + eps_{y_a,i}}(z_i), y_a,i),
    with eps_c the class-conditional perturbation of the linear head computed in closed form by
    :func:`ccsam.functional.class_conditional_logits` (one backbone pass; no per-class loop).
    """

    class_counts: torch.Tensor
    flat_ratio: float
    noise_scale: float

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        features = model.features(batch.inputs)
        logits = model.head(features)
        clean = mixup_cross_entropy(logits, batch)
        if self.flat_ratio == 0.0:
            return StepOutput(clean, logits.detach())
        soft = batch.soft_targets(logits.shape[1]) if batch.lam < 1.0 else None
        perturbed = class_conditional_logits(
            features,
            model.head.weight,
            model.head.bias,
            batch.targets_a,
            self.class_counts,
            noise_scale=self.noise_scale,
            soft_targets=soft,
            validate=False,
        )
        flat = F.cross_entropy(perturbed, batch.targets_a)
        loss = (1.0 - self.flat_ratio) * clean + self.flat_ratio * flat
        return StepOutput(loss, logits.detach())


@dataclass(frozen=True)
class CcsamStage2Objective:
    """CC-SAM stage 2 (spec 2.2): L = alpha * mean_i a_i + (1 - alpha) * mean_i CE(h(z_i), y_i).

    a_i is the class-weighted loss on adversarially displaced features
    (:func:`ccsam.functional.adversarial_feature_losses`); the backbone is frozen, so features are
    computed without a graph (BatchNorm statistics still update when the backbone is in train mode).
    """

    class_counts: torch.Tensor
    alpha: float
    div: float
    step: float

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        with torch.no_grad():
            features = model.features(batch.inputs)
        logits = model.head(features)
        clean = F.cross_entropy(logits, batch.targets_a)
        adversarial = adversarial_feature_losses(
            features,
            model.head.weight,
            model.head.bias,
            batch.targets_a,
            self.class_counts,
            div=self.div,
            step=self.step,
            validate=False,
        ).mean()
        loss = self.alpha * adversarial + (1.0 - self.alpha) * clean
        return StepOutput(loss, logits.detach())
