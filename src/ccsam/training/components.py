"""Config -> parts: criterion, head, optimiser, and the model changes of each stage.

A method is a composition of these parts chosen by the typed config; the engine assembles them and
never branches on a method name elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, Optimizer

from ccsam.config.schema import LossConfig, ModelConfig, RunConfig, Stage1Config, Stage2Config
from ccsam.losses import DeferredReweighting, build_loss
from ccsam.losses.logit_adjustment import posthoc_logit_adjustment
from ccsam.models import Classifier
from ccsam.models.heads import CosineHead, LWSHead, TauNormHead
from ccsam.optim.flattening import apply_spectral_norm
from ccsam.optim.imbsam import ImbSAM
from ccsam.optim.sam import SAM


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


def _base_kwargs(stage: Stage1Config | Stage2Config) -> dict[str, Any]:
    return {"lr": stage.lr, "momentum": stage.momentum, "weight_decay": stage.weight_decay,
            "nesterov": stage.nesterov}


def build_optimizer(stage: Stage1Config | Stage2Config, params: Iterable[nn.Parameter],
                    class_counts: torch.Tensor) -> Optimizer:
    """SGD with momentum, or SAM / ASAM / ImbSAM wrapped around it (stage 1 only)."""
    params = list(params)
    choice = getattr(stage, "optimizer", "sgd")
    if choice == "sgd":
        return SGD(params, **_base_kwargs(stage))
    if choice == "imbsam":
        return ImbSAM(params, SGD, class_counts.cpu(), rho=stage.rho,
                      tail_threshold=stage.imbsam_tail_threshold, **_base_kwargs(stage))
    return SAM(params, SGD, rho=stage.rho, adaptive=choice == "asam", eta=stage.asam_eta, **_base_kwargs(stage))


def _batch_norm_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters()]


def prepare_stage2(model: Classifier, cfg: RunConfig) -> list[nn.Parameter]:
    """Freeze the backbone, set up the stage-2 head, and return the parameters stage 2 trains.

    ``reinit_head`` gives cRT's fresh head; ``lws`` wraps the linear head in learnable per-class scales;
    ``train_bn`` re-enables the BatchNorm affine parameters (MiSLAS shift learning).
    """
    stage2 = cfg.stage2
    model.freeze_backbone()
    if stage2.method == "retrain" and stage2.reinit_head:
        old = model.head
        if isinstance(old, CosineHead):
            model.head = CosineHead(old.in_features, old.out_features, scale=old.scale,
                                    device=old.weight.device, dtype=old.weight.dtype)
        else:
            model.reset_head()
    if stage2.method == "lws" and not isinstance(model.head, LWSHead):
        model.head = LWSHead(model.head)
    if stage2.spectral_norm:
        apply_spectral_norm(model.head)
    params = list(model.head_parameters())
    if stage2.train_bn:
        bn = _batch_norm_parameters(model.backbone)
        for p in bn:
            p.requires_grad_(True)
        params += bn
    return params


def prediction_head(model: Classifier, cfg: RunConfig) -> nn.Module:
    """The head used to predict: the trained one, or its tau-normalised copy (Kang et al. 2020)."""
    if cfg.eval.tau_norm is not None:
        return TauNormHead.from_linear(model.head, cfg.eval.tau_norm)
    return model.head


def adjust_logits(logits: torch.Tensor, cfg: RunConfig, class_counts: torch.Tensor) -> torch.Tensor:
    """Prediction-time logits: ``eval.logit_scale`` * z, then post-hoc logit adjustment z - tau log pi
    (Menon et al. 2021) when ``eval.posthoc_tau > 0``."""
    if cfg.eval.logit_scale != 1.0:
        logits = logits * cfg.eval.logit_scale
    if cfg.eval.posthoc_tau > 0:
        return posthoc_logit_adjustment(logits, class_counts.to(logits.device), cfg.eval.posthoc_tau)
    return logits
