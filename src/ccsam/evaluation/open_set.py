"""Open long-tailed recognition (OLTR protocol, Liu et al. CVPR 2019; ``ccsam-spec.md`` section 3.3).

The test set is the closed test split plus the ``*_open.txt`` images (ImageNet-LT: extra ImageNet-2010
classes; Places-LT: Places-Extra69), which carry the label ``-1`` (:data:`OPEN_LABEL`). A sample is
*rejected* (predicted ``-1``) when its largest softmax probability is below the threshold ``theta``
(OLTR: 0.1); otherwise the prediction is the argmax. A row with a NaN or ``+inf`` logit (or only ``-inf``
ones; :func:`~ccsam.evaluation.metrics.valid_logit_rows`) gets no prediction
(:data:`NO_PREDICTION`, ``-2``): wrong for a known sample and not rejected for an open one, so a model
that outputs NaN never scores by chance.

F-measure of the OLTR code (``F_measure(openset=True)`` in the OLTR repository's ``utils.py``), over
all samples:

* ``TP`` = known samples predicted as their class;
* ``FP`` = known samples predicted as anything else. Variant ``"oltr"`` (the repository since the
  2020-01-29 fix, the one the TPAMI 2022 numbers use) counts a *rejected* known sample as a false
  positive; variant ``"oltr_2019"`` (before that commit) does not count it at all;
* ``FN`` = open samples that are not rejected;
* ``P = TP / (TP + FP)``, ``R = TP / (TP + FN)``, ``F = 2 P R / (P + R)``; a zero denominator gives 0.

Note: ``ccsam-spec.md`` section 3.3 describes the two variants the other way round; the repository's
history (commit 7decb38 removed ``preds[i] != -1`` from the FP condition) is what is implemented here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ccsam.evaluation.metrics import predicted_classes, shot_group_means, shot_groups, valid_logit_rows

__all__ = [
    "NO_PREDICTION",
    "OPEN_LABEL",
    "FMeasureVariant",
    "open_set_f_measure",
    "open_set_predictions",
    "open_set_report",
    "with_open_samples",
]

OPEN_LABEL = -1
#: The open-set prediction of a row with a non-finite logit: never correct, never a rejection.
NO_PREDICTION = -2
FMeasureVariant = Literal["oltr", "oltr_2019"]


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0] or labels.dim() != 1:
        raise ValueError(
            f"logits must be [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers (-1 = open), got {labels.dtype}")
    if labels.numel() and (int(labels.min()) < OPEN_LABEL or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"labels must lie in [-1, {logits.shape[1]}), got [{int(labels.min())}, {int(labels.max())}]"
        )


def open_set_predictions(logits: Tensor, threshold: float = 0.1) -> Tensor:
    """``argmax_k softmax(z_i)_k``, replaced by ``-1`` where ``max_k softmax(z_i)_k < threshold`` and by
    ``-2`` (:data:`NO_PREDICTION`) where ``z_i`` has no defined softmax (a NaN or ``+inf``, or all ``-inf``).

    Example:
        >>> nan = float("nan")
        >>> open_set_predictions(torch.tensor([[4.0, 0.0], [0.0, 0.0], [nan, 0.0]]), threshold=0.6).tolist()
        [0, -1, -2]
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    confidence, predictions = torch.softmax(logits.float(), dim=1).max(dim=1)
    predictions = torch.where(confidence < threshold, torch.full_like(predictions, OPEN_LABEL), predictions)
    return torch.where(valid_logit_rows(logits), predictions, torch.full_like(predictions, NO_PREDICTION))


def open_set_f_measure(predictions: Tensor, labels: Tensor, variant: FMeasureVariant = "oltr") -> float:
    """OLTR's open-set F-measure ``2PR / (P + R)`` of predictions (``-1`` = rejected); see the module doc.

    Example:
        >>> # known: correct, wrong, rejected; open: accepted, rejected -> TP 1, FP 2, FN 1
        >>> open_set_f_measure(torch.tensor([0, 1, -1, 0, -1]), torch.tensor([0, 0, 1, -1, -1]))
        0.4
    """
    if predictions.shape != labels.shape or labels.dim() != 1:
        raise ValueError(
            f"predictions and labels must be [N], got {tuple(predictions.shape)}, {tuple(labels.shape)}"
        )
    if variant not in ("oltr", "oltr_2019"):
        raise ValueError(f"variant must be 'oltr' or 'oltr_2019', got {variant!r}")
    known = labels != OPEN_LABEL
    wrong = known & (predictions != labels)
    if variant == "oltr_2019":
        wrong = wrong & (predictions != OPEN_LABEL)
    tp = int((known & (predictions == labels)).sum())
    fp = int(wrong.sum())
    fn = int((~known & (predictions != OPEN_LABEL)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _known_class_hit_rates(hits: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per class, the share of its samples in ``labels`` that ``hits``; NaN for a class with none."""
    total = torch.bincount(labels, minlength=num_classes).double()
    return torch.bincount(labels[hits], minlength=num_classes).double() / total


def open_set_report(
    logits: Tensor,
    labels: Tensor,
    class_counts: Tensor | Sequence[int],
    *,
    threshold: float = 0.1,
    many_threshold: int = 100,
    few_threshold: int = 20,
    variant: FMeasureVariant = "oltr",
) -> dict:
    """OLTR open-set metrics of logits over known (label ``c``) and open (label ``-1``) samples.

    - ``f_measure``: :func:`open_set_f_measure` of :func:`open_set_predictions` at ``threshold``.
    - ``closed_top1``: accuracy of the plain argmax on the known samples (no rejection; a row with a
      non-finite logit is wrong, as in :func:`~ccsam.evaluation.metrics.predicted_classes`).
    - ``known_top1``: accuracy on the known samples with rejection (a rejected known sample is wrong),
      OLTR's ``eval_acc_mic_top1`` in open-set mode.
    - ``many`` / ``medium`` / ``few``: class-balanced accuracy with rejection per shot group (OLTR's
      ``shot_acc`` on the open-set predictions), groups from the *training* ``class_counts``.
    - ``open_rejected``: fraction of open samples rejected (OLTR's ``openset_acc``).
    - ``threshold``, ``variant``, ``num_known``, ``num_open``.

    Example:
        >>> logits, labels = with_open_samples(torch.eye(2) * 5, torch.tensor([0, 1]), torch.zeros(1, 2))
        >>> report = open_set_report(logits, labels, [500, 5], threshold=0.6)
        >>> report["f_measure"], report["closed_top1"], report["open_rejected"]
        (1.0, 1.0, 1.0)
    """
    _check(logits, labels)
    labels = labels.to(torch.long).cpu()
    logits = logits.cpu()
    predictions = open_set_predictions(logits, threshold)
    known = labels != OPEN_LABEL
    if not bool(known.any()):
        raise ValueError("open_set_report needs at least one known (label >= 0) sample")
    groups = shot_groups(class_counts, many_threshold, few_threshold)
    if groups["many"].numel() != logits.shape[1]:
        raise ValueError(
            f"class_counts has {groups['many'].numel()} entries, logits have {logits.shape[1]} classes"
        )
    hits = (predictions == labels)[known]
    known_labels = labels[known]
    num_open = int((~known).sum())
    report: dict = {
        "f_measure": open_set_f_measure(predictions, labels, variant),
        "closed_top1": float((predicted_classes(logits[known]) == known_labels).float().mean()),
        "known_top1": float(hits.float().mean()),
    }
    report.update(shot_group_means(_known_class_hit_rates(hits, known_labels, logits.shape[1]), groups))
    report["open_rejected"] = float((predictions[~known] == OPEN_LABEL).float().mean()) if num_open else None
    report.update(threshold=threshold, variant=variant, num_known=int(known.sum()), num_open=num_open)
    return report


def with_open_samples(
    known_logits: Tensor, known_labels: Tensor, open_logits: Tensor
) -> tuple[Tensor, Tensor]:
    """Append the open-set images' logits to the closed test set, labelled ``-1``: ``(logits, labels)``.

    Example:
        >>> logits, labels = with_open_samples(torch.zeros(2, 3), torch.tensor([0, 2]), torch.zeros(1, 3))
        >>> labels.tolist()
        [0, 2, -1]
    """
    if open_logits.dim() != 2 or open_logits.shape[1] != known_logits.shape[1]:
        raise ValueError(f"open logits must be [M, {known_logits.shape[1]}], got {tuple(open_logits.shape)}")
    open_labels = torch.full(
        (open_logits.shape[0],), OPEN_LABEL, dtype=torch.long, device=known_labels.device
    )
    return (
        torch.cat([known_logits, open_logits.to(known_logits.device)]),
        torch.cat([known_labels.to(torch.long), open_labels]),
    )
