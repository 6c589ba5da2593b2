"""Pure perturbation math of the SAM family (house rule G2): functions of tensors, no state, no mutation.

Notation: ``w`` the parameters, ``g = dL/dw`` their gradients (``p.grad``), ``rho`` the radius and, for
ASAM (Kwon et al., ICML 2021, eq. 4 / Alg. 1), the elementwise normalisation operator
``T_w = |w| + eta`` (a diagonal matrix written as a tensor of ``w``'s shape).

- SAM (Foret et al., ICLR 2021, eq. 2): ``eps = rho * g / ||g||_2`` -- the first-order solution of
  ``max_{||eps|| <= rho} L(w + eps)``.
- ASAM: ``eps = rho * T_w^2 g / ||T_w g||_2`` -- the solution in the ball ``||T_w^{-1} eps||_2 <= rho``.
- MP (F2M, Shi et al., NeurIPS 2021): uniform noise ``u ~ U[-b, b]`` on every parameter.

The norm is global: one scalar over every tensor that has a gradient (davda54/sam behaviour). The
CC-SAM per-class radius ``rho_c*`` is :func:`ccsam.method.radius.ccsam_radius`; the norm floor and the global
norm are shared with it (:mod:`ccsam.method.radius`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ccsam.checks import check_number
from ccsam.method.radius import GRAD_NORM_FLOOR, global_norm

__all__ = ["GRAD_NORM_FLOOR", "global_grad_norm", "sam_epsilon", "uniform_noise"]


def _scaled_grad(p: Tensor, adaptive: bool, eta: float) -> Tensor:
    """``T_w g`` for ASAM, ``g`` for SAM (``p.grad`` must not be None)."""
    g = p.grad.detach()  # type: ignore[union-attr]
    return (p.detach().abs() + eta) * g if adaptive else g


def _check(rho: float | None, eta: float) -> None:
    if rho is not None and not rho >= 0:
        raise ValueError(f"rho must be >= 0, got {rho}")
    if not eta >= 0:
        raise ValueError(f"eta (the ASAM offset in T_w = |w| + eta) must be >= 0, got {eta}")


def global_grad_norm(params: Iterable[Tensor], adaptive: bool = False, eta: float = 0.0) -> Tensor:
    """Global gradient norm over every tensor in ``params`` whose ``.grad`` is set.

    SAM: ``||g||_2 = sqrt(sum_p ||g_p||_2^2)``. ASAM (``adaptive=True``): ``||T_w g||_2`` with
    ``T_w = |w| + eta`` elementwise (Kwon et al. 2021, eq. 4). Tensors without a gradient are skipped.

    Args:
        params: Parameters (any iterable; consumed once).
        adaptive: Use the ASAM scaling ``T_w``.
        eta: ASAM offset ``eta >= 0`` (ignored unless ``adaptive``).

    Returns:
        A 0-d tensor on the device of the first gradient, in fp32 or wider (0 if no tensor has a
        gradient). No host synchronisation.

    Example:
        >>> w = torch.zeros(2, requires_grad=True); w.grad = torch.tensor([3.0, 4.0])
        >>> float(global_grad_norm([w]))
        5.0
    """
    _check(None, eta)
    return global_norm(_scaled_grad(p, adaptive, eta) for p in params if p.grad is not None)


def sam_epsilon(
    params: Iterable[Tensor],
    rho: float,
    adaptive: bool = False,
    eta: float = 0.0,
    grad_norm: Tensor | None = None,
) -> list[Tensor | None]:
    """SAM / ASAM ascent step ``eps`` for each tensor in ``params`` (``None`` where ``.grad`` is None).

    SAM (Foret et al. 2021, eq. 2): ``eps = rho * g / max(||g||_2, 1e-12)``, so ``||eps||_2 = rho``
    and ``eps`` points along ``g``. ASAM (Kwon et al. 2021, eq. 4): ``eps = rho * T_w^2 g / ||T_w g||_2``
    with ``T_w = |w| + eta``, so ``||T_w^{-1} eps||_2 = rho``.

    ``eps`` is invariant to a common positive scale of the gradients (``g -> s g``), so it may be taken
    from loss-scaled fp16 gradients before ``GradScaler`` unscales them. If the norm is not finite (an
    fp16 overflow) ``eps`` is 0 everywhere: no perturbation, never NaN weights. Neither case synchronises
    with the host.

    Args:
        params: Parameters (any iterable; consumed once).
        rho: Radius ``rho >= 0``.
        adaptive: ASAM instead of SAM.
        eta: ASAM offset ``eta >= 0``.
        grad_norm: The norm to divide by; default ``global_grad_norm(params, adaptive, eta)``. Pass it
            to share one global norm across several parameter groups.

    Returns:
        One tensor per parameter, with the parameter's dtype, or None where it has no gradient.

    Example:
        >>> w = torch.zeros(2, requires_grad=True); w.grad = torch.tensor([3.0, 4.0])
        >>> sam_epsilon([w], rho=0.5)[0]
        tensor([0.3000, 0.4000])
    """
    _check(rho, eta)
    params = list(params)
    norm = global_grad_norm(params, adaptive, eta) if grad_norm is None else grad_norm
    scale = torch.where(torch.isfinite(norm), rho / norm.clamp_min(GRAD_NORM_FLOOR), 0.0)
    eps: list[Tensor | None] = []
    for p in params:
        if p.grad is None:
            eps.append(None)
            continue
        tg = _scaled_grad(p, adaptive, eta)
        e = (p.detach().abs() + eta) * tg if adaptive else tg
        # inf * 0 = NaN on overflow: nan_to_num turns it into the documented eps = 0.
        eps.append(torch.nan_to_num(e * scale.to(e.device), nan=0.0, posinf=0.0, neginf=0.0).to(p.dtype))
    return eps


def uniform_noise(params: Iterable[Tensor], bound: float, generator: torch.Generator) -> list[Tensor]:
    """``u ~ U[-b, b)`` elementwise for each tensor: ``u = b (2 U[0, 1) - 1)`` (F2M, Shi et al. 2021).

    One ``torch.rand(p.shape, dtype=p.dtype, device=generator.device, generator=generator)`` per tensor,
    in order, moved to ``p.device`` -- the draw sequence a reproduction must follow.

    Args:
        params: Tensors giving shape, dtype and device of the noise (consumed once).
        bound: Half-width ``b >= 0``.
        generator: Source of the draws (its device is where they are drawn).

    Returns:
        One noise tensor per input tensor, with its dtype and device.
    """
    check_number("bound", bound, low=0)
    noise = []
    for p in params:
        r = torch.rand(p.shape, dtype=p.dtype, device=generator.device, generator=generator)
        noise.append(r.mul_(2.0).sub_(1.0).mul_(bound).to(p.device))
    return noise
