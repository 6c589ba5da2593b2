"""The head-only CC-SAM stage-1 perturbation in closed form (ccsam-spec §1.3).

The objectives of the released code act on a linear classifier ``o = W z + b`` evaluated on the
features ``z`` of the current mini-batch. The official code loops over the classes of the batch,
perturbs the classifier in place and re-evaluates it. Here the
same quantities are written in closed form with within-class masks and Gram matrices (house rule G4):
no Python loop over classes or samples, the weights are never mutated, and memory is
``O(B^2 + B*C + B*d)``.

Notation used in the docstrings: ``B`` samples, ``C`` classes, feature size ``d``; ``p_i =
softmax(o_i)``; ``q_i`` the (soft) target of sample ``i``; residual ``r_i = (sum_j q_ij) p_i - q_i``
(the gradient of the per-sample loss ``-sum_j q_ij log p_ij`` w.r.t. ``o_i``; ``p_i - q_i`` for
targets that sum to one); class mask ``M_ij = [y_i == y_j]``; ``m_c`` the batch count and ``n_c`` the
training count of class ``c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ccsam.checks import check_int, check_number
from ccsam.method._common import check_counts, check_head, class_mask, no_autocast, residuals
from ccsam.method.radius import GRAD_NORM_FLOOR, PARAM_NORM_EPS, RADIUS_MODES, RadiusMode, ccsam_radius

__all__ = ["class_conditional_logits", "random_head_directions"]


def class_conditional_logits(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    class_counts: Tensor | Sequence[float],
    *,
    noise_scale: float,
    soft_targets: Tensor | None = None,
    validate: bool = True,
    radius_mode: RadiusMode = "ccsam",
    rho: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Logits of every sample under its class's CC-SAM perturbation of the linear head (spec §1.3).

    For each class ``c`` in ``labels``, ``g_{c,t}`` is the gradient w.r.t. ``t in {W, b}`` of the mean
    clean loss ``-sum_j q_ij log softmax(W f_i + b)_j`` over the class-``c`` samples, and (per tensor,
    as in the official code)
    ``eps_{c,t} = rho(||g_{c,t}||) * g_{c,t} / max(||g_{c,t}||, 1e-12)`` with ``rho`` from
    :func:`ccsam_radius`, ``||theta|| = ||(W, b)||_2 + 1e-12`` and ``k = W.numel() + b.numel()``.
    Sample ``i`` gets ``(W + eps_{y_i,W}) f_i + b + eps_{y_i,b}``; ``eps`` is a constant, so gradients
    reach ``features``, ``W`` and ``b`` exactly as at the perturbed point.

    Closed form: ``g_{c,W} = (1/m_c) sum_{i in c} r_i f_i^T``, ``g_{c,b} = (1/m_c) sum_{i in c} r_i``,
    ``||g_{c,W}||^2 = (1/m_c^2) sum_{i,j in c} (r_i . r_j)(f_i . f_j)``, hence
    ``o'_i = o_i + (a_W/m) [(M * F F^T) R]_i + (a_b/m) [M R]_i`` with ``a_t = rho_t / ||g_t||`` and
    only sample ``i``'s own features carrying gradient in the Gram term.

    Ablations (``radius_mode``, spec §4.4 and §8), all per class ``c`` and tensor ``t``:

    * ``"ccsam"`` (default): ``||eps_{c,t}|| = rho_c(||g_{c,t}||)`` along ``g_{c,t}`` (as above).
    * ``"dir_only"``: "Stage 1 + dir", direction only: ``eps_{c,t} = rho * g_{c,t} / ||g_{c,t}||``
      with the constant ``rho`` (default 1, the slide's "fixed magnitude 1"); ``noise_scale`` and the
      class counts are not used. With ``rho`` set to SAM's radius (e.g. 0.05) it is plain per-class SAM.
    * ``"mag_only"``: "Stage 1 + mag", magnitude only: ``eps_{c,t} = rho_c(||g_{c,t}||) * u_{c,t}``
      with the CC-SAM radius of ``"ccsam"`` (still from the class gradient norm) along a random unit
      direction ``u_{c,t}`` (a standard Gaussian normalised per tensor) drawn from ``generator``
      (required) by :func:`random_head_directions` for the present classes ``torch.unique(labels)`` in
      ascending order. Then ``o'_i = o_i + rho_{y_i,W} U_{y_i,W} f_i + rho_{y_i,b} u_{y_i,b}``.
      Extra memory ``(P + B) * C * d`` elements (``P <= min(B, C)`` present classes: the draw and its
      per-sample gather), e.g. 0.8M for CIFAR-100 (C = 100, d = 64, B = 64) and at most 1.0G (4 GB in
      float32) for C = 1000, d = 2048, B = 256; ``torch.unique`` reads back to the host.
    * ``"none"``: the clean logits ``W f + b`` (no class statistics are computed).

    Args:
        features: ``[B, d]`` features ``f``.
        weight: ``[C, d]`` classifier weight ``W``.
        bias: ``[C]`` classifier bias ``b`` or ``None`` (then only ``W`` is perturbed and ``k =
            W.numel()``).
        labels: ``[B]`` integer labels; the grouping label (``y_a`` under mixup).
        class_counts: ``[C]`` training counts ``n_c``.
        noise_scale: ``s >= 0`` (the code's ``noise_ratio``); ``0`` gives the clean logits. Used by
            ``"ccsam"`` and ``"mag_only"`` only.
        soft_targets: ``[B, C]`` targets ``q`` for the gradient direction, e.g. ``lam e_{y_a} + (1-lam)
            e_{y_b}`` under mixup; defaults to ``one_hot(labels)``.
        validate: check label range and counts (reads values back to the host); training loops that
            built their inputs themselves pass ``False`` to avoid a device synchronisation per step.
        radius_mode: one of :data:`RADIUS_MODES` (see above).
        rho: ``||eps_{c,t}||`` for ``"dir_only"``, finite and ``>= 0``.
        generator: random source of ``"mag_only"`` (on the device of ``features``); ignored otherwise.

    Returns:
        ``[B, C]`` perturbed logits in ``promote_types(input dtype, float32)``; the head is evaluated
        with autocast disabled.

    Example:
        >>> z, W, b = torch.randn(8, 4), torch.randn(3, 4), torch.zeros(3)
        >>> y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
        >>> class_conditional_logits(z, W, b, y, [500, 50, 5], noise_scale=1e-2).shape
        torch.Size([8, 3])
        >>> class_conditional_logits(z, W, b, y, [500, 50, 5], noise_scale=0.0, radius_mode="dir_only",
        ...                          rho=0.05).shape
        torch.Size([8, 3])
    """
    num_classes, dtype = check_head(features, weight, bias, labels, validate)
    if not 0 <= noise_scale < math.inf:
        raise ValueError(f"noise_scale must be finite and >= 0, got {noise_scale}")
    _check_radius_mode(radius_mode, rho, generator, features.device)
    if soft_targets is not None and soft_targets.shape != (features.shape[0], num_classes):
        want = (features.shape[0], num_classes)
        raise ValueError(f"soft_targets must have shape {want}, got {tuple(soft_targets.shape)}")
    counts = check_counts(class_counts, num_classes, features.device, dtype, validate)
    labels = labels.to(device=features.device, dtype=torch.long)

    with no_autocast(features.device.type):
        f, w = features.to(dtype), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        logits = F.linear(f, w, b)  # carries the gradient to f, W and b
        if radius_mode == "none":
            return logits
        f_d, w_d = f.detach(), w.detach()
        b_d = None if b is None else b.detach()
        with torch.no_grad():
            residual = residuals(logits.detach(), labels, soft_targets, dtype)
            mask, m = class_mask(labels, dtype)
            num_params = w_d.numel() + (0 if b_d is None else b_d.numel())
            sq_theta = w_d.square().sum() + (0.0 if b_d is None else b_d.square().sum())
            theta_norm = sq_theta.sqrt() + PARAM_NORM_EPS
            n_i = counts[labels]

            def radius(grad_norm: Tensor) -> Tensor:  # ||eps_{y_i,t}|| per sample
                if radius_mode == "dir_only":
                    return torch.full_like(grad_norm, rho)
                return ccsam_radius(theta_norm, grad_norm, n_i, num_params, noise_scale)

            # ||g_{c,W}||^2 from the within-class Gram matrices; clamp rounding below zero.
            gram_f = f_d @ f_d.T
            gram_r = residual @ residual.T
            sq_gw = (mask @ (mask * gram_r * gram_f).sum(1)) / m.square()
            gn_w = sq_gw.clamp_min(0).sqrt().clamp_min(GRAD_NORM_FLOOR)
            rho_w = radius(gn_w)
            class_sum_r = gn_b = rho_b = None
            if b_d is not None:
                class_sum_r = mask @ residual  # m_c * g_{c,b} for each sample's class
                gn_b = (class_sum_r.square().sum(1).sqrt() / m).clamp_min(GRAD_NORM_FLOOR)
                rho_b = radius(gn_b)
        if radius_mode == "mag_only" and generator is not None:  # a generator is required (checked)
            return logits + _random_direction_shift(f, rho_w, rho_b, labels, num_classes, generator)
        # Only the left factor (sample i's own features) carries gradient: eps_{c,W} f_i.
        a_w = rho_w / gn_w / m
        shift = a_w[:, None] * ((mask * (f @ f_d.T)) @ residual)
        if class_sum_r is not None and gn_b is not None and rho_b is not None:
            with torch.no_grad():
                a_b = rho_b / gn_b / m
                shift_b = a_b[:, None] * class_sum_r
            shift = shift + shift_b
        return logits + shift


def random_head_directions(
    num_directions: int,
    num_classes: int,
    dim: int,
    *,
    bias: bool,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Random unit directions ``(u_W, u_b)`` of a ``[C, d]`` (+ ``[C]``) linear head, one per row ``p``.

    Draw order (the ``"mag_only"`` mode of :func:`class_conditional_logits` relies on it): one call
    ``G = torch.randn((P, C*d + C), generator=generator, dtype=dtype, device=device)`` (``C*d``
    columns when ``bias`` is false); ``u_{p,W} = G[p, :C*d].reshape(C, d) / ||G[p, :C*d]||`` and
    ``u_{p,b} = G[p, C*d:] / ||G[p, C*d:]||`` (norms floored at 1e-12), i.e. normalised per tensor.

    Args:
        num_directions: ``P >= 0``, e.g. the number of classes present in a batch.
        num_classes: ``C``, rows of the head's weight.
        dim: ``d``, columns of the head's weight.
        bias: whether to draw ``u_b`` too.
        generator: the random source (on ``device``).
        dtype: floating dtype of the draw.
        device: device of the draw; defaults to the generator's.

    Returns:
        ``u_W`` of shape ``[P, C, d]`` with unit Frobenius norm per ``p``, and ``u_b`` ``[P, C]`` with unit
        norm per ``p`` (``None`` without bias).

    Example:
        >>> u_w, u_b = random_head_directions(2, 3, 4, bias=True, generator=torch.Generator().manual_seed(0))
        >>> u_w.shape, [round(float(u.norm()), 4) for u in (u_w[0], u_w[1], u_b[0], u_b[1])]
        (torch.Size([2, 3, 4]), [1.0, 1.0, 1.0, 1.0])
    """
    for name, value, low in (("num_directions", num_directions, 0), ("num_classes", num_classes, 1),
                             ("dim", dim, 1)):
        check_int(name, value, low=low)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if device is None else torch.device(device)
    size = num_classes * dim
    draw = torch.randn(
        (num_directions, size + (num_classes if bias else 0)), generator=generator, dtype=dtype, device=device
    )
    u_w = draw[:, :size] / draw[:, :size].norm(dim=1, keepdim=True).clamp_min(GRAD_NORM_FLOOR)
    u_b = None
    if bias:
        u_b = draw[:, size:] / draw[:, size:].norm(dim=1, keepdim=True).clamp_min(GRAD_NORM_FLOOR)
    return u_w.reshape(num_directions, num_classes, dim), u_b


def _random_direction_shift(
    f: Tensor,
    rho_w: Tensor,
    rho_b: Tensor | None,
    labels: Tensor,
    num_classes: int,
    generator: torch.Generator,
) -> Tensor:
    """``rho_{y_i,W} U_{y_i,W} f_i + rho_{y_i,b} u_{y_i,b}`` with one random direction per present class."""
    classes, inverse = torch.unique(labels, return_inverse=True)  # ascending: the documented draw order
    u_w, u_b = random_head_directions(
        classes.numel(), num_classes, f.shape[1], bias=rho_b is not None, generator=generator,
        dtype=f.dtype, device=f.device,
    )
    # The directions are constants; only f_i (the right factor) carries gradient.
    shift = rho_w[:, None] * torch.einsum("bkd,bd->bk", u_w[inverse], f)
    if u_b is not None and rho_b is not None:
        shift = shift + rho_b[:, None] * u_b[inverse]
    return shift


def _check_radius_mode(
    radius_mode: str, rho: float, generator: torch.Generator | None, device: torch.device
) -> None:
    """Validate ``radius_mode`` and the arguments it needs (``rho``, ``generator``)."""
    if radius_mode == "fixed_rho":
        raise ValueError("radius_mode 'fixed_rho' was removed (the same formula as 'dir_only'): "
                         "use radius_mode='dir_only' with rho set to SAM's radius")
    if radius_mode not in RADIUS_MODES:
        raise ValueError(f"radius_mode must be one of {', '.join(RADIUS_MODES)}, got {radius_mode!r}")
    check_number("rho", rho, low=0)
    if radius_mode == "mag_only":
        if not isinstance(generator, torch.Generator):
            raise ValueError("radius_mode 'mag_only' needs a torch.Generator (generator=...)")
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device.type}, features on {device.type}")
