"""Loss registry: a plain dict of frozen entries, one per loss the CLI can name (STYLE G7)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ccsam.losses._common import ClassCounts
from ccsam.losses.ce import CrossEntropyLoss
from ccsam.losses.focal import FocalLoss
from ccsam.losses.gcl import GCLLoss
from ccsam.losses.label_aware_smoothing import LabelAwareSmoothingLoss
from ccsam.losses.ldam import LDAMLoss
from ccsam.losses.logit_adjustment import BalancedSoftmaxLoss, LogitAdjustedLoss
from ccsam.losses.vs import VSLoss

__all__ = ["LOSSES", "LossEntry", "build_loss", "list_losses", "loss_options"]


@dataclass(frozen=True)
class LossEntry:
    """One registered loss.

    Attributes:
        name: the key used on the command line and in configs.
        builder: the loss class; called as ``builder(class_counts, **kw)`` when ``needs_class_counts``,
            else ``builder(**kw)``.
        description: one line for ``--help`` and ``list_losses()``.
        needs_class_counts: the constructor takes the training-set class counts.
        needs_cosine_head: expects cosine logits in ``[-1, 1]`` (``CosineHead(d, C, scale=1.0)``); the
            loss applies its own scale.
        uses_epoch: has ``set_epoch(epoch)``, to be called at the start of every epoch (DRW).
    """

    name: str
    builder: Callable[..., nn.Module]
    description: str
    needs_class_counts: bool = False
    needs_cosine_head: bool = False
    uses_epoch: bool = False


LOSSES: dict[str, LossEntry] = {
    entry.name: entry
    for entry in (
        LossEntry("ce", CrossEntropyLoss, "softmax cross-entropy (optional label smoothing, class weights)"),
        LossEntry("focal", FocalLoss, "focal loss -(1-p_t)^gamma log p_t (Lin et al. 2017)"),
        LossEntry(
            "ldam",
            LDAMLoss,
            "LDAM margin loss on cosine logits, optional DRW re-weighting (Cao et al. 2019)",
            needs_class_counts=True,
            needs_cosine_head=True,
            uses_epoch=True,
        ),
        LossEntry(
            "balanced_softmax",
            BalancedSoftmaxLoss,
            "CE on z + log n_c (Ren et al. 2020)",
            needs_class_counts=True,
        ),
        LossEntry(
            "logit_adjusted",
            LogitAdjustedLoss,
            "CE on z + tau log pi_c (Menon et al. 2021)",
            needs_class_counts=True,
        ),
        LossEntry(
            "vs",
            VSLoss,
            "vector-scaling loss, CE on z * (n/n_max)^gamma + tau log pi (Kini et al. 2021)",
            needs_class_counts=True,
        ),
        LossEntry(
            "label_aware_smoothing",
            LabelAwareSmoothingLoss,
            "MiSLAS label-aware smoothing, eps by class size (Zhong et al. 2021)",
            needs_class_counts=True,
        ),
        LossEntry(
            "gcl",
            GCLLoss,
            "Gaussian-clouded logits on cosine logits, noise larger for rarer classes (Li et al. 2022)",
            needs_class_counts=True,
            needs_cosine_head=True,
        ),
    )
}


def list_losses() -> list[tuple[str, str]]:
    """Return ``(name, description)`` for every registered loss, sorted by name."""
    return [(name, LOSSES[name].description) for name in sorted(LOSSES)]


def loss_options(name: str) -> list[str]:
    """The keyword options the registered loss ``name`` accepts (its constructor's but ``class_counts``)."""
    return [p for p in inspect.signature(LOSSES[name].builder).parameters if p != "class_counts"]


def build_loss(name: str, class_counts: ClassCounts | None = None, **kwargs: object) -> nn.Module:
    """Build a registered loss.

    ``class_counts`` is required by losses with ``needs_class_counts`` and ignored by the others, so a
    caller may always pass it. Keyword arguments go to the loss constructor; unknown ones raise.

    Example:
        >>> build_loss("ldam", [100, 10], max_margin=0.3).max_margin
        0.3
    """
    entry = LOSSES.get(name) if isinstance(name, str) else None
    if entry is None:
        close = difflib.get_close_matches(str(name), list(LOSSES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown loss {name!r}{hint} (valid: {', '.join(sorted(LOSSES))})")
    accepted = loss_options(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        valid = ", ".join(accepted)
        raise ValueError(f"loss {name!r} got unknown options {', '.join(unknown)} (valid: {valid})")
    if not entry.needs_class_counts:
        return entry.builder(**kwargs)
    if class_counts is None:
        raise ValueError(f"loss {name!r} needs class_counts")
    return entry.builder(class_counts, **kwargs)
