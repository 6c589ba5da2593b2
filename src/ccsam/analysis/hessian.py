"""Hessian-vector products, the top Hessian eigenvalue by power iteration, and per-class sharpness.

Hessian-vector product by double backpropagation (Pearlmutter, "Fast exact multiplication by the
Hessian", Neural Computation 1994):

    H v = d/dw ( (dL/dw)^T v ),

i.e. one gradient with ``create_graph=True`` followed by the gradient of its inner product with the
constant ``v``; the Hessian is never formed. The top eigenvalue is found by power iteration on
``v <- H v / ||H v||`` with the Rayleigh quotient ``lambda = v^T H v`` (``||v|| = 1``) as the estimate,
as in PyHessian (Yao, Gholami, Keutzer, Mahoney, IEEE BigData 2020, Alg. 1). ``lambda_max(H)`` of the
loss is the usual sharpness measure of the flat-minima literature (Keskar et al., ICLR 2017; Jiang et
al., ICLR 2020); per class it quantifies the claim of the CC-SAM paper that tail classes sit in sharper
regions of the loss (ccsam-spec §5).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ccsam.analysis.class_losses import eval_mode, model_device_dtype, normalized_images, split_device
from ccsam.checks import check_int
from ccsam.data.long_tail import Split

__all__ = [
    "SCOPES",
    "hessian_vector_product",
    "largest_hessian_eigenvalue",
    "per_class_sharpness",
    "top_hessian_eigenvalue",
]

SCOPES = ("head", "all")

_NORM_FLOOR = 1e-300


def _gradients(loss_fn: Callable[[], Tensor], params: Sequence[Tensor]) -> list[Tensor]:
    """``dL/dw`` with ``create_graph=True``; zeros (without graph) for parameters the loss ignores."""
    if not params:
        raise ValueError("params is empty; pass the tensors to differentiate with respect to")
    for p in params:
        if not p.requires_grad:
            raise ValueError("every tensor in params must require grad; call p.requires_grad_(True)")
    loss = loss_fn()
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    grads = torch.autograd.grad(loss.reshape(()), list(params), create_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _hvp(grads: list[Tensor], params: Sequence[Tensor], vector: Sequence[Tensor]) -> list[Tensor]:
    """``H v`` from gradients built with ``create_graph=True`` (the graph is kept for the next product)."""
    dot = sum((g * v).sum() for g, v in zip(grads, vector, strict=True))
    if not isinstance(dot, Tensor) or not dot.requires_grad:  # the gradient is constant: H = 0
        return [torch.zeros_like(p) for p in params]
    hv = torch.autograd.grad(dot, list(params), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, hv, strict=True)]


def _check_vector(params: Sequence[Tensor], vector: Sequence[Tensor]) -> list[Tensor]:
    vector = list(vector)
    if len(vector) != len(params):
        raise ValueError(f"vector has {len(vector)} tensors but params has {len(params)}; pass one per param")
    for p, v in zip(params, vector, strict=True):
        if v.shape != p.shape:
            raise ValueError(f"vector tensor of shape {tuple(v.shape)} does not match param {tuple(p.shape)}")
    return [v.detach().to(device=p.device, dtype=p.dtype) for p, v in zip(params, vector, strict=True)]


def hessian_vector_product(
    loss_fn: Callable[[], Tensor], params: Sequence[Tensor], vector: Sequence[Tensor]
) -> list[Tensor]:
    """``H v = d/dw ((dL/dw)^T v)`` by double backpropagation (Pearlmutter 1994), without forming ``H``.

    Args:
        loss_fn: Called once with no argument; returns the scalar loss ``L(w)`` built from ``params``.
        params: The tensors ``w`` (each must require grad); ``H`` is the Hessian over all of them jointly.
        vector: One tensor per parameter, same shapes (cast to the parameters' device and dtype).

    Returns:
        ``H v`` split like ``params`` (detached). Parameters the loss does not depend on get zeros.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> hessian_vector_product(lambda: (w ** 3).sum(), [w], [torch.ones(2)])[0]  # diag(6 w) 1
        tensor([ 6., 12.])
    """
    params = list(params)
    vector = _check_vector(params, vector)
    return _hvp(_gradients(loss_fn, params), params, vector)


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum(((x.to(torch.float64) * y.to(torch.float64)).sum() for x, y in zip(a, b, strict=True)),
               torch.zeros((), dtype=torch.float64, device=a[0].device))


def top_hessian_eigenvalue(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    iterations: int = 20,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    shift: float = 0.0,
) -> float:
    """The eigenvalue of largest magnitude of ``H - shift I`` (``H = d^2 L / dw^2``), by power iteration.

    With ``shift = 0`` this is ``H``'s eigenvalue of largest ``|lambda|``; with ``shift`` the (negative)
    result of an unshifted run, every eigenvalue of ``H - shift I`` is >= 0 and the result plus ``shift``
    is ``lambda_max(H)`` (see :func:`largest_hessian_eigenvalue`).

    ``v_0 ~ N(0, I)`` (from ``generator``; default a CPU generator seeded with 0), then for
    ``k = 1..iterations``: ``v <- v / ||v||``, ``lambda_k = v^T H v`` (Rayleigh quotient),
    ``v <- H v``; stop early when ``|lambda_k - lambda_{k-1}| <= tol |lambda_{k-1}|``
    (PyHessian, Yao et al. 2020, Alg. 1). The estimate converges to the eigenvalue of largest ``|lambda|``
    with its sign, at rate ``(|lambda_2| / |lambda_1|)^(2k)``; if ``+-lambda`` are both extreme it may
    oscillate. The loss and its gradient are built once; each iteration costs one backward pass.

    Args:
        loss_fn: Called once; returns the scalar loss built from ``params``.
        params: The tensors ``w`` (each must require grad).
        iterations: Maximum number of Hessian-vector products (>= 1).
        tol: Relative tolerance of the early stop (0 runs all iterations).
        generator: Source of ``v_0``.

    Returns:
        ``lambda`` as a Python float (0.0 if ``H v_0 = 0``).
    """
    check_int("iterations", iterations, low=1)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if not math.isfinite(shift):
        raise ValueError(f"shift must be finite, got {shift!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    params = list(params)
    grads = _gradients(loss_fn, params)
    v = [
        torch.randn(p.shape, generator=generator, dtype=torch.promote_types(p.dtype, torch.float32),
                    device=generator.device).to(device=p.device, dtype=p.dtype)
        for p in params
    ]
    eigenvalue: float | None = None
    for _ in range(iterations):
        norm = float(_dot(v, v).sqrt())
        if norm <= _NORM_FLOOR:
            return 0.0
        v = [x / norm for x in v]
        hv = _hvp(grads, params, v)
        if shift:
            hv = [h - shift * x for h, x in zip(hv, v, strict=True)]
        new = float(_dot(v, hv))
        converged = eigenvalue is not None and abs(new - eigenvalue) <= tol * abs(eigenvalue)
        eigenvalue = new
        if converged:
            break
        v = hv
    assert eigenvalue is not None
    return eigenvalue


def largest_hessian_eigenvalue(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    iterations: int = 20,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> float:
    """``lambda_max(H)``, the largest *algebraic* eigenvalue of ``H = d^2 L / dw^2`` (the sharpness).

    Power iteration finds the eigenvalue of largest magnitude ``lambda_1``; when it is negative (an
    indefinite ``H`` whose most curved direction is a negative one), a second power iteration on
    ``H - lambda_1 I`` (eigenvalues ``lambda_i - lambda_1 >= 0``) finds ``lambda_max - lambda_1``. Both runs
    start from the same draw of ``generator``'s state (cloned), so the result is deterministic.

    Example:
        >>> w = torch.tensor([1.0, 1.0], requires_grad=True)
        >>> loss = lambda: 0.5 * (2 * w[0] ** 2 - 5 * w[1] ** 2)  # H = diag(2, -5)
        >>> round(largest_hessian_eigenvalue(loss, [w], iterations=200, tol=0), 4)
        2.0
    """
    state = None if generator is None else generator.get_state()
    first = top_hessian_eigenvalue(loss_fn, params, iterations=iterations, tol=tol, generator=generator)
    if first >= 0:
        return first
    if generator is not None and state is not None:
        generator.set_state(state)
    shifted = top_hessian_eigenvalue(loss_fn, params, iterations=iterations, tol=tol, generator=generator,
                                     shift=first)
    return shifted + first


def _mean_cross_entropy(forward: Callable[[Tensor], Tensor], inputs: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(forward(inputs), labels)


def per_class_sharpness(
    model: nn.Module,
    arrays: Split,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    *,
    scope: str = "head",
    iterations: int = 20,
    tol: float = 1e-4,
    max_per_class: int = 256,
    seed: int = 0,
) -> list[float | None]:
    """Top Hessian eigenvalue of each class's mean cross-entropy, ``lambda_max(d^2 L_c / dw^2)``.

    ``L_c(w) = (1/m_c) sum_{i in S_c} -log softmax(f_w(x_i))_c`` over ``S_c``, the first
    ``m_c = min(n_c, max_per_class)`` images of class ``c`` in ``arrays`` order (deterministic), in eval
    mode (BatchNorm running statistics; the train/eval flags are restored). ``w`` is the classifier head
    (``scope="head"``: needs a model with ``features(x)`` and ``head``, such as
    :class:`ccsam.models.Classifier`; the features are computed once without autograd) or every parameter
    (``scope="all"``). Parameters with ``requires_grad=False`` are switched on for the computation and
    switched back afterwards. The eigenvalue comes from :func:`largest_hessian_eigenvalue` with a fresh CPU
    generator seeded with ``seed`` for every class (the largest
    algebraic eigenvalue, also for an indefinite ``H`` with ``scope="all"``, where the eigenvalue of largest
    magnitude can be negative). Memory: one forward graph of ``m_c`` images with ``create_graph=True``.

    Args:
        model: The network (weights unchanged on return).
        arrays: Images and labels; labels must lie in ``[0, num_classes)``.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
        num_classes: Length of the result.
        scope: ``"head"`` or ``"all"``.
        iterations: Power-iteration steps per class.
        tol: Relative early-stop tolerance.
        max_per_class: Images used per class at most.
        seed: Seed of the power iteration's start vector.

    Returns:
        One entry per class: the eigenvalue (for cross-entropy w.r.t. a linear head ``H`` is PSD, so it is
        >= 0), or None for a class with no image in ``arrays``.
    """
    check_int("num_classes", num_classes, low=1)
    check_int("max_per_class", max_per_class, low=1)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    check_int("seed", seed)
    if len(arrays) and int(arrays.labels.max()) >= num_classes:
        raise ValueError(f"labels reach {int(arrays.labels.max())} but num_classes is {num_classes}")
    if scope == "head" and not (hasattr(model, "head") and hasattr(model, "features")):
        raise ValueError("scope='head' needs a model with .features(x) and .head (a ccsam Classifier)")
    device, dtype = model_device_dtype(model, split_device(arrays))
    # nn.Module.__getattr__ is typed Tensor | Module; for scope 'head' the check above found a Classifier's
    # .head (a module) and .features (a method)
    head = cast(nn.Module, model.head) if scope == "head" else None
    params = list(head.parameters()) if head is not None else list(model.parameters())
    if not params:
        raise ValueError(f"the model has no parameters in scope '{scope}'")
    flags = [p.requires_grad for p in params]
    labels_all = arrays.labels
    result: list[float | None] = []
    try:
        for p in params:
            p.requires_grad_(True)
        with eval_mode(model):
            for c in range(num_classes):
                index = torch.nonzero(labels_all == c).flatten()[:max_per_class]
                if index.numel() == 0:
                    result.append(None)
                    continue
                inputs = normalized_images(arrays, index, mean, std, device).to(dtype=dtype)
                labels = torch.full((index.numel(),), c, dtype=torch.int64, device=device)
                if head is not None:
                    with torch.no_grad():
                        inputs = cast(Callable[[Tensor], Tensor], model.features)(inputs)
                forward = head if head is not None else model
                loss_fn = functools.partial(_mean_cross_entropy, forward, inputs, labels)
                generator = torch.Generator().manual_seed(seed)
                eigenvalue = largest_hessian_eigenvalue(
                    loss_fn, params, iterations=iterations, tol=tol, generator=generator
                )
                result.append(eigenvalue)
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    return result
