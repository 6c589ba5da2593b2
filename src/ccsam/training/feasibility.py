"""Refuse a run that cannot train, before anything is written, and word a divergence.

A configuration can be valid key by key and still train nothing: a batch larger than the training
set gives epochs with no step, and a long-tailed profile can round a tail class down to 0 images
(``int(49 * (1/49) ** 1) = 0`` in float64). Both are only visible once the data set is read.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ccsam.config.schema import FILE_DATASETS, RunConfig
from ccsam.data.build import LongTailData
from ccsam.errors import ConfigError
from ccsam.method import select_parameters


def check_trainable(cfg: RunConfig, data: LongTailData) -> None:
    """Raise :class:`ConfigError` if an epoch of ``cfg`` on ``data`` would have no step, or a class has
    no training image, or if the protocol needs pretrained weights that were not given."""
    if cfg.model.require_pretrained and cfg.model.pretrained is None:
        raise ConfigError(
            f"this configuration starts {cfg.model.arch} from pretrained weights (model.require_pretrained=true) "
            "but model.pretrained is not set; pass model.pretrained=PATH to a torchvision-named state dict (the "
            "README's 'ImageNet-style backbones' section says how to get one), or model.require_pretrained=false "
            "to train from scratch"
        )
    counts = [int(c) for c in data.class_counts.tolist()]
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty:
        names = data.train.class_names
        first = empty[0]
        label = f"class {first} ('{names[first]}')" if first < len(names) else f"class {first}"
        others = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
        if cfg.data.dataset in FILE_DATASETS:
            raise ConfigError(
                f"{label}{others} has no image in the training list of data.dataset={cfg.data.dataset}; "
                "remove the label from the lists or add its training images"
            )
        n_max = cfg.data.n_max if cfg.data.n_max is not None else "auto"
        raise ConfigError(
            f"{label}{others} would have no training image with data.n_max={n_max} and data.imbalance_ratio="
            f"{cfg.data.imbalance_ratio:g} (n_i = int(n_max * (1/IR)^(i/(C-1))) rounds down to 0); lower "
            "data.imbalance_ratio or raise data.n_max"
        )
    images = len(data.train)
    if images // cfg.data.batch_size == 0:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is larger than the {images} training images, so every "
            f"epoch would have no step (the last incomplete batch is dropped); set data.batch_size <= "
            f"{images}"
        )


def check_model_fits(cfg: RunConfig, model: nn.Module) -> None:
    """Raise :class:`ConfigError` if ``cfg`` asks of the built ``model`` what it does not have: more backbone
    blocks for CC-SAM's ``stage1.perturb_scope=last_k`` than the backbone has."""
    s1 = cfg.stage1
    if s1.epochs and s1.method == "ccsam" and s1.perturb_scope == "last_k":
        try:
            select_parameters(model, "last_k", s1.perturb_last_k)
        except ValueError as exc:
            raise ConfigError(
                f"stage1.perturb_last_k={s1.perturb_last_k} does not fit model.arch={cfg.model.arch} ({exc}); "
                "lower stage1.perturb_last_k or use stage1.perturb_scope=all"
            ) from None


def schedule_warnings(cfg: RunConfig) -> list[str]:
    """Lines for schedule points a stage never reaches (legal, but usually a shortened schedule that
    kept the long one's milestones or DRW epoch): LR milestones, warm-up and DRW start at or after the
    stage's last epoch."""
    lines: list[str] = []
    for name in ("stage1", "stage2"):
        stage = getattr(cfg, name)
        if stage.epochs == 0:
            continue
        late = [m for m in stage.milestones if m >= stage.epochs]
        if stage.schedule == "official_step" and late:
            lines.append(f"{name}.milestones {list(late)} are at or after its last epoch ({stage.epochs} epochs): "
                         "the learning rate never decays there; scale them with the schedule")
        if stage.warmup_epochs >= stage.epochs:
            lines.append(f"{name}.warmup_epochs={stage.warmup_epochs} covers all {stage.epochs} epochs: the "
                         "learning rate never reaches its full value")
        loss = stage.loss if name == "stage1" else getattr(stage.method, "loss", None)
        start = None if loss is None else loss.drw.start_epoch
        if start is None and loss is not None:
            start = loss.options.get("drw_start_epoch")
        where = "stage1.loss" if name == "stage1" else "stage2.method.loss"
        if start is not None and int(start) >= stage.epochs:
            lines.append(f"{where} re-weights (DRW) from epoch {start}, after the stage's {stage.epochs} "
                         "epochs: deferred re-weighting never starts")
    return lines


def divergence_message(
    cfg: RunConfig, run: Any, stage: int, stage_epoch: int, stats: dict[str, Any], steps: int
) -> str:
    """The one line of a run stopped at a non-finite loss: where, what is kept, what to change."""
    stage_cfg = cfg.stage1 if stage == 1 else cfg.stage2
    kept = (
        f"the last good checkpoint '{run.last_checkpoint}' is kept"
        if run.last_checkpoint.exists()
        else "no epoch had completed, so no checkpoint was written"
    )
    return (
        f"the training loss became {stats['nonfinite_loss']} at stage {stage}, epoch {stage_epoch + 1}/"
        f"{stage_cfg.epochs}, step {stats['nonfinite_step'] + 1}/{steps}; the run stopped and {kept}. Lower "
        f"stage{stage}.lr (now {stage_cfg.lr:g}), or set runtime.on_nonfinite=skip to skip such steps"
    )
