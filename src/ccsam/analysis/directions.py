"""Random directions in weight space and an in-place, bit-exactly restored weight perturbation.

Used by the 1-D / 2-D loss landscapes of ccsam-spec §5.2 and the random weight perturbation probe of
§5.1. A *direction* is a ``dict`` mapping parameter names (as in ``model.named_parameters()``) to
tensors of the parameters' shapes, dtypes and devices.

Filter normalisation (Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018, §4): a Gaussian direction ``d`` is rescaled filter by filter so that every filter
of the direction has the norm of the matching filter of the weights,

    d_f <- d_f / ||d_f||_2 * ||w_f||_2,

where a *filter* is one slice along the output dimension (dim 0) of a conv or linear weight (one row
of a linear weight, one output channel of a conv kernel). This makes landscapes of networks with
different weight scales comparable, since ReLU networks are invariant to the per-filter scale.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["IGNORE_MODES", "gaussian_like", "perturbed", "random_direction"]

# "bn_and_bias": normalisation-layer parameters and every 1-D parameter (biases) get d = 0, the
# default of Li et al.; "none": they are kept and rescaled as whole vectors, d <- d / ||d|| * ||w||.
IGNORE_MODES = ("bn_and_bias", "none")

# ||d_f|| is floored before dividing; a Gaussian filter reaches it only with probability ~0.
_NORM_FLOOR = 1e-12

_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _norm_layer_param_ids(model: nn.Module) -> set[int]:
    """``id`` of every parameter owned directly by a BatchNorm / InstanceNorm / GroupNorm / LayerNorm."""
    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_LAYERS):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def _draw_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16 / bf16 parameters get fp32 draws (cast afterwards), so a half model sees the draws of a
    # float32 model with the same shapes; float64 parameters get float64 draws.
    return torch.promote_types(dtype, torch.float32)


def gaussian_like(p: Tensor, generator: torch.Generator) -> Tensor:
    """A standard-normal tensor of ``p``'s shape, drawn on the generator's device, in ``p``'s dtype/device.

    Drawing on the generator's device (not the parameter's) gives the same numbers for a model on any
    device; half-precision parameters get float32 draws, then a cast.
    """
    z = torch.randn(p.shape, generator=generator, dtype=_draw_dtype(p.dtype), device=generator.device)
    return z.to(device=p.device, dtype=p.dtype)


def random_direction(
    model: nn.Module,
    generator: torch.Generator,
    *,
    filter_normalize: bool = True,
    ignore: str = "bn_and_bias",
) -> dict[str, Tensor]:
    """A Gaussian direction ``d ~ N(0, I)`` over every parameter, optionally filter-normalised.

    One standard-normal tensor is drawn per parameter, in ``model.named_parameters()`` order, from
    ``generator`` (always, including for parameters that end up zeroed, so the draws of the weights do
    not depend on ``ignore``). The same seed therefore gives the same direction for every model with the
    same parameter names and shapes. Then:

    - conv / linear weights (``dim >= 2``, not in a normalisation layer): with ``filter_normalize``,
      ``d_f <- d_f / ||d_f|| * ||w_f||`` for each output filter ``f`` (slice along dim 0) -- Li et al.,
      NeurIPS 2018, §4;
    - normalisation-layer parameters (BatchNorm, InstanceNorm, GroupNorm, LayerNorm) and every 1-D
      parameter (biases): ``ignore="bn_and_bias"`` (Li et al.'s default) sets ``d = 0``;
      ``ignore="none"`` keeps them and, with ``filter_normalize``, rescales each as one vector,
      ``d <- d / ||d|| * ||w||``.

    Without ``filter_normalize`` the raw Gaussian is returned (with the ``ignore`` zeroing still
    applied). Every parameter is included, whether or not it requires a gradient.

    Args:
        model: The network; its parameters are only read.
        generator: Source of the draws (a CPU generator gives device-independent directions).
        filter_normalize: Rescale per filter as above.
        ignore: ``"bn_and_bias"`` or ``"none"``.

    Returns:
        ``{name: d}`` with each ``d`` of the parameter's shape, dtype and device.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> d = random_direction(lin, torch.Generator().manual_seed(0))
        >>> torch.allclose(d["weight"].norm(dim=1), lin.weight.detach().norm(dim=1))
        True
        >>> bool((d["bias"] == 0).all())
        True
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if ignore not in IGNORE_MODES:
        raise ValueError(f"ignore must be one of {', '.join(IGNORE_MODES)}, got {ignore!r}")
    norm_ids = _norm_layer_param_ids(model)
    direction: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            d = gaussian_like(p, generator)
            w = p.detach()
            vector_like = id(p) in norm_ids or p.dim() <= 1
            if vector_like and ignore == "bn_and_bias":
                d.zero_()
            elif filter_normalize and vector_like:
                d.mul_(torch.linalg.vector_norm(w) / torch.linalg.vector_norm(d).clamp_min(_NORM_FLOOR))
            elif filter_normalize:
                d_norm = torch.linalg.vector_norm(d.flatten(1), dim=1).clamp_min(_NORM_FLOOR)
                w_norm = torch.linalg.vector_norm(w.flatten(1), dim=1)
                d.mul_((w_norm / d_norm).view(-1, *([1] * (d.dim() - 1))))
            direction[name] = d
    return direction


@contextmanager
def perturbed(model: nn.Module, direction: Mapping[str, Tensor], alpha: float) -> Iterator[nn.Module]:
    """Temporarily set ``w <- w + alpha * d`` in place; restore the saved weights bit-exactly on exit.

    Only the parameters named in ``direction`` are touched. Each is saved (a clone) before the update and
    copied back when the block ends, also when it raises, so the restored weights are ``torch.equal`` to
    the original ones (no ``w + a d - a d`` rounding). ``alpha = 0`` leaves the weights numerically
    unchanged. The update runs without autograd; the body may use autograd freely.

    Args:
        model: The network, modified in place inside the block.
        direction: ``{name: d}`` with names from ``model.named_parameters()`` and matching shapes
            (e.g. from :func:`random_direction`); ``d`` is cast to the parameter's device and dtype.
        alpha: Step along the direction.

    Yields:
        The model itself.

    Example:
        >>> lin = nn.Linear(2, 1)
        >>> before = lin.weight.detach().clone()
        >>> with perturbed(lin, {"weight": torch.ones(1, 2)}, 0.5):
        ...     pass
        >>> torch.equal(lin.weight, before)
        True
    """
    params = dict(model.named_parameters())
    for name, d in direction.items():
        if name not in params:
            raise ValueError(f"direction names '{name}', which is not a parameter of the model")
        if not isinstance(d, Tensor) or d.shape != params[name].shape:
            shape = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"direction['{name}'] has shape {shape}, expected {tuple(params[name].shape)}")
    saved: dict[str, Tensor] = {}
    try:
        with torch.no_grad():
            for name, d in direction.items():
                p = params[name]
                saved[name] = p.detach().clone()
                p.add_(d.to(device=p.device, dtype=p.dtype), alpha=alpha)
        yield model
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                params[name].copy_(original)
