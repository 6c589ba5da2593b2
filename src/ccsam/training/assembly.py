"""Config -> the parts of a run: device, model, criterion, optimiser, and the model changes of stage 2.

A method is a composition of these parts chosen by the typed config; choices are looked up in
registries (:data:`OPTIMIZERS`, ``ccsam.losses.LOSSES``, ``ccsam.models.MODELS``), never by branching on
a method name. :func:`build_run_model` is the one model assembly used by training, re-evaluation and
the analyses of a finished run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, Optimizer

from ccsam.config.choices import (
    AsamOptimizer,
    ImbsamOptimizer,
    OptimizerChoice,
    RetrainStage2,
    SamOptimizer,
    SgdOptimizer,
)
from ccsam.config.schema import LossConfig, ModelConfig, RunConfig, Stage1Config, Stage2Config
from ccsam.errors import ConfigError, RunDirError
from ccsam.losses import DeferredReweighting, build_loss
from ccsam.models import Classifier, build_model
from ccsam.models.heads import CosineHead, LWSHead
from ccsam.models.pretrained import load_pretrained
from ccsam.optim.imbsam import ImbSAM
from ccsam.optim.sam import SAM
from ccsam.optim.spectral_norm import apply_spectral_norm
from ccsam.training.precision import Runtime, prepare_model

__all__ = [
    "OPTIMIZERS",
    "TrainableParameters",
    "build_criterion",
    "build_optimizer",
    "build_run_model",
    "install_head",
    "prepare_stage2",
    "reinitialise_and_freeze",
    "select_device",
]


def select_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` / ``cuda:N`` without that GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunDirError(f"device={name} was asked for but no CUDA device is available; "
                              "use device=cpu or auto")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RunDirError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered 0..{torch.cuda.device_count() - 1}; choose one of them")
    return torch.device(name)


def build_criterion(loss: LossConfig, class_counts: torch.Tensor) -> nn.Module:
    """The configured loss on the device of ``class_counts``, wrapped in DRW when ``loss.drw.start_epoch``
    is set."""
    criterion = build_loss(loss.name, class_counts.cpu(), **loss.options)
    if loss.drw.start_epoch is not None:
        criterion = DeferredReweighting(criterion, class_counts.cpu(), loss.drw.start_epoch, loss.drw.beta)
    return criterion.to(class_counts.device)


def install_head(model: Classifier, cfg: ModelConfig) -> Classifier:
    """Replace the default linear head by the configured kind (cosine: s * cos(f, w_c)), then apply
    ``model.head_init``: ``kaiming_normal`` draws the weight from N(0, 2 / d) (``kaiming_normal_``, fan-in,
    ReLU gain), the initialisation LDAM-DRW's ``resnet32`` applies to its linear classifier; the bias keeps
    ``nn.Linear``'s default. ``default`` keeps the head's own initialisation."""
    if cfg.head == "cosine":
        linear = model.head
        model.head = CosineHead(linear.in_features, linear.out_features, scale=cfg.head_scale,
                                device=linear.weight.device, dtype=linear.weight.dtype)
    if cfg.head_init == "kaiming_normal":
        with torch.no_grad():
            nn.init.kaiming_normal_(model.head.weight)
    return model


def reinitialise_and_freeze(model: Classifier, cfg: ModelConfig) -> None:
    """``model.reinit``: each named backbone module's submodules get their own ``reset_parameters()`` (the
    default initialisation of a freshly built module; BatchNorm also resets its running statistics), drawn
    from torch's global RNG. ``model.train_from``: :meth:`Classifier.freeze_backbone_before`. An unknown
    name is a ``ConfigError`` listing the backbone's top-level modules."""
    tops = ", ".join(n for n, _ in model.backbone.named_children())
    for name in cfg.reinit:
        try:
            module = model.backbone.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"model.reinit names {name!r}, which the {cfg.arch} backbone does not have "
                              f"(its top-level modules: {tops}; blocks are e.g. layer4.2)") from None
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
    if cfg.train_from is not None:
        try:
            model.freeze_backbone_before(cfg.train_from)
        except ValueError as exc:
            raise ConfigError(f"model.train_from={cfg.train_from}: {exc}") from None


def build_run_model(cfg: RunConfig, in_channels: int, num_classes: int, runtime: Runtime, *,
                    stage: int = 1, compile_backbone: bool | None = None,
                    load_pretrained_weights: bool = False) -> Classifier:
    """The run's model on ``runtime.device``: the registered backbone (with ``model.pretrained`` weights
    when ``load_pretrained_weights``; a resumed or re-evaluated run takes them from its checkpoint),
    the configured head, spectral norm
    (``stage1.spectral_norm``, before any optimiser or checkpoint: it renames weight parameters), the
    stage-2 head when ``stage == 2`` (e.g. LWS has its own parameters), then channels_last / compile.

    Weights are drawn from torch's global RNG (seed it first). ``compile_backbone`` overrides
    ``runtime.compile`` (re-evaluation never compiles)."""
    model = build_model(cfg.model.arch, in_channels=in_channels, num_classes=num_classes,
                        width=cfg.model.width, bias=cfg.model.bias).to(runtime.device)
    if cfg.model.pretrained is not None and load_pretrained_weights:
        load_pretrained(model, cfg.model.pretrained, arch=cfg.model.arch, download=cfg.model.download,
                        load_head=cfg.model.pretrained_head)
    model = install_head(model, cfg.model)
    reinitialise_and_freeze(model, cfg.model)
    if cfg.stage1.spectral_norm:
        apply_spectral_norm(model)
    if stage == 2:
        prepare_stage2(model, cfg)
    runtime_cfg = cfg.runtime
    if compile_backbone is not None:
        runtime_cfg = runtime_cfg.model_copy(update={"compile": compile_backbone})
    return prepare_model(model, runtime_cfg, runtime)


#: What a stage's optimiser trains: parameters, or parameter groups ``{"params": [...], "lr_factor": f}``
#: whose rate is ``f`` times the stage's (:func:`ccsam.optim.schedules.set_learning_rate`).
TrainableParameters = list[nn.Parameter] | list[dict[str, Any]]


def _base_kwargs(stage: Stage1Config | Stage2Config) -> dict[str, Any]:
    return {"lr": stage.lr, "momentum": stage.momentum, "weight_decay": stage.weight_decay,
            "nesterov": stage.nesterov}


def _sgd(choice: SgdOptimizer, base: dict[str, Any], params: TrainableParameters, counts: torch.Tensor) -> Optimizer:
    return SGD(params, **base)


def _sam(choice: SamOptimizer, base: dict[str, Any], params: TrainableParameters, counts: torch.Tensor) -> Optimizer:
    return SAM(params, SGD, rho=choice.rho, **base)


def _asam(choice: AsamOptimizer, base: dict[str, Any], params: TrainableParameters, counts: torch.Tensor) -> Optimizer:
    return SAM(params, SGD, rho=choice.rho, adaptive=True, eta=choice.eta, **base)


def _imbsam(
    choice: ImbsamOptimizer, base: dict[str, Any], params: TrainableParameters, counts: torch.Tensor
) -> Optimizer:
    return ImbSAM(
        params, SGD, counts.cpu(), rho=choice.rho, tail_threshold=choice.tail_threshold,
        tail_weight=choice.tail_weight, **base,
    )


#: The optimiser of each ``stage1.optimizer`` member (stage 2 uses ``sgd``): SGD with momentum, or
#: SAM / ASAM / ImbSAM wrapped around it. ``(member, SGD settings, parameters, class counts) -> optimiser``.
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"sgd": _sgd, "sam": _sam, "asam": _asam, "imbsam": _imbsam}


def optimizer_choice(stage: Stage1Config | Stage2Config) -> OptimizerChoice:
    """The stage's optimiser: ``stage1.optimizer``; stage 2 always trains with SGD."""
    return stage.optimizer if isinstance(stage, Stage1Config) else SgdOptimizer()


def build_optimizer(stage: Stage1Config | Stage2Config, params: Iterable[nn.Parameter] | TrainableParameters,
                    class_counts: torch.Tensor) -> Optimizer:
    """``OPTIMIZERS[optimizer_choice(stage).name]`` over ``params`` (parameters, or parameter groups with an
    ``lr_factor``: see :func:`ccsam.optim.schedules.set_learning_rate`) with the stage's SGD settings."""
    choice = optimizer_choice(stage)
    return OPTIMIZERS[choice.name](choice, _base_kwargs(stage), list(params), class_counts)


def stage_loss(stage: Stage1Config | Stage2Config) -> LossConfig:
    """The loss the stage's criterion is built from: ``stage1.loss`` or ``stage2.method.loss``; CC-SAM's
    stage 2 computes its own adversarial loss, so its criterion is plain CE (unused)."""
    return stage.loss if stage.loss is not None else LossConfig()


def prepare_stage2(model: Classifier, cfg: RunConfig) -> TrainableParameters:
    """Freeze the backbone, set up the stage-2 head, and return the parameters stage 2 trains.

    ``reinit_head`` gives cRT's fresh head; ``lws`` (the method, or ``retrain`` with ``lws=true``) wraps
    the linear head in learnable per-class scales (its linear weights frozen, or trained too with
    ``retrain``: then two parameter groups, the head's at ``head_lr_factor`` times the rate);
    ``spectral_norm`` normalises the head; ``train_bn`` re-enables the BatchNorm affine parameters.
    """
    stage2 = cfg.stage2
    method = stage2.method
    model.freeze_backbone()
    if isinstance(method, RetrainStage2) and method.reinit_head:
        old = model.head
        if isinstance(old, CosineHead):
            model.head = CosineHead(old.in_features, old.out_features, scale=old.scale,
                                    device=old.weight.device, dtype=old.weight.dtype)
        else:
            model.reset_head()
    if stage2.scales_head and not isinstance(model.head, LWSHead):
        model.head = LWSHead(model.head, train_linear=isinstance(method, RetrainStage2))
    if stage2.spectral_norm:
        apply_spectral_norm(model.head)
    frozen = set(model.frozen_prefix_modules())  # model.train_from: that prefix stays as it is
    bn = [p for m in model.backbone.modules() if m not in frozen and isinstance(m, nn.modules.batchnorm._BatchNorm)
          for p in m.parameters()] if stage2.train_bn else []
    for p in bn:
        p.requires_grad_(True)
    if isinstance(method, RetrainStage2) and method.lws:
        head = model.head
        assert isinstance(head, LWSHead)
        return [{"params": head.linear_parameters(), "lr_factor": method.head_lr_factor},
                {"params": [head.scales, *bn], "lr_factor": 1.0}]
    return [*model.head_parameters(), *bn]
