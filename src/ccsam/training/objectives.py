"""Per-method training objectives: ``objective(model, batch) -> StepOutput``.

The training loop is the same for every method; what differs is the loss computed from a batch, and
that lives here. Every objective applies a configurable criterion (``ccsam.losses``: CE, focal, LDAM,
Balanced Softmax, ...) to logits; the CC-SAM math itself is in :mod:`ccsam.method`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ccsam.data.augment import MixedBatch
from ccsam.losses import GlobalBatchWeightedMean, effective_class_weights
from ccsam.method import (
    ClassPassBn,
    PerturbScope,
    RadiusMode,
    adversarial_feature_losses,
    class_conditional_loss,
    select_parameters,
    stage1_loss,
)
from ccsam.models import Classifier
from ccsam.models.bn import bn_stats_frozen


@dataclass(frozen=True)
class StepOutput:
    """The loss to back-propagate and the clean logits (for running accuracy)."""

    loss: torch.Tensor
    logits: torch.Tensor


#: ``objective(model, batch) -> StepOutput``: the loss of one batch (one per method, below).
Objective = Callable[[Classifier, MixedBatch], StepOutput]


def _cross_entropy() -> nn.Module:
    return nn.CrossEntropyLoss()


def mixup_loss(criterion: nn.Module, logits: torch.Tensor, batch: MixedBatch,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """lam * criterion(o, y_a) + (1 - lam) * criterion(o, y_b); the criterion alone when lam = 1.

    With a boolean row ``mask`` this is the part of that batch loss owed to the masked rows, so that
    ``mixup_loss(m) + mixup_loss(~m) == mixup_loss(None)`` in value and gradient (ImbSAM's head / tail
    split). Each criterion term ``criterion(o[m], y[m])`` is scaled by the masked rows' share of the
    batch mean's denominator:

    * plain mean (``effective_class_weights(criterion) is None``): the count share ``|m| / B``;
    * class-weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (DRW, LDAM-DRW, weighted CE): the weight
      share ``sum_{i in m} w_{y_i} / sum_i w_{y_i}``, computed per target vector (``y_a`` and ``y_b``
      under mixup), so the part is ``sum_{i in m} w_{y_i} l_i / sum_i w_{y_i}``. Under a process group
      (``criterion`` a :class:`~ccsam.losses.GlobalBatchWeightedMean`) the denominator is the global
      batch's, so the processes' parts average to the global batch's part.

    A part with no rows (or, weighted, no weight) is a zero with a graph.
    """
    targets_a, targets_b = batch.targets_a, batch.targets_b
    if mask is None:
        loss = criterion(logits, targets_a)
        if batch.lam < 1.0:
            loss = batch.lam * loss + (1.0 - batch.lam) * criterion(logits, targets_b)
        return loss
    weights = effective_class_weights(criterion)
    rows = logits[mask]
    if weights is None:
        if rows.shape[0] == 0:
            return rows.sum()
        loss = criterion(rows, targets_a[mask])
        if batch.lam < 1.0:
            loss = batch.lam * loss + (1.0 - batch.lam) * criterion(rows, targets_b[mask])
        return loss * (mask.sum() / mask.numel())
    # Under a process group the denominator is the mean over processes of their weight sums (a collective,
    # taken before any early return so that every process takes it).
    inner, weight_total = criterion, _own_weight_sum
    if isinstance(criterion, GlobalBatchWeightedMean):
        inner, weight_total = criterion.criterion, criterion.mean_weight_sum

    def part(targets: torch.Tensor) -> torch.Tensor:
        w = weights.to(device=logits.device, dtype=torch.promote_types(logits.dtype, torch.float32))[targets]
        total, in_part = weight_total(w.sum()), w[mask].sum()
        if rows.shape[0] == 0 or not bool(in_part > 0):  # no rows, or weightless ones: 0 / 0 otherwise
            return rows[:0].sum()
        return inner(rows, targets[mask]) * (in_part / total)

    loss = part(targets_a)
    if batch.lam < 1.0:
        loss = batch.lam * loss + (1.0 - batch.lam) * part(targets_b)
    return loss


def _own_weight_sum(local_sum: torch.Tensor) -> torch.Tensor:
    return local_sum


#: Targets of CC-SAM's class-conditional (perturbed) loss under mixup (``stage1.flat_targets``).
FlatTargets = Literal["y_a", "mixup"]


def flat_loss(
    criterion: nn.Module, batch: MixedBatch, targets: FlatTargets
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The perturbed term of CC-SAM stage 1 as a function of the perturbed logits: ``None`` (the default
    ``criterion(perturbed, y_a)``, the released code's) unless ``targets == "mixup"`` and the batch is
    mixed, then :func:`mixup_loss` ``lam * criterion(., y_a) + (1 - lam) * criterion(., y_b)``."""
    if targets == "y_a" or batch.lam == 1.0:
        return None
    return lambda perturbed: mixup_loss(criterion, perturbed, batch)


def mixup_cross_entropy(logits: torch.Tensor, batch: MixedBatch) -> torch.Tensor:
    """mean_i [lam CE(o_i, y_a,i) + (1 - lam) CE(o_i, y_b,i)]; plain CE when lam = 1."""
    return mixup_loss(_cross_entropy(), logits, batch)


@dataclass(frozen=True)
class ErmObjective:
    """Empirical risk minimisation: the (mixup-aware) criterion on the clean logits."""

    criterion: nn.Module = field(default_factory=_cross_entropy)

    def __call__(self, model: Classifier, batch: MixedBatch, mask: torch.Tensor | None = None) -> StepOutput:
        logits = model(batch.inputs)
        return StepOutput(mixup_loss(self.criterion, logits, batch, mask), logits.detach())


@dataclass(frozen=True)
class CcsamStage1Objective:
    """CC-SAM stage 1 (released-code semantics, spec 1.3):

    L = (1 - beta) * clean mixup loss + beta * mean_i loss(h_{theta + eps_{y_a,i}}(z_i), y_a,i),
    with eps_c the class-conditional perturbation of the linear head computed in closed form by
    :func:`ccsam.method.stage1_loss` (one backbone pass; no per-class loop). The
    perturbation direction is the gradient of the class's cross-entropy (the paper's L_S^c); the
    criterion (CE by default, e.g. Balanced Softmax for "BS + CC-SAM") is what is evaluated there,
    against ``y_a`` alone as in the released code, or with ``flat_targets="mixup"`` as the mixup loss.
    """

    class_counts: torch.Tensor
    flat_ratio: float
    noise_scale: float
    criterion: nn.Module = field(default_factory=_cross_entropy)
    radius_mode: RadiusMode = "ccsam"
    rho: float = 1.0
    generator: torch.Generator | None = None
    flat_targets: FlatTargets = "y_a"

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        features = model.features(batch.inputs)
        logits = model.head(features)
        clean = mixup_loss(self.criterion, logits, batch)
        soft = batch.soft_targets(logits.shape[1]) if batch.lam < 1.0 else None
        loss = stage1_loss(
            clean, features, model.head, batch.targets_a, self.class_counts, flat_ratio=self.flat_ratio,
            noise_scale=self.noise_scale, criterion=self.criterion, soft_targets=soft, validate=False,
            radius_mode=self.radius_mode, rho=self.rho, generator=self.generator,
            flat_loss=flat_loss(self.criterion, batch, self.flat_targets),
        )
        return StepOutput(loss, logits.detach())


@dataclass(frozen=True)
class ScopedCcsamObjective:
    """Paper-faithful CC-SAM stage 1 on more than the head (spec 1.1: last-k blocks or all parameters):
    each class's samples are forwarded at w + eps_c with one global-norm radius over ``params``
    (:func:`ccsam.method.scoped.class_conditional_loss`, one pass per class in the batch); the criterion
    (CE by default; e.g. Balanced Softmax or a DRW-weighted loss) gives the clean (mixup-aware) and the
    perturbed loss, the class's cross-entropy gives the perturbation direction, as in the head form.
    ``sum_over_processes`` (under torchrun: :func:`ccsam.distributed.all_reduce_sum`) makes each class's
    gradient and count those of the global batch."""

    class_counts: torch.Tensor
    flat_ratio: float
    noise_scale: float
    scope: PerturbScope
    last_k: int = 1
    criterion: nn.Module = field(default_factory=_cross_entropy)
    sum_over_processes: Callable[[torch.Tensor], torch.Tensor] | None = None
    class_pass_bn: ClassPassBn = "class_rows"
    flat_targets: FlatTargets = "y_a"

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        params = select_parameters(model, self.scope, self.last_k)
        soft = batch.soft_targets(model.num_classes) if batch.lam < 1.0 else None
        loss = class_conditional_loss(model, batch.inputs, batch.targets_a, self.class_counts, params=params,
                                      noise_scale=self.noise_scale, flat_ratio=self.flat_ratio, soft_targets=soft,
                                      criterion=self.criterion,
                                      clean_loss=lambda logits: mixup_loss(self.criterion, logits, batch),
                                      sum_over_processes=self.sum_over_processes, class_pass_bn=self.class_pass_bn,
                                      flat_loss=flat_loss(self.criterion, batch, self.flat_targets))
        return StepOutput(loss, _clean_logits(model, batch))


def _clean_logits(model: Classifier, batch: MixedBatch) -> torch.Tensor:
    """Logits for the running accuracy only (no graph; BatchNorm statistics untouched)."""
    with torch.no_grad(), bn_stats_frozen(model):
        return model(batch.inputs)


@dataclass(frozen=True)
class HeadRetrainObjective:
    """Stage-2 re-training of the head on frozen features (cRT, LWS, MiSLAS, GCL stage 2): the criterion
    on h(z). Features are computed without a graph unless BatchNorm parameters are trained too."""

    criterion: nn.Module
    backbone_grad: bool = False

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        with torch.set_grad_enabled(self.backbone_grad and torch.is_grad_enabled()):
            features = model.features(batch.inputs)
        logits = model.head(features)
        return StepOutput(mixup_loss(self.criterion, logits, batch), logits.detach())


@dataclass(frozen=True)
class CcsamStage2Objective:
    """CC-SAM stage 2 (spec 2.2): L = alpha * mean_i a_i + (1 - alpha) * mean_i CE(h(z_i), y_i).

    a_i is the class-weighted loss on adversarially displaced features
    (:func:`ccsam.method.adversarial_feature_losses`); the backbone is frozen, so features are
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
