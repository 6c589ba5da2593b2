"""Deferred re-weighting (DRW) of any loss (Cao, Wei, Gaidon, Arechiga, Ma, NeurIPS 2019, section 3.3).

DRW trains with the plain loss until ``start_epoch`` and with class-balanced weights from then on. Here
it is a wrapper, so "CE-DRW", "LDAM-DRW" and "LDAM-DRW + SAM" are compositions: ``stage1.loss.name``
picks the loss, ``stage1.loss.drw.start_epoch`` turns the wrapper on, ``stage1.optimizer`` the optimiser.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import Tensor, nn

from ccsam.losses._common import ClassCounts, as_class_counts, check_epoch, check_real
from ccsam.losses.ce import CrossEntropyLoss, _combine
from ccsam.losses.ldam import LDAMLoss
from ccsam.losses.weights import _effective_number_weights

__all__ = ["DeferredReweighting", "GlobalBatchWeightedMean", "effective_class_weights"]


class _EpochAware(Protocol):
    def set_epoch(self, epoch: int) -> None: ...


class DeferredReweighting(nn.Module):
    """``DRW(L)(z, y) = L_w(z, y)`` with ``w = 1`` for ``epoch < start_epoch`` and
    ``w_c = (1 - beta) / (1 - beta^{n_c})`` (effective number, normalised to ``sum_c w_c = C``) after.

    The weights are passed to the wrapped loss as ``loss(logits, targets, class_weight=w)``; every loss
    in :mod:`ccsam.losses` accepts it and reduces as PyTorch's weighted mean
    ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (for the CE-form losses through ``F.cross_entropy(weight=w)``),
    so ``DRW(LDAMLoss(...))`` equals ``LDAMLoss(..., drw_start_epoch=...)`` bit for bit. Before
    ``start_epoch`` the all-ones weights are passed too, as LDAM-DRW does. Call :meth:`set_epoch` at the
    start of every epoch (the training engine does); the weights are a pure function of that epoch.

    Args:
        loss: a loss module whose ``forward`` takes ``class_weight``.
        class_counts: training-set size per class ``[C]``, kept in a buffer.
        start_epoch: first 0-based epoch with class-balanced weights (160 of 200 on CIFAR).
        beta: effective-number ``beta`` in ``[0, 1)``.

    Example:
        >>> from ccsam.losses import CrossEntropyLoss
        >>> ce_drw = DeferredReweighting(CrossEntropyLoss(), [100, 10], start_epoch=160)
        >>> ce_drw.set_epoch(160)
        >>> [round(w, 3) for w in ce_drw.class_weights().tolist()]
        [0.183, 1.817]
    """

    class_counts: Tensor

    def __init__(
        self, loss: nn.Module, class_counts: ClassCounts, start_epoch: int, beta: float = 0.9999
    ) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module) or "class_weight" not in inspect.signature(loss.forward).parameters:
            name = type(loss).__name__
            raise ValueError(f"DRW needs a loss whose forward takes class_weight; {name} does not")
        if getattr(loss, "drw_start_epoch", None) is not None:
            raise ValueError("the wrapped loss already re-weights (drw_start_epoch); set DRW in one place")
        self.loss = loss
        self.register_buffer("class_counts", as_class_counts(class_counts))
        inner = getattr(loss, "class_counts", None)
        if isinstance(inner, Tensor) and inner.shape != self.class_counts.shape:
            raise ValueError(f"DRW has {self.class_counts.numel()} class counts but the wrapped "
                             f"{type(loss).__name__} has {inner.numel()}; give both the same counts")
        self.start_epoch = check_epoch("start_epoch", start_epoch)
        self.beta = check_real("beta", beta, low=0.0, high=1.0, high_open=True)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the 0-based epoch that selects the weights (and pass it on to a wrapped loss that uses it)."""
        self.epoch = check_epoch("epoch", epoch)
        if hasattr(self.loss, "set_epoch"):
            # nn.Module.__getattr__ is typed Tensor | Module; hasattr just found the loss's own set_epoch
            cast(_EpochAware, self.loss).set_epoch(epoch)

    def class_weights(self) -> Tensor:
        """Ones before ``start_epoch``, effective-number weights from it on; float32 ``[C]``."""
        if self.epoch < self.start_epoch:
            return torch.ones_like(self.class_counts)
        return _effective_number_weights(self.class_counts, self.beta)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The wrapped loss of ``logits [B, C]`` against ``targets [B]`` with this epoch's class weights."""
        return self.loss(logits, targets, class_weight=self.class_weights())

    def extra_repr(self) -> str:
        return f"start_epoch={self.start_epoch}, beta={self.beta}"


def effective_class_weights(criterion: nn.Module) -> Tensor | None:
    """The per-class weights ``w_c`` ``[C]`` of ``criterion``'s batch reduction at its current epoch, or
    ``None`` when that reduction is a plain mean.

    A class-weighted criterion reduces a batch as PyTorch's weighted mean
    ``L = sum_i w_{y_i} l_i / sum_i w_{y_i}``; this returns the ``w`` of that formula:

    * :class:`DeferredReweighting` ``(L)``: ``class_weights()`` (ones before ``start_epoch``), times the
      wrapped loss's own weights when it has some (a ``CrossEntropyLoss(weight=v)`` gives ``v * w``, the
      product its ``forward`` uses);
    * :class:`~ccsam.losses.LDAMLoss`: ``class_weights()`` (``None`` without ``drw_start_epoch``);
    * :class:`~ccsam.losses.CrossEntropyLoss` and ``torch.nn.CrossEntropyLoss`` / ``torch.nn.NLLLoss``
      (``reduction="mean"``): their ``weight`` (``None`` when unweighted);
    * any other loss: ``None``. A per-class factor inside each ``l_i`` that the mean does not divide by
      (``FocalLoss(alpha=...)``) is not a reduction weight.

    Used to split a weighted batch loss into parts that add up to it (ImbSAM's head / tail split:
    ``part(mask) = L(rows in mask) * sum_{i in mask} w_{y_i} / sum_i w_{y_i}``).

    Example:
        >>> from ccsam.losses import CrossEntropyLoss
        >>> drw = DeferredReweighting(CrossEntropyLoss(weight=[1.0, 2.0]), [100, 10], start_epoch=1)
        >>> drw.set_epoch(1)
        >>> [round(w, 3) for w in effective_class_weights(drw).tolist()]
        [0.183, 3.635]
    """
    if isinstance(criterion, GlobalBatchWeightedMean):
        return effective_class_weights(criterion.criterion)
    if isinstance(criterion, DeferredReweighting):
        return _combine(effective_class_weights(criterion.loss), criterion.class_weights())
    if isinstance(criterion, LDAMLoss):
        return criterion.class_weights()
    if isinstance(criterion, CrossEntropyLoss):
        return criterion.weight
    if isinstance(criterion, (nn.CrossEntropyLoss, nn.NLLLoss)) and criterion.reduction == "mean":
        return criterion.weight
    return None


class GlobalBatchWeightedMean(nn.Module):
    """This process's share of ``criterion``'s class-weighted mean over the global batch of a process group.

    With ``R`` processes, process ``r`` holding the rows ``B_r`` of the batch and the weight sum
    ``S_r = sum_{i in B_r} w_{y_i}`` (``w`` from :func:`effective_class_weights`), it returns

        ``L_r = (S_r / Sbar) * criterion(rows of r) = sum_{i in B_r} w_{y_i} l_i / Sbar``,
        ``Sbar = (1/R) sum_r S_r = rank_mean(S_r)``,

    so that the mean over processes of ``L_r`` (DistributedDataParallel's gradient average, and the logged
    loss) is the weighted mean of the whole batch ``sum_i w_{y_i} l_i / sum_r S_r`` in value and gradient.
    The mean of the processes' own weighted means would instead weigh every slice equally whatever its
    weight sum. A plain-mean criterion (weights ``None``, e.g. DRW's loss without its wrapper) is called as
    it is, with no collective: over equal slices the mean of the means is already the global mean.

    ``rank_mean`` is a collective (an all-reduce mean over the processes): every process calls this module
    the same number of times per step, whatever its rows. A process whose rows weigh nothing contributes a
    zero with a graph instead of ``0 / 0``.
    """

    def __init__(self, criterion: nn.Module, rank_mean: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.criterion = criterion
        self.rank_mean = rank_mean

    def mean_weight_sum(self, local_sum: Tensor) -> Tensor:
        """``Sbar``, the mean over processes of their weight sums ``S_r`` (a collective)."""
        return self.rank_mean(local_sum.detach().reshape(1))[0]

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        weights = effective_class_weights(self.criterion)
        if weights is None:
            return cast(Tensor, self.criterion(logits, targets))
        dtype = torch.promote_types(logits.dtype, torch.float32)
        local = weights.to(device=logits.device, dtype=dtype)[targets].sum()
        mean_sum = self.mean_weight_sum(local)
        if not bool(local > 0):  # no rows here, or only weightless ones: the criterion would be 0 / 0
            return logits[:0].sum()
        return cast(Tensor, self.criterion(logits, targets)) * (local / mean_sum)
