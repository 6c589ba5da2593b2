"""CC-SAM for your own training loop, with a davda54/sam-like optimiser API.

The released-code CC-SAM perturbs only the linear head, so its sharpness-aware objective has a closed
form (:func:`ccsam.method.stage1_loss`, the same function the training engine calls) and needs one
forward / backward pass: the optimiser gives you the loss, you back-propagate it, it steps its base
optimiser.

Example:
    >>> import torch
    >>> from ccsam.models import build_model
    >>> model = build_model("small_cnn", in_channels=1, num_classes=3, width=4)
    >>> opt = CCSAM(model.parameters(), torch.optim.SGD, head=model.head, class_counts=[50, 10, 2],
    ...             noise_scale=1e-2, flat_ratio=0.3, lr=0.1, momentum=0.9)
    >>> x, y = torch.randn(8, 1, 8, 8), torch.tensor([0, 0, 0, 0, 1, 1, 2, 0])
    >>> loss = opt.loss(model.features(x), y)
    >>> opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer

from ccsam.method.stage1 import LinearHead, stage1_loss
from ccsam.optim.base import BaseOptimizerWrapper
from ccsam.optim.sam import check_optimizer_class


class CCSAM(BaseOptimizerWrapper):
    """Class-conditional SAM (Zhou et al., CVPR 2023), head-only, released-code semantics.

    ``loss(features, labels)`` returns
    L = (1 - beta) * mean_i l(h(z_i), q_i) + beta * mean_i CE(h_{theta + eps_{y_i}}(z_i), y_i),
    where ``eps_c`` is class ``c``'s closed-form perturbation of the head (radius grows as n_c falls),
    l is soft-target cross-entropy and ``beta = flat_ratio``. ``step`` applies the base optimiser, whose
    ``param_groups`` and ``state`` this object shares (so LR schedulers and checkpoints work as usual).

    Args:
        params: every parameter to optimise (backbone and head).
        base_optimizer_cls: e.g. ``torch.optim.SGD``.
        head: the linear classifier (``weight`` [C, d], ``bias`` [C] or None) whose perturbation is used.
        class_counts: training images per class, [C].
        noise_scale: ``s``, the radius multiplier (released CIFAR configs: 1e-6; first release: 1e-2).
        flat_ratio: ``beta`` in [0, 1].
        **base_kwargs: passed to the base optimiser (lr, momentum, weight_decay, ...).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        base_optimizer_cls: Callable[..., Optimizer],
        *,
        head: LinearHead,
        class_counts: Tensor | Sequence[float],
        noise_scale: float = 1e-6,
        flat_ratio: float = 0.3,
        **base_kwargs: Any,
    ) -> None:
        if not 0.0 <= flat_ratio <= 1.0:
            raise ValueError(f"flat_ratio must lie in [0, 1], got {flat_ratio}")
        if not 0 <= noise_scale < math.inf:
            raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale}")
        _check_linear_head(head)
        counts = torch.as_tensor(class_counts, dtype=torch.float32)
        num_classes = head.weight.shape[0]
        if counts.shape != (num_classes,) or not bool(((counts >= 0) & (counts < math.inf)).all()):
            raise ValueError(f"class_counts must be {num_classes} finite counts >= 0 (one per row of the head), "
                             f"got shape {tuple(counts.shape)}")
        check_optimizer_class(base_optimizer_cls)
        self.base_optimizer = base_optimizer_cls(params, **base_kwargs)
        super().__init__(self.base_optimizer.param_groups, self.base_optimizer.defaults)
        self._share_with_base()
        self.head = head
        self.class_counts = counts
        self.noise_scale = noise_scale
        self.flat_ratio = flat_ratio

    def loss(self, features: Tensor, labels: Tensor, soft_targets: Tensor | None = None) -> Tensor:
        """The CC-SAM stage-1 objective on a batch of features (``soft_targets``: mixup targets, with
        ``labels`` the first mixup label y_a)."""
        if soft_targets is not None and soft_targets.shape != (features.shape[0], self.class_counts.numel()):
            want = (features.shape[0], self.class_counts.numel())
            raise ValueError(f"soft_targets must have shape {want}, got {tuple(soft_targets.shape)}")
        logits = self.head(features)
        clean = F.cross_entropy(logits, soft_targets if soft_targets is not None else labels)
        return stage1_loss(
            clean, features, self.head, labels, self.class_counts.to(features.device),
            flat_ratio=self.flat_ratio, noise_scale=self.noise_scale, soft_targets=soft_targets,
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One step of the base optimiser (the perturbation is already inside the loss)."""
        # torch's stub types a closure as returning float; a Tensor loss is what torch.optim documents
        return self.base_optimizer.step(closure)  # type: ignore[arg-type]


def _check_linear_head(head: Any) -> None:
    """Refuse a head whose logits are not ``W z + b`` (CC-SAM's closed form is for a linear head): probed
    once on random features against ``F.linear`` with its own ``weight`` and ``bias``."""
    weight, bias = getattr(head, "weight", None), getattr(head, "bias", None)
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not callable(head):
        raise ValueError("head must be a linear classifier with a .weight [C, d] (and .bias or None)")
    with torch.no_grad():
        probe = torch.randn(2, weight.shape[1], generator=torch.Generator().manual_seed(0)).to(weight)
        try:
            same = torch.allclose(head(probe), F.linear(probe, weight, bias if isinstance(bias, Tensor) else None),
                                  rtol=1e-4, atol=1e-5)
        except (RuntimeError, TypeError, ValueError):
            same = False
    if not same:
        raise ValueError(f"head {type(head).__name__} does not compute W z + b from its .weight / .bias (e.g. a "
                         "cosine or re-scaled head); CC-SAM's closed form needs a linear head (nn.Linear)")
