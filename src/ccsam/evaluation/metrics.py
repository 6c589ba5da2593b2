"""Classification metrics for long-tailed recognition: top-1, per-class and many/medium/few-shot accuracy.

Shot groups follow the OLTR / decoupling convention (Liu et al. 2019; Kang et al. 2020; ``ccsam-spec.md``
section 3.1): with ``n_c`` the number of *training* samples of class c,

    many = {c : n_c > 100},   few = {c : n_c < 20},   medium = the rest (20 <= n_c <= 100).

The released CC-SAM code uses ``n_c >= 100`` and ``n_c <= 20`` instead (spec section 6 item 8); for
integer counts that is ``many_threshold=99, few_threshold=21``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ccsam.evaluation.calibration import _check_logits_labels, expected_calibration_error

__all__ = ["classification_report", "per_class_accuracy", "predicted_classes", "shot_groups", "valid_logit_rows"]

_GROUPS = ("many", "medium", "few")


def shot_groups(
    class_counts: Tensor | Sequence[int], many_threshold: int = 100, few_threshold: int = 20
) -> dict[str, Tensor]:
    """Boolean class masks ``many: n_c > many_threshold``, ``few: n_c < few_threshold``, ``medium``: rest.

    Args:
        class_counts: ``[C]`` training samples per class.
        many_threshold: a class is many-shot when its count is strictly above this.
        few_threshold: a class is few-shot when its count is strictly below this.

    Returns:
        ``{"many": mask, "medium": mask, "few": mask}``, each a ``[C]`` bool tensor; every class is in
        exactly one group.

    Example:
        >>> shot_groups([200, 100, 20, 5])["medium"]
        tensor([False,  True,  True, False])
    """
    if few_threshold > many_threshold:
        raise ValueError(f"few_threshold ({few_threshold}) must not exceed many_threshold ({many_threshold})")
    counts = torch.as_tensor(class_counts)
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got shape {tuple(counts.shape)}")
    if counts.dtype == torch.bool or counts.dtype.is_complex:
        raise ValueError(f"class_counts must be numeric, got {counts.dtype}")
    finite = bool(torch.isfinite(counts).all()) if counts.dtype.is_floating_point else True
    if not finite or bool((counts < 0).any()):
        raise ValueError("class_counts must be finite and non-negative")
    many = counts > many_threshold
    few = counts < few_threshold
    return {"many": many, "medium": ~(many | few), "few": few}


def valid_logit_rows(logits: Tensor) -> Tensor:
    """``[N]`` bool: rows with a defined softmax, i.e. no NaN, no ``+inf`` and at least one logit above
    ``-inf``. A ``-inf`` logit is a class ruled out (probability 0), which leaves the row valid; a NaN or
    ``+inf`` (``inf - inf`` in the softmax) or an all ``-inf`` row has no defined prediction.

    Example:
        >>> inf = float("inf")
        >>> valid_logit_rows(torch.tensor([[2.0, -inf], [float("nan"), 1.0], [inf, 0.0], [-inf, -inf]]))
        tensor([ True, False, False, False])
    """
    return ~(torch.isnan(logits).any(dim=1) | torch.isposinf(logits).any(dim=1) | torch.isneginf(logits).all(dim=1))


def predicted_classes(logits: Tensor) -> Tensor:
    """``argmax_k z_ik`` per row, or ``-1`` (no prediction, never correct) where the row is not valid
    (:func:`valid_logit_rows`): the argmax of a NaN row is an arbitrary index, which would count as right
    by chance. Such a row's softmax is NaN too, so NLL and ECE are NaN with it: all metrics agree.

    Example:
        >>> predicted_classes(torch.tensor([[2.0, 0.0], [float("nan"), 1.0], [1.0, -float("inf")]]))
        tensor([ 0, -1,  0])
    """
    predictions = logits.argmax(dim=1)
    return torch.where(valid_logit_rows(logits), predictions, torch.full_like(predictions, -1))


def per_class_accuracy(logits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-class recall ``acc_c = #{i : y_i = c, argmax_k z_ik = c} / #{i : y_i = c}``, shape ``[C]``.

    Classes with no sample in ``labels`` get NaN. Ties in the argmax go to the lowest class index; a row
    with a non-finite logit is wrong (:func:`predicted_classes`). The result is float32 on the logits' device.

    Example:
        >>> per_class_accuracy(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), 2)
        tensor([0.5000,    nan])
    """
    logits = _check_logits_labels(logits, labels)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes != logits.shape[1]:
        raise ValueError(f"num_classes ({num_classes!r}) must equal logits.shape[1] ({logits.shape[1]})")
    hits = labels[predicted_classes(logits) == labels]
    # Integer bincounts only: deterministic on every device.
    total = torch.bincount(labels, minlength=num_classes).float()
    correct = torch.bincount(hits, minlength=num_classes).float()
    return correct / total  # 0 / 0 = NaN for absent classes


def shot_group_means(rates: Tensor, groups: dict[str, Tensor]) -> dict[str, float | None]:
    """Per shot group (:func:`shot_groups`), the float64 mean of the per-class ``rates`` ``[C]`` over the
    group's classes whose rate is defined (not NaN, i.e. the class has samples); ``None`` for a group
    with no such class."""
    means: dict[str, float | None] = {}
    for name in _GROUPS:
        group_rates = rates[groups[name].to(rates.device)]
        group_rates = group_rates[~group_rates.isnan()]
        means[name] = float(group_rates.cpu().double().mean()) if group_rates.numel() else None
    return means


def _nan_to_none(values: Tensor) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def classification_report(
    logits: Tensor,
    labels: Tensor,
    class_counts: Tensor | Sequence[int],
    *,
    many_threshold: int = 100,
    few_threshold: int = 20,
    ece_bins: int = 15,
) -> dict:
    """Top-1, shot-group accuracies, NLL and ECE of a set of predictions, as plain Python values.

    All accuracies are fractions in ``[0, 1]``.

    - ``top1``: sample accuracy ``(1/N) sum_i [argmax_k z_ik = y_i]`` (a row with a NaN or ``+inf`` logit,
      or only ``-inf`` ones, is wrong; ``nll`` and ``ece`` are then NaN, written as ``null``; a ``-inf``
      logit alone rules its class out, and on the label it makes ``nll`` infinite).
    - ``many`` / ``medium`` / ``few``: mean of ``per_class_accuracy`` over the group's classes that occur
      in ``labels`` (the class-balanced mean of OLTR ``shot_acc``); ``None`` when none does.
    - ``nll``: mean cross-entropy ``-(1/N) sum_i log softmax(z_i)_{y_i}``.
    - ``ece``: ``expected_calibration_error(logits, labels, ece_bins)``.
    - ``per_class_accuracy``: list of C values, ``None`` for classes absent from ``labels``.
    - ``group_sizes``: number of classes per group (from ``class_counts``, present in labels or not).
    - ``thresholds``: ``{"many": many_threshold, "few": few_threshold}``.
    - ``num_samples``: N.

    Args:
        logits: ``[N, C]`` test logits.
        labels: ``[N]`` test labels.
        class_counts: ``[C]`` *training* samples per class, which define the shot groups.

    Example:
        >>> logits = torch.tensor([[2.0, 0.5, 0.1], [1.5, 0.2, 0.3], [0.1, 1.0, 0.2],
        ...                        [0.9, 0.8, 0.1], [0.2, 0.1, 1.2], [0.3, 0.2, 0.1]])
        >>> labels = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> class_counts = [500, 50, 10]  # training images per class: one many-, medium-, few-shot class
        >>> report = classification_report(logits, labels, class_counts)
        >>> report["top1"], report["many"], report["medium"], report["few"]
        (0.6666666666666666, 1.0, 0.5, 0.5)
        >>> report["per_class_accuracy"], report["group_sizes"]
        ([1.0, 0.5, 0.5], {'many': 1, 'medium': 1, 'few': 1})
        >>> round(report["nll"], 4), round(report["ece"], 4)
        (0.6796, 0.3835)
        >>> report["num_samples"], report["thresholds"]
        (6, {'many': 100, 'few': 20})
    """
    logits = _check_logits_labels(logits, labels)
    num_classes = logits.shape[1]
    if logits.shape[0] == 0:
        raise ValueError("classification_report needs at least one sample")
    groups = shot_groups(class_counts, many_threshold, few_threshold)
    if groups["many"].numel() != num_classes:
        num_counts = groups["many"].numel()
        raise ValueError(f"class_counts has {num_counts} entries, logits have {num_classes} classes")
    acc = per_class_accuracy(logits, labels, num_classes)
    num_correct = int((predicted_classes(logits) == labels).sum())
    report: dict = {"top1": num_correct / logits.shape[0]}
    report.update(shot_group_means(acc, groups))
    report["nll"] = float(F.cross_entropy(logits, labels))
    report["ece"] = expected_calibration_error(logits, labels, ece_bins)
    report["per_class_accuracy"] = _nan_to_none(acc)
    report["group_sizes"] = {name: int(groups[name].sum()) for name in _GROUPS}
    report["thresholds"] = {"many": many_threshold, "few": few_threshold}
    report["num_samples"] = int(logits.shape[0])
    return report


def confusion_matrix(logits: Tensor, labels: Tensor, num_classes: int) -> list[list[int]]:
    """``M[t][p]`` = number of samples of true class ``t`` predicted as ``p`` (argmax of the logits); rows
    with a non-finite logit have no prediction and are left out."""
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits must be [N, C] with N = len(labels), got {tuple(logits.shape)}")
    predictions = predicted_classes(logits).to(torch.long).cpu()
    kept = predictions >= 0
    flat = labels.to(torch.long).cpu()[kept] * num_classes + predictions[kept]
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).tolist()
