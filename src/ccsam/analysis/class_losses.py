"""Per-class losses of a trained model and their shot-group summaries, shared by the analyses
(:mod:`ccsam.analysis.probe`, :mod:`ccsam.analysis.landscape`, :mod:`ccsam.analysis.hessian`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.checks import check_int
from ccsam.data.arrays import ImageArrays
from ccsam.data.augment import normalize
from ccsam.data.batches import split_batches
from ccsam.data.long_tail import Split
from ccsam.evaluation import shot_groups
from ccsam.models.bn import eval_mode

__all__ = [
    "GROUPS",
    "class_loss_sums",
    "eval_mode",
    "group_losses",
    "group_masks",
    "group_members",
    "json_float",
    "model_device_dtype",
]

GROUPS = ("many", "medium", "few")


def model_device_dtype(model: nn.Module, fallback: torch.device) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first floating-point parameter (``fallback`` / float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return fallback, torch.float32


def json_float(x: Tensor | float) -> float | None:
    """A Python float, or None where the value is NaN / infinite (an empty group, a diverged loss)."""
    v = float(x)
    return v if math.isfinite(v) else None


def split_device(split: Split) -> torch.device:
    """Where a split's images are: the device of in-memory arrays, the CPU for image files."""
    return split.images.device if isinstance(split, ImageArrays) else torch.device("cpu")


def normalized_images(
    split: Split, index: Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> Tensor:
    """The un-augmented images ``split[index]`` normalised with ``mean`` / ``std``, float32 on ``device``:
    gathered from memory, or decoded from their files with the test transform (as in evaluation)."""
    if isinstance(split, ImageArrays):
        return normalize(split.images[index], tuple(mean), tuple(std)).to(device)
    chosen = split.subset(index)
    batches = split_batches(chosen, max(len(chosen), 1), tuple(mean), tuple(std), device=device)
    return torch.cat([inputs.to(device) for inputs, _ in batches])


def class_loss_sums(
    model: nn.Module,
    arrays: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """Per-class sum of the cross-entropy ``sum_{i: y_i = c} -log softmax(f(x_i))_c`` and class counts.

    Eval mode, no autograd; inputs go to the model's device and dtype. ``arrays`` is an in-memory split or
    image files (decoded batch by batch with the test transform, :func:`ccsam.data.batches.split_batches`);
    open-set images (label -1) are left out. Returns float64 sums ``[C]`` and int64 counts ``[C]`` on the
    model's device (``C = arrays.num_classes``).
    """
    check_int("batch_size", batch_size, low=1)
    if len(arrays) == 0:
        raise ValueError("arrays holds no images; pass a non-empty data set")
    device, dtype = model_device_dtype(model, split_device(arrays))
    num_classes = arrays.num_classes
    sums = torch.zeros(num_classes, dtype=torch.float64, device=device)
    with eval_mode(model), torch.no_grad():
        for inputs, labels in split_batches(arrays, batch_size, tuple(mean), tuple(std), device=device):
            known = labels >= 0
            inputs = inputs[known].to(device=device, dtype=dtype)
            labels = labels[known].to(device)
            logits = model(inputs)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            ce = F.cross_entropy(logits, labels, reduction="none")
            sums.index_add_(0, labels, ce.to(torch.float64))
    labels = arrays.labels.to(device)
    counts = torch.bincount(labels[labels >= 0], minlength=num_classes)
    return sums, counts


def group_losses(sums: Tensor, counts: Tensor, masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """``overall = sum_c S_c / sum_c n_c`` (per sample); ``group = mean_{c in group, n_c > 0} S_c / n_c``.

    A group none of whose classes has a sample gets NaN.
    """
    per_class = sums / counts  # NaN (0 / 0) for classes without samples
    out = {"overall": sums.sum() / counts.sum()}
    for group in GROUPS:
        out[group] = torch.nanmean(per_class[masks[group].to(per_class.device)])
    return out


def group_masks(
    class_counts: Tensor | Sequence[int], num_classes: int, many_threshold: int, few_threshold: int
) -> dict[str, Tensor]:
    """:func:`ccsam.evaluation.shot_groups` after checking there is one count per class."""
    counts = torch.as_tensor(class_counts)
    if counts.dim() != 1 or counts.numel() != num_classes:
        raise ValueError(f"class_counts needs one entry per class ({num_classes}), got {tuple(counts.shape)}")
    return shot_groups(counts, many_threshold=many_threshold, few_threshold=few_threshold)


def group_members(masks: dict[str, Tensor]) -> dict[str, list[int]]:
    """The class indices of each shot group, JSON-ready."""
    return {g: [int(i) for i in torch.nonzero(masks[g]).flatten()] for g in GROUPS}
