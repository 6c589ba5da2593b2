"""Prediction and evaluation of a model on a split: logits first, then the prediction rule, then metrics.

``predict`` collects the raw logits (eval mode, no augmentation); the prediction rule of the config
(``eval.tau_norm``, ``eval.logit_scale``, ``eval.posthoc_tau``) is applied by :func:`prediction_head`
and :func:`adjust_logits`; :func:`evaluate_split` reduces the result with the metric functions. Training,
re-evaluation (``ccsam eval``) and the analyses all predict through here.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import torch
from torch import nn

from ccsam.config.schema import RunConfig
from ccsam.data.arrays import ImageArrays
from ccsam.data.batches import split_batches
from ccsam.data.build import LongTailData
from ccsam.data.image_files import ImageFiles
from ccsam.distributed.evaluation import gather_predictions, local_split
from ccsam.evaluation.calibration import reliability_bins
from ccsam.evaluation.metrics import classification_report, confusion_matrix
from ccsam.evaluation.open_set import open_set_report, with_open_samples
from ccsam.losses.logit_adjustment import posthoc_logit_adjustment
from ccsam.models import Classifier
from ccsam.models.bn import eval_mode
from ccsam.models.heads import TauNormHead

__all__ = [
    "adjust_logits",
    "balanced_accuracy",
    "evaluate_split",
    "open_set_results",
    "predict",
    "prediction_head",
    "split_logits",
]


class _Runtime(Protocol):
    """What prediction needs of :class:`ccsam.training.precision.Runtime`."""

    @property
    def channels_last(self) -> bool: ...

    def autocast(self) -> contextlib.AbstractContextManager[object]: ...


@torch.no_grad()
def predict(
    model: Classifier,
    arrays: ImageArrays | ImageFiles,
    batch_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    runtime: _Runtime | None = None,
    head: nn.Module | None = None,
) -> torch.Tensor:
    """Logits [N, C] (fp32) of the model in eval mode over a whole split (no augmentation).

    ``head`` replaces ``model.head`` for prediction (e.g. a tau-normalised copy). Under torchrun each
    rank predicts its block of the split and the blocks are gathered (:mod:`ccsam.distributed.evaluation`).
    """
    full = arrays
    arrays = local_split(full)
    memory_format = (
        torch.channels_last if runtime is not None and runtime.channels_last else torch.contiguous_format
    )
    autocast = runtime.autocast if runtime is not None else contextlib.nullcontext
    with eval_mode(model), autocast():
        device = next(model.parameters()).device
        head = model.head if head is None else head
        outputs = [
            head(model.features(x.to(device)))
            for x, _ in split_batches(arrays, batch_size, mean, std, memory_format, device)
        ]
    if not len(full):
        return torch.empty(0, model.num_classes)
    local = torch.cat(outputs).float() if outputs else torch.empty(0, model.num_classes, device=device)
    return gather_predictions(local)


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


def split_logits(
    model: Classifier,
    arrays: ImageArrays | ImageFiles,
    data: LongTailData,
    cfg: RunConfig,
    runtime: _Runtime | None = None,
) -> torch.Tensor:
    """The prediction-time logits [N, C] of ``model`` on one split, on the CPU: the prediction head
    (:func:`prediction_head`) followed by :func:`adjust_logits`."""
    logits = predict(
        model, arrays, cfg.data.eval_batch_size, data.mean, data.std, runtime, head=prediction_head(model, cfg)
    )
    return adjust_logits(logits, cfg, data.class_counts).cpu()


def evaluate_split(
    model: Classifier,
    arrays: ImageArrays | ImageFiles,
    data: LongTailData,
    cfg: RunConfig,
    runtime: _Runtime | None = None,
    details: bool = False,
    logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on one split (top-1, many/medium/few, per-class accuracy, ECE, NLL); with
    ``details`` also the reliability-diagram bins and, up to ``eval.confusion_max_classes`` classes, the
    confusion matrix. ``logits``: the split's :func:`split_logits` when the caller already has them."""
    if logits is None:
        logits = split_logits(model, arrays, data, cfg, runtime)
    labels = arrays.labels.cpu()
    report = classification_report(
        logits,
        labels,
        data.class_counts,
        many_threshold=cfg.eval.many_threshold,
        few_threshold=cfg.eval.few_threshold,
        ece_bins=cfg.eval.ece_bins,
    )
    if details:
        if data.num_classes <= cfg.eval.confusion_max_classes:  # C^2 entries: 66M at iNat's 8142
            report["confusion_matrix"] = confusion_matrix(logits, labels, data.num_classes)
        report["reliability"] = reliability_bins(logits, labels, cfg.eval.ece_bins)
    return report


def open_set_results(
    model: Classifier,
    test: ImageArrays | ImageFiles,
    open_images: ImageArrays | ImageFiles,
    data: LongTailData,
    cfg: RunConfig,
    runtime: _Runtime | None = None,
    test_logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    """OLTR open-set metrics (``eval.open_set``): the test split plus the ``_open`` images labelled -1,
    rejection below ``eval.open_threshold`` (:func:`ccsam.evaluation.open_set.open_set_report`).
    ``test_logits``: the test split's :func:`split_logits` when the caller already has them."""
    if test_logits is None:
        test_logits = split_logits(model, test, data, cfg, runtime)
    open_logits = split_logits(model, open_images, data, cfg, runtime)
    merged, labels = with_open_samples(test_logits, test.labels.cpu(), open_logits)
    return open_set_report(
        merged,
        labels,
        data.class_counts,
        threshold=cfg.eval.open_threshold,
        many_threshold=cfg.eval.many_threshold,
        few_threshold=cfg.eval.few_threshold,
        variant=cfg.eval.open_f_measure,
    )


def balanced_accuracy(report: dict[str, Any]) -> float:
    """Mean per-class accuracy over the classes present in the split (the validation selection metric)."""
    values = [v for v in report["per_class_accuracy"] if v is not None]
    return sum(values) / len(values) if values else float("nan")
