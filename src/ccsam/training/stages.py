"""One training stage: its batches, optimiser, update, objective and averaging, with its own state.

:func:`build_stage` assembles a stage from the config; the objective of each stage epoch is looked up
in :data:`STAGE1_OBJECTIVES` / :data:`STAGE2_OBJECTIVES` (and :data:`CCSAM_SCOPES` for the stage-1
CC-SAM perturbation scope) and the update in :mod:`ccsam.training.updates`: the engine never branches
on a method name. :meth:`Stage.state_dict` is everything a checkpoint needs to resume the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ccsam.config.choices import CcsamStage2, DirOnlyRadius, MagOnlyRadius, ModelPerturbation
from ccsam.config.schema import RunConfig, Stage1Config, Stage2Config
from ccsam.data.batches import train_batches
from ccsam.data.build import LongTailData
from ccsam.data.dataloader import DataLoaderBatches
from ccsam.data.memory_loader import InMemoryLoader
from ccsam.data.samplers import build_sampler
from ccsam.losses import LOSSES
from ccsam.models import Classifier
from ccsam.optim.schedules import adversarial_weight
from ccsam.optim.swa import SwaAverager, swa_window
from ccsam.training.assembly import (
    TrainableParameters,
    build_criterion,
    build_optimizer,
    optimizer_choice,
    stage_loss,
)
from ccsam.training.objectives import (
    CcsamStage1Objective,
    CcsamStage2Objective,
    ErmObjective,
    HeadRetrainObjective,
    Objective,
    ScopedCcsamObjective,
)
from ccsam.training.precision import Runtime
from ccsam.training.updates import Update, build_update

__all__ = [
    "CCSAM_SCOPES",
    "STAGE1_OBJECTIVES",
    "STAGE2_OBJECTIVES",
    "Stage",
    "build_objective",
    "build_stage",
]


@dataclass
class Stage:
    """The optimiser, batch source and update of one stage, and where it sits on the global epoch counter.

    ``noise`` is the generator of MP's weight noise and ``directions`` that of the ``mag_only`` ablation's
    random directions (``None`` where the stage draws none). ``runner`` is what the update drives under
    torchrun: PyTorch's ``DistributedDataParallel`` around the model over this stage's trainable
    parameters (set by :func:`ccsam.training.distributed.distribute_stage`); ``None``: the model itself."""

    number: int
    config: Stage1Config | Stage2Config
    first_epoch: int
    optimizer: Optimizer
    loader: InMemoryLoader | DataLoaderBatches
    criterion: nn.Module
    update: Update
    swa: SwaAverager | None
    noise: torch.Generator | None
    directions: torch.Generator | None
    runner: nn.Module | None = None

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, sampler / loader, generators and SWA average (the checkpoint keys of a stage)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "loader": self.loader.state_dict(),
            "update_generator": self.noise.get_state() if self.noise is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "directions": self.directions.get_state() if self.directions is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        if state.get("update_generator") is not None and self.noise is not None:
            self.noise.set_state(state["update_generator"])
        if state.get("swa") is not None and self.swa is not None:
            self.swa.load_state_dict(state["swa"])
        if state.get("directions") is not None and self.directions is not None:
            self.directions.set_state(state["directions"])

    def set_modes(self, model: Classifier, cfg: RunConfig) -> None:
        """Train mode; stage 2 with ``bn_mode=eval`` keeps the frozen backbone's BatchNorm in eval mode."""
        model.train()
        if self.number == 2 and cfg.stage2.bn_mode == "eval":
            model.backbone.eval()

    def average_weights(
        self,
        model: Classifier,
        cfg: RunConfig,
        stage_epoch: int,
        train_batches: Callable[[], Iterable[torch.Tensor]],
    ) -> None:
        """SWA: add this epoch's weights to the average inside the window; after the stage's last epoch
        the model takes the averaged weights (and, where BN is trained, recomputed BN statistics over
        ``train_batches()``)."""
        if self.swa is None:
            return
        if swa_window(stage_epoch, self.config.epochs, self.config.swa_start):
            self.swa.update(model)
        if stage_epoch + 1 == self.config.epochs:
            if self.number == 2 and cfg.stage2.bn_mode == "eval":
                self.swa.copy_to(model)
            else:
                self.swa.finalize(model, train_batches())


def _loader(
    cfg: RunConfig, number: int, data: LongTailData, runtime: Runtime, seed: int
) -> InMemoryLoader | DataLoaderBatches:
    stage_cfg = cfg.stage1 if number == 1 else cfg.stage2
    extra = {"total_epochs": stage_cfg.epochs} if stage_cfg.sampler == "progressive" else {}
    sampler = build_sampler(
        stage_cfg.sampler, data.train.labels.cpu(), data.num_classes, seed, **extra,
        epoch_samples=stage_cfg.epoch_samples, class_visit_samples=stage_cfg.class_visit_samples,
    )
    mixup_alpha = stage_cfg.mixup_alpha
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    data_cfg = cfg.data.model_copy(update={"batch_size": cfg.batch_size_of(number)})
    return train_batches(data, sampler, data_cfg, mixup_alpha, seed, runtime.device, memory_format)


def build_stage(
    number: int,
    cfg: RunConfig,
    model: Classifier,
    data: LongTailData,
    runtime: Runtime,
    params: TrainableParameters,
    counts: torch.Tensor,
) -> Stage:
    """Sampler, batches, criterion, a fresh optimiser over ``params`` and the update of one stage."""
    stage_cfg = cfg.stage1 if number == 1 else cfg.stage2
    seed = cfg.seed + 1000 * (number - 1)  # independent streams per stage, fixed by the run seed
    loader = _loader(cfg, number, data, runtime, seed)
    first_epoch = 0 if number == 1 else cfg.stage1.epochs
    criterion = build_criterion(stage_loss(stage_cfg), counts)
    optimizer = build_optimizer(stage_cfg, params, counts)
    noise = (
        torch.Generator(device=runtime.device).manual_seed(seed + 17)
        if isinstance(stage_cfg.flattening, ModelPerturbation)
        else None
    )
    update = build_update(stage_cfg.flattening, optimizer_choice(stage_cfg).name, noise)
    swa = SwaAverager(model) if stage_cfg.swa else None
    mag_only = number == 1 and isinstance(cfg.stage1.radius, MagOnlyRadius)
    directions = torch.Generator(device=runtime.device).manual_seed(seed + 29) if mag_only else None
    return Stage(number, stage_cfg, first_epoch, optimizer, loader, criterion, update, swa, noise, directions)


# -- objectives: (config, stage, stage epoch, class counts) -> objective ---------------------------------
ObjectiveBuilder = Callable[[RunConfig, Stage, int, torch.Tensor], Objective]


def _erm(cfg: RunConfig, stage: Stage, stage_epoch: int, counts: torch.Tensor) -> Objective:
    return ErmObjective(stage.criterion)


def _ccsam_head(cfg: RunConfig, stage: Stage, stage_epoch: int, counts: torch.Tensor) -> Objective:
    s1 = cfg.stage1
    return CcsamStage1Objective(
        counts,
        s1.flat_ratio,
        s1.noise_scale,
        stage.criterion,
        radius_mode=s1.radius.name,
        rho=s1.radius.rho if isinstance(s1.radius, DirOnlyRadius) else 1.0,  # only dir_only reads rho
        generator=stage.directions,
        flat_targets=s1.flat_targets,
    )


def _ccsam_scoped(cfg: RunConfig, stage: Stage, stage_epoch: int, counts: torch.Tensor) -> Objective:
    s1 = cfg.stage1
    return ScopedCcsamObjective(
        counts, s1.flat_ratio, s1.noise_scale, s1.perturb_scope, s1.perturb_last_k, stage.criterion,
        class_pass_bn=s1.class_pass_bn, flat_targets=s1.flat_targets,
    )


#: Stage-1 CC-SAM by perturbation scope: the head's closed form, or the per-class passes of the paper form.
CCSAM_SCOPES: dict[str, ObjectiveBuilder] = {
    "head": _ccsam_head,
    "last_k": _ccsam_scoped,
    "all": _ccsam_scoped,
}

#: Stage-1 objectives by ``stage1.method``.
STAGE1_OBJECTIVES: dict[str, ObjectiveBuilder] = {
    "erm": _erm,
    "ccsam": lambda cfg, stage, epoch, counts: CCSAM_SCOPES[cfg.stage1.perturb_scope](
        cfg, stage, epoch, counts
    ),
}


def _adversarial(cfg: RunConfig, stage: Stage, stage_epoch: int, counts: torch.Tensor) -> Objective:
    method = cfg.stage2.method
    if not isinstance(method, CcsamStage2):
        raise TypeError(f"the adversarial stage-2 objective needs stage2.method=ccsam, got {method.name}")
    alpha = adversarial_weight(stage_epoch, cfg.stage2.epochs, method.up_limit)
    return CcsamStage2Objective(counts, alpha, method.div, method.feature_step)


def _retrain(cfg: RunConfig, stage: Stage, stage_epoch: int, counts: torch.Tensor) -> Objective:
    return HeadRetrainObjective(stage.criterion, backbone_grad=cfg.stage2.train_bn)


#: Stage-2 objectives by ``stage2.method`` (LWS re-trains its per-class scales like cRT its head).
STAGE2_OBJECTIVES: dict[str, ObjectiveBuilder] = {"ccsam": _adversarial, "retrain": _retrain, "lws": _retrain}


def build_objective(cfg: RunConfig, stage: Stage, stage_epoch: int, counts: torch.Tensor) -> Objective:
    """The stage's objective at ``stage_epoch``: the epoch sets the DRW switch of losses that use it
    (``LossEntry.uses_epoch``) and stage 2's adversarial weight alpha."""
    loss = stage_loss(stage.config)
    if LOSSES[loss.name].uses_epoch or loss.drw.start_epoch is not None:
        stage.criterion.set_epoch(stage_epoch)  # type: ignore[operator]
    registry = STAGE1_OBJECTIVES if stage.number == 1 else STAGE2_OBJECTIVES
    method = cfg.stage1.method if stage.number == 1 else cfg.stage2.method.name
    return registry[method](cfg, stage, stage_epoch, counts)
