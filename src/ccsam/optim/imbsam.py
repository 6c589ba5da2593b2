"""ImbSAM (Zhou, Qu, Xu, Shen, "ImbSAM: A Closer Look at Sharpness-Aware Minimization in
Class-Imbalanced Recognition", ICCV 2023): sharpness-aware minimisation restricted to the tail classes.

With training counts ``n_c`` and threshold ``eta`` (``tail_threshold``, 20 by default), class ``c`` is
*tail* if ``n_c < eta`` and *head* otherwise. The batch loss ``L = (1/B) sum_i l_i`` is split as

    L_head(w) = (1/B) sum_{i: n_{y_i} >= eta} l_i(w),    L_tail(w) = (1/B) sum_{i: n_{y_i} < eta} l_i(w)

(both divided by the whole batch size ``B``, so ``L = L_head + L_tail``, as the authors' code does). A
class-weighted batch loss ``L = sum_i w_{y_i} l_i / sum_i w_{y_i}`` (DRW, LDAM-DRW, ``CrossEntropyLoss(weight=...)``)
is split by weight share instead, ``L_head = sum_{i: n_{y_i} >= eta} w_{y_i} l_i / sum_i w_{y_i}`` and
``L_tail`` likewise, so again ``L = L_head + L_tail`` (the training engine does this through
:func:`ccsam.training.objectives.mixup_loss` and :func:`ccsam.losses.effective_class_weights`; with
:func:`split_head_tail_loss` pass ``B * w_{y_i} l_i / sum_j w_{y_j}`` as the per-sample losses). One step applies

    g = grad L_head(w) + lambda * grad L_tail(w + eps_tail),    eps_tail = rho * g_tail / ||g_tail||,
    g_tail = grad L_tail(w)

through the base optimizer, with ``lambda = tail_weight``: 1 (default) is the paper's sum of the two
parts; the authors' code (``utils/trainval.py`` of cool-xuan/Imbalanced_SAM, and its MindSpore port)
multiplies the perturbed tail loss by 2, which is ``tail_weight = 2`` (the direction ``eps_tail`` does
not depend on it). With no tail sample in the batch this is the base optimizer on ``L``; with every
class tail (``eta`` above every count) and ``lambda = 1`` it is SAM on ``L``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.amp import GradScaler
from torch.optim import Optimizer

from ccsam.optim.sam import SAM

__all__ = ["ImbSAM", "split_head_tail_loss"]


def split_head_tail_loss(
    losses: Tensor, labels: Tensor, class_counts: Tensor | Sequence[int], tail_threshold: float = 20
) -> tuple[Tensor, Tensor]:
    """Split per-sample losses into ``(L_head, L_tail)``, each a sum divided by the batch size ``B``.

    ``L_head = (1/B) sum_{i: n_{y_i} >= eta} l_i`` and ``L_tail = (1/B) sum_{i: n_{y_i} < eta} l_i``
    with ``eta = tail_threshold`` (Zhou et al. 2023, sec. 4), so ``L_head + L_tail = mean(losses)``. Both
    stay differentiable (an empty part is a zero with a graph) and no host synchronisation happens.

    Args:
        losses: Per-sample losses ``[B]`` (``reduction="none"``).
        labels: Integer labels ``[B]``.
        class_counts: Training count per class ``[C]``.
        tail_threshold: ``eta``; classes with fewer training samples are tail.

    Returns:
        ``(head_loss, tail_loss)``, two 0-d tensors.

    Example:
        >>> split_head_tail_loss(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]), torch.tensor([50, 5]))
        (tensor(0.5000), tensor(1.5000))
    """
    if losses.dim() != 1 or labels.shape != losses.shape:
        raise ValueError(f"losses and labels must be [B], got {tuple(losses.shape)}, {tuple(labels.shape)}")
    class_counts = torch.as_tensor(class_counts)
    if class_counts.dim() != 1:
        raise ValueError(f"class_counts must be [C], got shape {tuple(class_counts.shape)}")
    is_tail = (class_counts < tail_threshold).to(labels.device)[labels]
    zero = losses.new_zeros(())
    batch = max(losses.shape[0], 1)
    # torch.where (not boolean indexing): no device->host sync, and a non-finite loss of one part
    # cannot leak into the other as 0 * inf.
    return torch.where(is_tail, zero, losses).sum() / batch, torch.where(is_tail, losses, zero).sum() / batch


class ImbSAM(SAM):
    """ImbSAM: SAM on the tail-class loss, plain gradient on the head-class loss (same contract as SAM).

    The extra move :meth:`store_head_grad` keeps ``grad L_head(w)``; :meth:`first_step` perturbs along
    the tail gradient and :meth:`second_step` adds the kept head gradient before the base step.

    Args:
        params: Parameters or parameter groups (a group may set its own ``rho``).
        base_optimizer_cls: The optimizer class that applies the update, e.g. ``torch.optim.SGD``.
        class_counts: Training count per class ``[C]`` (G13: explicit data, copied here).
        rho: Radius of the tail perturbation (0.05 in the paper).
        tail_weight: ``lambda``, the weight of the tail gradient at ``w + eps`` (1: the paper's sum;
            2: the authors' code). :meth:`second_step` applies it to ``p.grad`` when the head gradient
            was kept with :meth:`store_head_grad`; a loop that puts the head gradient into ``p.grad``
            itself (the training engine) multiplies the perturbed tail loss by it instead.
        tail_threshold: The paper's ``eta``: classes with ``n_c < tail_threshold`` are tail (20).
            Named apart from SAM's ``eta``, which is ASAM's offset.
        **base_kwargs: Passed to ``base_optimizer_cls``.

    Example:
        One step (``loss_fn`` with ``reduction="none"``)::

            opt = ImbSAM(model.parameters(), torch.optim.SGD, class_counts, rho=0.05, lr=0.01, momentum=0.9)
            head, tail = opt.split_loss(loss_fn(model(x), y), y)       # at w
            head.backward(retain_graph=True)
            opt.store_head_grad()                                      # keep grad L_head(w); zero p.grad
            tail.backward()
            opt.first_step(zero_grad=True)                             # w <- w + rho g_tail / ||g_tail||
            with bn_stats_frozen(model):
                opt.split_loss(loss_fn(model(x), y), y)[1].backward()  # grad L_tail(w + eps)
            opt.second_step(zero_grad=True)                            # restore w; step with head + tail

        fp16: backpropagate ``scaler.scale(...)`` of all three losses (one scale per step, so the kept
        head gradient and the tail gradient add up consistently) and pass ``grad_scaler`` as for SAM.
        DDP: one forward cannot feed two synchronised backwards. The training engine
        (:func:`ccsam.training.updates.imbsam_update`) takes the head gradient rank-local with
        ``torch.autograd.grad`` instead of :meth:`store_head_grad`, lets the tail backward all-reduce
        (the global ``g_tail`` defines ``eps``) and puts the head gradient into ``p.grad`` before the
        second backward, whose all-reduce then averages the sum: the exact single-device update.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[Optimizer],
        class_counts: Tensor | Sequence[int],
        rho: float = 0.05,
        tail_threshold: float = 20,
        tail_weight: float = 1.0,
        **base_kwargs: Any,
    ) -> None:
        if "eta" in base_kwargs or "adaptive" in base_kwargs:
            raise ValueError("ImbSAM takes no ASAM options; the paper's eta is `tail_threshold`")
        counts = torch.as_tensor(class_counts).detach().clone()
        if counts.dim() != 1 or counts.numel() == 0 or not bool(((counts >= 0) & (counts < math.inf)).all()):
            shape = tuple(counts.shape)
            raise ValueError(f"class_counts must be a non-empty 1-D tensor of finite counts >= 0, got shape {shape}")
        if not tail_threshold >= 0:
            raise ValueError(f"tail_threshold must be >= 0, got {tail_threshold}")
        if isinstance(tail_weight, bool) or not 0 < tail_weight < math.inf:
            raise ValueError(f"tail_weight must be a finite number > 0, got {tail_weight!r}")
        super().__init__(params, base_optimizer_cls, rho=rho, **base_kwargs)
        self.class_counts = counts
        self.tail_threshold = tail_threshold
        self.tail_weight = float(tail_weight)
        self._head_grads: dict[Tensor, Tensor] = {}

    @property
    def tail_classes(self) -> Tensor:
        """Boolean mask ``[C]``: ``n_c < tail_threshold``."""
        return self.class_counts < self.tail_threshold

    def split_loss(self, losses: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(L_head, L_tail)`` of per-sample ``losses`` with this optimizer's counts and threshold."""
        return split_head_tail_loss(losses, labels, self.class_counts, self.tail_threshold)

    @torch.no_grad()
    def store_head_grad(self) -> None:
        """Keep the current ``p.grad`` (``grad L_head(w)``) for :meth:`second_step`, then zero ``p.grad``."""
        if self._backup is not None:
            raise RuntimeError("store_head_grad() must come before first_step(): the head gradient is at w")
        # A copy, not the tensor itself: under DDP p.grad may be a view of a bucket the next backward reuses.
        self._head_grads = {
            p: p.grad.detach().clone() for g in self.param_groups for p in g["params"] if p.grad is not None
        }
        self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, grad_scaler: GradScaler | None = None) -> None:
        """``p.grad = lambda * p.grad + grad L_head(w)`` (if the head gradient was stored), restore ``w``
        bit-exactly, base step (see SAM)."""
        if self._backup is None:
            raise RuntimeError("second_step() called without first_step()")
        for p, head in self._head_grads.items():
            if p.grad is None:
                p.grad = head
            else:
                p.grad.mul_(self.tail_weight).add_(head)  # x * 1.0 is exact: lambda = 1 adds bit for bit
        self._head_grads = {}
        super().second_step(zero_grad=zero_grad, grad_scaler=grad_scaler)
