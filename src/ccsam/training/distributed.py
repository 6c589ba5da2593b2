"""The training engine under torchrun: config checks, model set-up, stage and objective wrappers.

:class:`ccsam.training.trainer.Trainer` calls :func:`check_config` and :func:`prepare_model` once,
:func:`distribute_stage` on every stage it builds, :func:`distribute_objective` on every objective,
:func:`reduce_train_stats` on every epoch's statistics and :func:`sync_bn_statistics` after every
epoch's updates; all are no-ops in one process. The collectives themselves are :mod:`ccsam.distributed`.

Gradients: each stage's model is wrapped in PyTorch's ``DistributedDataParallel``
(:func:`ccsam.distributed.wrap_model`, stored as ``Stage.runner``); each rank's loss is the mean over its
``B / W`` rows, so DDP's average over ranks is the gradient of the global-batch mean (for a
class-weighted mean, e.g. DRW, each rank scales its weighted mean by its share of the global weight sum,
:class:`~ccsam.losses.GlobalBatchWeightedMean`, so the average is the global weighted mean). Which backward of
a multi-pass update synchronises is said where the update is (:mod:`ccsam.training.updates`).

The CC-SAM perturbations are functions of the whole batch: stage 1's per-class head gradients (their
norms, the within-class Gram terms) and stage 2's per-class feature-gradient norms. Each rank gathers
the detached per-sample quantities (features, labels and, under mixup, the partners' labels:
``B * (d + 2)`` numbers), evaluates the closed form on the global batch with the gradient path through
its own rows only (:func:`ccsam.distributed.gather_rows`) and keeps its own rows' losses. The
perturbation is a constant of the closed form, so ``o'_i = (W + eps_{y_i}) f_i + b + eps_{y_i,b}`` with
``eps`` from the global statistics, and the mean over ranks of the local mean losses is the global-batch
mean. The paper-form scopes (``last_k``, ``all``) sum each class's parameter gradient and batch count
over the ranks instead (:func:`ccsam.method.class_conditional_loss` with ``sum_over_processes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ccsam.config.schema import RunConfig
from ccsam.data.augment import MixedBatch
from ccsam.distributed import (
    all_reduce_mean,
    all_reduce_sum,
    average_buffers,
    broadcast_module,
    comm_device,
    convert_sync_batchnorm,
    gather_rows,
    is_distributed,
    local_rows,
    unwrap_model,
    world_size,
    wrap_model,
)
from ccsam.losses import GlobalBatchWeightedMean
from ccsam.method import adversarial_feature_losses
from ccsam.method.head import class_conditional_logits
from ccsam.models import Classifier
from ccsam.training.objectives import (
    CcsamStage1Objective,
    CcsamStage2Objective,
    ErmObjective,
    HeadRetrainObjective,
    Objective,
    ScopedCcsamObjective,
    StepOutput,
    flat_loss,
    mixup_loss,
)
from ccsam.training.stages import Stage

__all__ = [
    "GlobalCcsamStage1",
    "GlobalCcsamStage2",
    "check_config",
    "distribute_objective",
    "distribute_stage",
    "prepare_model",
    "reduce_train_stats",
    "sync_bn_statistics",
    "unwrap_model",
]


def check_config(cfg: RunConfig) -> None:
    """Refuse, with one line, a global batch (of either stage) that the ranks cannot share equally."""
    if not is_distributed():
        return
    for stage in (1, 2) if cfg.stage2.epochs else (1,):
        local_rows(cfg.batch_size_of(stage), 0, world_size(), key=cfg.batch_size_key(stage))


def prepare_model(model: Classifier, cfg: RunConfig) -> Classifier:
    """``runtime.sync_bn`` -> global-batch BatchNorm (the layers inside ``model`` are replaced; the model
    object stays); then every rank starts from rank 0's weights and buffers (DDP itself broadcasts only the
    parameters)."""
    if not is_distributed():
        return model
    if cfg.runtime.sync_bn:
        device = next(model.parameters()).device
        convert_sync_batchnorm(model, device)
    broadcast_module(model)
    return model


def distribute_stage(stage: Stage, model: nn.Module) -> None:
    """This rank's slice of each global batch (the loader's ``keep``: it augments only those rows), and
    ``stage.runner``: DDP around ``model`` over the parameters this stage trains (built after stage 2
    froze the backbone and reset the head)."""
    if not is_distributed():
        return
    stage.loader.keep = local_rows(stage.loader.batch_size)
    stage.runner = wrap_model(model)


def sync_bn_statistics(model: nn.Module, cfg: RunConfig) -> None:
    """Without ``runtime.sync_bn``: BatchNorm running statistics averaged over the ranks, so that every
    rank validates, checkpoints and (stage 2 with ``bn_mode=eval``) trains with the same ones. With it
    they are the global batch's on every rank already."""
    if is_distributed() and not cfg.runtime.sync_bn:
        average_buffers(model)


#: Epoch statistics that add up over the ranks (the others are per-rank means or times: averaged).
_SUMMED_STATS = ("images", "img_per_s")


def reduce_train_stats(stats: dict[str, float | int]) -> dict[str, float | int]:
    """The epoch's statistics of the whole world: the mean over ranks of the per-rank mean loss and
    accuracy (equal slices: the global-batch means) and of the data wait; images and images/s summed."""
    if not is_distributed() or not stats:
        return stats
    keys = sorted(stats)
    local = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=comm_device())
    values = all_reduce_mean(local)
    out: dict[str, float | int] = {}
    for key, value in zip(keys, values.tolist(), strict=True):
        out[key] = value * world_size() if key in _SUMMED_STATS else value
        if isinstance(stats[key], int):
            out[key] = round(out[key])
    return out


@dataclass(frozen=True)
class GlobalCcsamStage1:
    """:class:`~ccsam.training.objectives.CcsamStage1Objective` with global-batch class statistics
    (every ``stage1.radius``): ``(1 - beta) * clean + beta * criterion(own rows of the global perturbed
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
        flat = flat_loss(o.criterion, batch, o.flat_targets)
        perturbed_loss = o.criterion(perturbed, batch.targets_a) if flat is None else flat(perturbed)
        loss = (1.0 - o.flat_ratio) * clean + o.flat_ratio * perturbed_loss
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


#: The objectives that reduce a batch with a configurable criterion (CC-SAM's stage 2 uses plain CE).
CRITERION_OBJECTIVES = (ErmObjective, CcsamStage1Objective, ScopedCcsamObjective, HeadRetrainObjective)


def distribute_objective(objective: Objective) -> Objective:
    """The global-batch form of an objective under a process group (unchanged in one process): its
    criterion's class-weighted mean, if it has one (DRW, LDAM-DRW, weighted CE), over the global batch
    (:class:`~ccsam.losses.GlobalBatchWeightedMean`); and for CC-SAM the class statistics of the global
    batch. Plain-mean criteria need nothing: the mean over equal slices of their means is the global mean."""
    if not is_distributed():
        return objective
    if isinstance(objective, CRITERION_OBJECTIVES):
        objective = dataclasses.replace(
            objective, criterion=GlobalBatchWeightedMean(objective.criterion, all_reduce_mean)
        )
    if isinstance(objective, ScopedCcsamObjective):
        return dataclasses.replace(objective, sum_over_processes=all_reduce_sum)
    if isinstance(objective, CcsamStage1Objective):
        return GlobalCcsamStage1(objective)
    if isinstance(objective, CcsamStage2Objective):
        return GlobalCcsamStage2(objective)
    return objective
