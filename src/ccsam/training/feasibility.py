"""Refuse a run that cannot train, before anything is written, and word a divergence.

A configuration can be valid key by key and still train nothing: a batch larger than the training
set gives epochs with no step, and a long-tailed profile can round a tail class down to 0 images
(``int(49 * (1/49) ** 1) = 0`` in float64). Both are only visible once the data set is read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from ccsam.config.schema import FILE_DATASETS, LIST_DATASETS, DataConfig, RunConfig
from ccsam.data.arrays import ImageArrays
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
    if cfg.stage2.epochs and cfg.stage2.init_from == "best_val" and len(data.val) == 0:
        raise ConfigError(
            "stage2.init_from=best_val selects the stage-1 epoch on the validation split, but this data has "
            "no validation image (no unused training image is left to draw it from); set stage2.init_from=last"
        )
    _check_cutout(cfg, data)
    _check_class_vectors(cfg, data.num_classes)
    images = len(data.train)
    for stage in (1, 2) if cfg.stage2.epochs else (1,):
        batch, key = cfg.batch_size_of(stage), cfg.batch_size_key(stage)
        if images // batch == 0:
            raise ConfigError(
                f"{key}={batch} is larger than the {images} training images, so every epoch would have no "
                f"step (the last incomplete batch is dropped); set {key} <= {images}"
            )


def _check_cutout(cfg: RunConfig, data: LongTailData) -> None:
    """A Cutout hole at least twice the image side blanks every training image (the hole is centred
    anywhere in the image, so a side of 2 * size covers it wherever it falls)."""
    train = data.train
    if "cutout" not in cfg.data.augment or not isinstance(train, ImageArrays) or not len(train):
        return  # image files have no Cutout (data.augment is refused for them)
    side = min(int(d) for d in train.images.shape[-2:])
    if cfg.data.cutout_size >= 2 * side:
        raise ConfigError(
            f"data.cutout_size={cfg.data.cutout_size} erases every {side}x{side} training image entirely "
            f"(data.augment={cfg.data.augment}); set data.cutout_size below {2 * side} (CIFAR: 16 on 32 px)"
        )


def _check_class_vectors(cfg: RunConfig, num_classes: int) -> None:
    """Per-class loss options (``ce.weight``, ``focal.alpha``) must have one entry per class."""
    losses = [("stage1.loss", cfg.stage1.loss)]
    if cfg.stage2.epochs and cfg.stage2.loss is not None:
        losses.append(("stage2.method.loss", cfg.stage2.loss))
    for where, loss in losses:
        for option, value in loss.options.items():
            if isinstance(value, list) and len(value) != num_classes:
                raise ConfigError(f"{where}.options.{option} has {len(value)} entries but the data has "
                                  f"{num_classes} classes; give one value per class")


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
    kept the long one's milestones or DRW epoch): LR milestones after the stage's last epoch (a milestone
    equal to ``epochs`` decays the last epoch: ``official_step``'s counter is ``e + 1``), warm-up and DRW
    start at or after it."""
    lines: list[str] = []
    for name in ("stage1", "stage2"):
        stage = getattr(cfg, name)
        if stage.epochs == 0:
            continue
        # official_step trains epoch e at counter t = e + 1, so a milestone m = epochs still decays the last epoch
        late = [m for m in stage.milestones if m > stage.epochs]
        if stage.schedule == "official_step" and late:
            lines.append(f"{name}.milestones {list(late)} are after its last epoch ({stage.epochs} epochs): "
                         "the learning rate never decays there; scale them with the schedule")
        if stage.schedule != "constant" and stage.warmup_epochs >= stage.epochs:
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


def ignored_option_warnings(cfg: RunConfig) -> list[str]:
    """Lines for options set away from their defaults that this configuration never reads (legal, so
    that a preset can be switched to another schedule or method with one override, but worth a word):
    schedule fields the stage's ``schedule`` does not use, CC-SAM's stage-1 fields under ERM,
    ``perturb_last_k`` outside ``perturb_scope=last_k`` and ``model.head_scale`` with a linear head."""
    lines: list[str] = []
    for name in ("stage1", "stage2"):
        stage = getattr(cfg, name)
        if stage.epochs == 0:
            continue
        if stage.schedule == "constant" and stage.warmup_epochs:
            lines.append(f"{name}.warmup_epochs={stage.warmup_epochs} has no effect with {name}.schedule=constant "
                         f"(the learning rate is {name}.lr throughout); set it to 0 or use cosine / official_step")
        if stage.schedule != "official_step" and stage.milestones:
            lines.append(f"{name}.milestones {list(stage.milestones)} (and gamma) apply to "
                         f"{name}.schedule=official_step only, not {stage.schedule}; set {name}.milestones=[]")
        if stage.schedule == "official_step" and stage.warmup_epochs == 1:
            lines.append(f"{name}.warmup_epochs=1 is no warm-up with {name}.schedule=official_step (as in the "
                         "official code, epoch e runs at counter e + 1 >= 1); use 0 or >= 2")
        if _away_from_default(stage, ("swa_start",)) and not stage.swa:
            lines.append(f"{name}.swa_start has no effect without {name}.swa=true")
    s1 = cfg.stage1
    if s1.epochs and s1.method == "erm":
        unread = [f"stage1.{key}" for key in _away_from_default(s1, ("flat_ratio", "noise_scale", "flat_targets"))]
        if unread:
            lines.append(f"{' and '.join(unread)} shape CC-SAM's perturbed loss; with stage1.method=erm they "
                         "have no effect")
    if s1.method == "ccsam" and s1.mixup_alpha == 0 and _away_from_default(s1, ("flat_targets",)):
        lines.append("stage1.flat_targets=mixup has no effect without mixup; it is for stage1.mixup_alpha > 0")
    if s1.perturb_scope != "last_k" and _away_from_default(s1, ("perturb_last_k",)):
        lines.append(f"stage1.perturb_last_k={s1.perturb_last_k} has no effect with stage1.perturb_scope="
                     f"{s1.perturb_scope}; it counts blocks for perturb_scope=last_k")
    if (s1.perturb_scope == "head" or s1.method == "erm") and _away_from_default(s1, ("class_pass_bn",)):
        lines.append(f"stage1.class_pass_bn={s1.class_pass_bn} has no effect without per-class passes "
                     "(stage1.method=ccsam with stage1.perturb_scope=last_k or all)")
    if cfg.model.head == "linear" and _away_from_default(cfg.model, ("head_scale",)):
        lines.append(f"model.head_scale={cfg.model.head_scale:g} scales a cosine head; with model.head=linear "
                     "it has no effect")
    return lines + _unread_data_options(cfg.data)


def _away_from_default(section: BaseModel, names: tuple[str, ...]) -> list[str]:
    """The fields among ``names`` whose value in ``section`` differs from the field's default."""
    fields = type(section).model_fields
    return [name for name in names if getattr(section, name) != fields[name].default]


#: Options of the long-tailed subset drawn from a full training set (not read by the list data sets).
_LONG_TAIL_FIELDS = ("profile", "imbalance_ratio", "n_max", "subset_protocol", "val_per_class")
#: Options of the image-file pipeline (not read by the in-memory data sets).
_FILE_ONLY_FIELDS = ("list_dir", "train_list", "val_list", "test_list", "selection_per_class", "image_size",
                     "color_jitter")


def _unread_data_options(data: DataConfig) -> list[str]:
    """The data options away from their defaults that ``data.dataset`` never reads: a list data set takes
    its long-tailed split from the lists, an in-memory one has no image-file pipeline."""
    if data.dataset in LIST_DATASETS:
        names: tuple[str, ...] = _LONG_TAIL_FIELDS
        why = "trains on its list files as they are (no long-tailed subset is drawn)"
        if data.has_val_list:
            names = (*names, "selection_per_class")
            why += "; it selects on its val list"
    elif data.dataset not in FILE_DATASETS:
        names, why = _FILE_ONLY_FIELDS, "is read into memory, not from image files"
    else:
        return []
    changed = [f"data.{name}" for name in _away_from_default(data, names)]
    if not changed:
        return []
    return [f"{', '.join(changed)} {'has' if len(changed) == 1 else 'have'} no effect: data.dataset="
            f"{data.dataset} {why}"]


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
