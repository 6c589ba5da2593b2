"""The CC-SAM stage-1 objective on a linear head, shared by the engine and the user-loop optimiser.

``L = (1 - beta) * L_clean + beta * mean_i criterion(h_{theta + eps_{y_i}}(z_i), y_i)`` (ccsam-spec §1.3),
with ``eps_c`` class ``c``'s closed-form perturbation of the head
(:func:`ccsam.method.head.class_conditional_logits`) and ``beta = flat_ratio``. The clean loss is
the caller's (the engine's is mixup-aware through its criterion, the optimiser's soft-target CE), so
that both apply exactly this one combination.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch.nn.functional as F
from torch import Tensor

from ccsam.method.head import class_conditional_logits
from ccsam.method.radius import RadiusMode

__all__ = ["LinearHead", "stage1_loss"]

Criterion = Callable[[Tensor, Tensor], Tensor]


class LinearHead(Protocol):
    """A classifier head with a ``weight`` [C, d] and a ``bias`` [C] or None (``nn.Linear`` and the ccsam heads)."""

    @property
    def weight(self) -> Tensor: ...

    @property
    def bias(self) -> Tensor | None: ...

    def __call__(self, features: Tensor) -> Tensor: ...


def stage1_loss(
    clean: Tensor,
    features: Tensor,
    head: LinearHead,
    labels: Tensor,
    class_counts: Tensor | Sequence[float],
    *,
    flat_ratio: float,
    noise_scale: float,
    criterion: Criterion = F.cross_entropy,
    soft_targets: Tensor | None = None,
    validate: bool = True,
    radius_mode: RadiusMode = "ccsam",
    rho: float = 1.0,
    generator: object = None,
    flat_loss: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``(1 - beta) * clean + beta * criterion(perturbed logits, labels)``; ``clean`` when ``beta = 0``.

    Args:
        clean: the clean loss ``L_clean`` at ``theta`` (a scalar with its graph).
        features: ``[B, d]`` features ``z`` the head was evaluated on.
        head: the linear classifier (``weight [C, d]``, ``bias [C]`` or ``None``).
        labels: ``[B]`` grouping labels (``y_a`` under mixup), the targets of the perturbed loss.
        class_counts: ``[C]`` training counts.
        flat_ratio: ``beta`` in ``[0, 1]``; ``0`` skips the perturbation entirely.
        noise_scale: ``s``, the radius multiplier.
        criterion: the loss evaluated at the perturbed logits (CE by default).
        soft_targets: ``[B, C]`` targets of the gradient direction (mixup), else ``one_hot(labels)``.
        validate, radius_mode, rho, generator: see :func:`class_conditional_logits`.
        flat_loss: the perturbed term as a function of the perturbed logits ``[B, C]`` (batch order), in
            place of ``criterion(perturbed, labels)``; e.g. the mixup loss ``lam * criterion(., y_a) +
            (1 - lam) * criterion(., y_b)``, where the released code scores ``y_a`` alone.

    Returns:
        The scalar stage-1 loss.

    Example:
        >>> import torch
        >>> head, z, y = torch.nn.Linear(4, 3), torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
        >>> clean = F.cross_entropy(head(z), y)
        >>> bool(stage1_loss(clean, z, head, y, [50, 10, 2], flat_ratio=0.0, noise_scale=1.0) == clean)
        True
    """
    if flat_ratio == 0.0:
        return clean
    perturbed = class_conditional_logits(
        features, head.weight, head.bias, labels, class_counts, noise_scale=noise_scale,
        soft_targets=soft_targets, validate=validate, radius_mode=radius_mode, rho=rho,
        generator=generator,  # type: ignore[arg-type]
    )
    flat = criterion(perturbed, labels) if flat_loss is None else flat_loss(perturbed)
    return (1.0 - flat_ratio) * clean + flat_ratio * flat
