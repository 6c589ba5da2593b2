"""Pure tensor functions for the head-only CC-SAM objectives (ccsam-spec §1.3 and §2.2).

Both objectives of the released code act on a linear classifier ``o = W z + b`` evaluated on the
features ``z`` of the current mini-batch. The official code loops over the classes of the batch,
perturbs the classifier (stage 1) or the features (stage 2) in place and re-evaluates it. Here the
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

import contextlib
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RADIUS_MODES",
    "RadiusMode",
    "adversarial_class_weights",
    "adversarial_feature_losses",
    "ccsam_radius",
    "class_conditional_logits",
    "random_head_directions",
]

#: Ablations of the stage-1 perturbation (ccsam-spec §4.4, §8 ``stage1.radius_mode``).
RadiusMode = Literal["ccsam", "dir_only", "fixed_rho", "mag_only", "none"]
RADIUS_MODES: tuple[str, ...] = get_args(RadiusMode)

# Floors used by the official code (`grad_norm` adds 1e-12 to ||theta||) and by us for ||g||.
_PARAM_NORM_EPS = 1e-12
_GRAD_NORM_FLOOR = 1e-12


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
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
    if num_params < 1:
        raise ValueError(f"num_params must be >= 1, got {num_params}")
    param_norm = torch.as_tensor(param_norm)
    grad_norm = torch.as_tensor(grad_norm, device=param_norm.device)
    class_count = torch.as_tensor(class_count, device=param_norm.device)
    dtype = torch.promote_types(torch.promote_types(param_norm.dtype, grad_norm.dtype), torch.float32)
    g = grad_norm.to(dtype).clamp_min(_GRAD_NORM_FLOOR)
    n = (class_count.to(dtype) - 1).clamp_min(1)
    return noise_scale * num_params**0.25 * torch.sqrt(param_norm.to(dtype) / (2 * g)) * n.pow(-0.25)


def adversarial_class_weights(class_counts: Tensor | Sequence[float], div: float = 2.0) -> Tensor:
    """Stage-2 class weights of the released code (ccsam-spec §2.2 step 3).

    ``w_c = ln(n_max / n_c + 0.01) / div`` with ``n_max = max_c n_c``: about ``0.005`` for the head
    class and ``ln(IR + 0.01) / div`` for the rarest class. The weight sets both the feature step length
    and the weight of the adversarial loss of class ``c``.

    Args:
        class_counts: training count per class, shape ``[C]``, all ``> 0``.
        div: divisor, ``> 0`` (the code's ``div = 2``).

    Returns:
        ``[C]`` weights in ``promote_types(counts.dtype, float32)`` on the device of ``class_counts``.

    Example:
        >>> adversarial_class_weights([5000, 50])  # [ln(1.01) / 2, ln(100.01) / 2]
        tensor([0.0050, 2.3026])
    """
    if not div > 0:
        raise ValueError(f"div must be > 0, got {div}")
    counts = _counts_tensor(class_counts)
    if counts.numel() == 0:
        raise ValueError("class_counts is empty")
    if not bool((counts > 0).all()):
        raise ValueError("class_counts must all be > 0 for the adversarial class weights")
    return _class_weights(counts, div)


def _class_weights(counts: Tensor, div: float) -> Tensor:
    """``ln(n_max / n_c + 0.01) / div`` without input checks (no host synchronisation)."""
    counts = counts.to(torch.promote_types(counts.dtype, torch.float32))
    return torch.log(counts.max() / counts + 0.01) / div


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
      class counts are not used.
    * ``"fixed_rho"``: plain per-class SAM, the same formula with ``rho`` set to SAM's radius (e.g.
      0.05). Identical math to ``"dir_only"``; the two names keep ablation and baseline apart in configs.
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
        rho: ``||eps_{c,t}||`` for ``"dir_only"`` / ``"fixed_rho"``, finite and ``>= 0``.
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
    num_classes, dtype = _check_head(features, weight, bias, labels, validate)
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
    _check_radius_mode(radius_mode, rho, generator, features.device)
    if soft_targets is not None and soft_targets.shape != (features.shape[0], num_classes):
        want = (features.shape[0], num_classes)
        raise ValueError(f"soft_targets must have shape {want}, got {tuple(soft_targets.shape)}")
    counts = _check_counts(class_counts, num_classes, features.device, dtype, validate)
    labels = labels.to(device=features.device, dtype=torch.long)

    with _no_autocast(features.device.type):
        f, w = features.to(dtype), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        logits = F.linear(f, w, b)  # carries the gradient to f, W and b
        if radius_mode == "none":
            return logits
        f_d, w_d = f.detach(), w.detach()
        b_d = None if b is None else b.detach()
        with torch.no_grad():
            residual = _residuals(logits.detach(), labels, soft_targets, dtype)
            mask, m = _class_mask(labels, dtype)
            num_params = w_d.numel() + (0 if b_d is None else b_d.numel())
            sq_theta = w_d.square().sum() + (0.0 if b_d is None else b_d.square().sum())
            theta_norm = sq_theta.sqrt() + _PARAM_NORM_EPS
            n_i = counts[labels]

            def radius(grad_norm: Tensor) -> Tensor:  # ||eps_{y_i,t}|| per sample
                if radius_mode in ("dir_only", "fixed_rho"):
                    return torch.full_like(grad_norm, rho)
                return ccsam_radius(theta_norm, grad_norm, n_i, num_params, noise_scale)

            # ||g_{c,W}||^2 from the within-class Gram matrices; clamp rounding below zero.
            gram_f = f_d @ f_d.T
            gram_r = residual @ residual.T
            sq_gw = (mask @ (mask * gram_r * gram_f).sum(1)) / m.square()
            gn_w = sq_gw.clamp_min(0).sqrt().clamp_min(_GRAD_NORM_FLOOR)
            rho_w = radius(gn_w)
            class_sum_r = gn_b = rho_b = None
            if b_d is not None:
                class_sum_r = mask @ residual  # m_c * g_{c,b} for each sample's class
                gn_b = (class_sum_r.square().sum(1).sqrt() / m).clamp_min(_GRAD_NORM_FLOOR)
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
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    device = generator.device if device is None else torch.device(device)
    size = num_classes * dim
    draw = torch.randn(
        (num_directions, size + (num_classes if bias else 0)), generator=generator, dtype=dtype, device=device
    )
    u_w = draw[:, :size] / draw[:, :size].norm(dim=1, keepdim=True).clamp_min(_GRAD_NORM_FLOOR)
    u_b = None
    if bias:
        u_b = draw[:, size:] / draw[:, size:].norm(dim=1, keepdim=True).clamp_min(_GRAD_NORM_FLOOR)
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
    if radius_mode not in RADIUS_MODES:
        raise ValueError(f"radius_mode must be one of {', '.join(RADIUS_MODES)}, got {radius_mode!r}")
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not (0 <= rho < float("inf")):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    if radius_mode == "mag_only":
        if not isinstance(generator, torch.Generator):
            raise ValueError("radius_mode 'mag_only' needs a torch.Generator (generator=...)")
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device.type}, features on {device.type}")


def adversarial_feature_losses(
    features: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    class_counts: Tensor | Sequence[float],
    *,
    div: float = 2.0,
    step: float = 1.0,
    validate: bool = True,
) -> Tensor:
    """Per-sample stage-2 adversarial-feature losses of the released code (ccsam-spec §2.2 step 4).

    For each class ``c`` in the batch, ``G_c`` is the gradient w.r.t. the whole ``[B, d]`` feature
    matrix of the mean clean cross-entropy of the class-``c`` samples; its class-``c`` rows are
    ``(1/m_c) W^T r_i`` (``r_i = p_i - e_{y_i}``) and ``||G_c||_F = (1/m_c) sqrt(sum_{i in c}
    ||W^T r_i||^2)`` (floored at 1e-12). With ``w_c`` from :func:`adversarial_class_weights`,
    ``z_adv_i = z_i + step * w_c * (G_c)_i / ||G_c||_F`` (a constant displacement) and the output is
    ``a_i = w_{y_i} * CE(W z_adv_i + b, y_i)``. Gradients reach ``features``, ``W`` and ``b`` through
    ``W z_adv + b``. ``L_A`` of the code is ``a.mean()``.

    Args:
        features: ``[B, d]`` features ``z``.
        weight: ``[C, d]`` classifier weight ``W``.
        bias: ``[C]`` classifier bias or ``None``.
        labels: ``[B]`` integer labels.
        class_counts: ``[C]`` training counts, all ``> 0``.
        div: divisor of the class weights (the code's ``div = 2``).
        step: step multiplier ``>= 0`` (the code's ``adver_reg = 1``).
        validate: check label range and counts > 0 (a host read); ``False`` skips it.

    Returns:
        ``[B]`` losses in ``promote_types(input dtype, float32)``; autocast is disabled inside.

    Example:
        >>> z, W = torch.randn(6, 4), torch.randn(3, 4)
        >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> adversarial_feature_losses(z, W, None, y, [500, 50, 5]).shape
        torch.Size([6])
    """
    num_classes, dtype = _check_head(features, weight, bias, labels, validate)
    if not step >= 0:
        raise ValueError(f"step must be >= 0, got {step}")
    counts = _check_counts(class_counts, num_classes, features.device, dtype, validate)
    # in the compute dtype, even for integer counts
    class_w = adversarial_class_weights(counts, div) if validate else _class_weights(counts, div)
    labels = labels.to(device=features.device, dtype=torch.long)

    with _no_autocast(features.device.type):
        z, w = features.to(dtype), weight.to(dtype)
        b = None if bias is None else bias.to(dtype)
        with torch.no_grad():
            b_d = None if b is None else b.detach()
            residual = _residuals(F.linear(z.detach(), w.detach(), b_d), labels, None, dtype)
            row_grad = residual @ w.detach()  # W^T r_i, i.e. m_c times row i of G_c
            mask, m = _class_mask(labels, dtype)
            g_norm = ((mask @ row_grad.square().sum(1)).sqrt() / m).clamp_min(_GRAD_NORM_FLOOR)
            w_i = class_w[labels]
            displacement = (step * w_i / (m * g_norm))[:, None] * row_grad
        adv_logits = F.linear(z + displacement, w, b)
        return w_i * F.cross_entropy(adv_logits, labels, reduction="none")


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Disable autocast so the tiny head math runs in the promoted dtype (softmax, Gram, norms)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _check_head(
    features: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, validate: bool = True
) -> tuple[int, torch.dtype]:
    """Validate the head inputs; return ``C`` and the compute dtype (at least float32).

    Shapes and dtypes are always checked; the label range (a device-to-host read) only if ``validate``.
    """
    if features.dim() != 2:
        raise ValueError(f"features must be [B, d], got shape {tuple(features.shape)}")
    if weight.dim() != 2 or weight.shape[1] != features.shape[1]:
        raise ValueError(f"weight must be [C, {features.shape[1]}], got shape {tuple(weight.shape)}")
    num_classes = weight.shape[0]
    if num_classes < 1:
        raise ValueError("weight has no classes (C = 0)")
    if bias is not None and bias.shape != (num_classes,):
        raise ValueError(f"bias must have shape ({num_classes},), got {tuple(bias.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    if validate and labels.numel() and (bool(labels.min() < 0) or bool(labels.max() >= num_classes)):
        got = f"[{int(labels.min())}, {int(labels.max())}]"
        raise ValueError(f"labels must lie in [0, {num_classes}), got range {got}")
    for name, t in (("features", features), ("weight", weight), ("bias", bias)):
        if t is not None and not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    dtype = torch.promote_types(features.dtype, weight.dtype)
    if bias is not None:
        dtype = torch.promote_types(dtype, bias.dtype)
    return num_classes, torch.promote_types(dtype, torch.float32)


def _counts_tensor(class_counts: Tensor | Sequence[float]) -> Tensor:
    """``class_counts`` as a 1-D real tensor (on its own device)."""
    counts = torch.as_tensor(class_counts)
    if counts.dim() != 1 or counts.dtype == torch.bool or counts.is_complex():
        got = f"{counts.dtype} of shape {tuple(counts.shape)}"
        raise ValueError(f"class_counts must be a 1-D real tensor or sequence, got {got}")
    return counts


def _check_counts(
    class_counts: Tensor | Sequence[float],
    num_classes: int,
    device: torch.device,
    dtype: torch.dtype,
    validate: bool = True,
) -> Tensor:
    """Validate ``class_counts`` (shape ``[C]``, finite, ``>= 0``) and move it to ``device``/``dtype``."""
    counts = _counts_tensor(class_counts)
    if counts.shape != (num_classes,):
        raise ValueError(f"class_counts must have shape ({num_classes},), got {tuple(counts.shape)}")
    counts = counts.to(device=device, dtype=dtype)
    if validate and not bool((torch.isfinite(counts) & (counts >= 0)).all()):
        raise ValueError("class_counts must be finite and >= 0")
    return counts


def _residuals(logits: Tensor, labels: Tensor, soft_targets: Tensor | None, dtype: torch.dtype) -> Tensor:
    """``r_i = d/d o_i [-sum_j q_ij log softmax(o_i)_j] = (sum_j q_ij) p_i - q_i``."""
    probs = torch.softmax(logits, dim=1)
    if soft_targets is None:
        return probs - F.one_hot(labels, logits.shape[1]).to(dtype)
    q = soft_targets.detach().to(device=logits.device, dtype=dtype)
    return probs * q.sum(1, keepdim=True) - q


def _class_mask(labels: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Same-class mask ``M_ij = [y_i == y_j]`` (``[B, B]``) and batch class counts ``m_{y_i}`` (``[B]``)."""
    mask = (labels[:, None] == labels[None, :]).to(dtype)
    return mask, mask.sum(1)
