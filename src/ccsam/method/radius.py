"""The CC-SAM radius and the norm helpers every perturbation in the package shares (ccsam-spec §1.1).

One home for the floors of the official code: ``||theta|| + 1e-12`` (its ``grad_norm``) and
``max(||g||, 1e-12)`` before any division by a gradient norm, and for the global L2 norm of a list of
tensors (SAM's and the paper's single-vector norm). SAM / ASAM (:mod:`ccsam.optim.perturbation`), the
head closed form, the scoped form and stage 2 all take them from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "GRAD_NORM_FLOOR",
    "PARAM_NORM_EPS",
    "RADIUS_MODES",
    "RadiusMode",
    "ccsam_radius",
    "global_norm",
    "norm_dtype",
]

#: Ablations of the stage-1 perturbation (ccsam-spec §4.4 "Stage 1 + dir / + mag"; config ``stage1.radius``).
#: Plain per-class SAM is ``dir_only`` with ``rho`` set to SAM's radius (one formula, one name).
RadiusMode = Literal["ccsam", "dir_only", "mag_only", "none"]
RADIUS_MODES: tuple[str, ...] = get_args(RadiusMode)

#: Added to ``||theta||`` (the official code's ``grad_norm`` adds 1e-12).
PARAM_NORM_EPS = 1e-12
#: ``||g||`` is floored here before dividing: an all-zero gradient gives ``eps = 0``; above it the
#: division is the exact formula.
GRAD_NORM_FLOOR = 1e-12


def norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a norm of ``dtype`` entries accumulates in: at least float32 (an fp16 sum of squares
    overflows at 65504)."""
    return torch.promote_types(dtype, torch.float32)


def global_norm(tensors: Iterable[Tensor]) -> Tensor:
    """``||(t_1, ..., t_n)||_2 = sqrt(sum_k ||t_k||_2^2)`` over all entries of all tensors.

    Each tensor's norm is taken in :func:`norm_dtype` of its dtype; the result is on the device of the
    first tensor in the widest of those dtypes (a 0-d zero for no tensors). No host synchronisation.

    Example:
        >>> float(global_norm([torch.tensor([3.0]), torch.tensor([4.0])]))
        5.0
    """
    norms = [torch.linalg.vector_norm(t, dtype=norm_dtype(t.dtype)) for t in tensors]
    if not norms:
        return torch.zeros(())
    device, dtype = norms[0].device, norms[0].dtype
    for n in norms[1:]:
        dtype = torch.promote_types(dtype, n.dtype)
    return torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))


def ccsam_radius(
    param_norm: Tensor | float,
    grad_norm: Tensor | float,
    class_count: Tensor | float,
    num_params: int,
    noise_scale: float = 1.0,
) -> Tensor:
    """Characteristic CC-SAM radius ``||eps_c||`` (ccsam-spec §1.1, §1.3), elementwise.

    ``rho_c = s * k^(1/4) * sqrt(||theta|| / (2 max(||g_c||, 1e-12))) * max(n_c - 1, 1)^(-1/4)``,
    with ``s = noise_scale`` (the code's ``noise_ratio``), ``k = num_params`` and ``n_c`` the training
    count of the class. It equals the code's
    ``s sqrt(||theta||) / sqrt(||g||) / sqrt(2) / (n_c-1)^(1/4) / k^(1/4) * sqrt(k)``; the perturbation
    is ``eps_c = rho_c * g_c / max(||g_c||, 1e-12)``. The ``max(n_c - 1, 1)`` guard keeps classes with a
    single training sample finite.

    Args:
        param_norm: ``||theta||`` (already including any epsilon the caller wants).
        grad_norm: ``||g_c||``; floored at 1e-12.
        class_count: ``n_c``.
        num_params: ``k``, the number of perturbed parameters.
        noise_scale: ``s >= 0``.

    Returns:
        The radius, broadcast over the tensor arguments.

    Example:
        >>> float(ccsam_radius(2.0, 1.0, 2, 16, 1.0))  # 16^(1/4) * sqrt(2 / 2) * 1
        2.0
    """
    if not 0 <= noise_scale < math.inf:
        raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale}")
    if num_params < 1:
        raise ValueError(f"num_params must be >= 1, got {num_params}")
    param_norm = torch.as_tensor(param_norm)
    grad_norm = torch.as_tensor(grad_norm, device=param_norm.device)
    class_count = torch.as_tensor(class_count, device=param_norm.device)
    dtype = torch.promote_types(torch.promote_types(param_norm.dtype, grad_norm.dtype), torch.float32)
    g = grad_norm.to(dtype).clamp_min(GRAD_NORM_FLOOR)
    n = (class_count.to(dtype) - 1).clamp_min(1)
    return noise_scale * num_params**0.25 * torch.sqrt(param_norm.to(dtype) / (2 * g)) * n.pow(-0.25)
