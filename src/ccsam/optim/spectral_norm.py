"""Spectral normalisation (Miyato et al., ICLR 2018; used in BigGAN, Brock et al., ICLR 2019), one of the
naive flattening baselines of spec section 5.3: ``W_SN = W / sigma(W)`` with the top singular value
``sigma`` estimated by power iteration (one per training forward pass). :func:`apply_spectral_norm`.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ccsam.checks import check_int

__all__ = ["apply_spectral_norm"]

_SN_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
    "linear": (nn.Linear,),
}


def apply_spectral_norm(module: nn.Module, *, include: Iterable[str] | str = ("conv", "linear"),
                        exclude_head: bool = False, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise every Conv / Linear weight of ``module`` in place (Miyato et al., ICLR 2018).

    Each selected layer computes with ``W_SN = W / sigma(W)``, ``sigma`` the top singular value of ``W``
    reshaped to ``[out, -1]``, estimated by ``n_power_iterations`` power iterations per forward pass in
    train mode (``u <- W v / ||W v||``, ``v <- W^T u / ||W^T u||``, ``sigma = u^T W v``); in eval mode the
    stored ``u, v`` are used. This is ``torch.nn.utils.parametrizations.spectral_norm`` (BigGAN, Brock et
    al. 2019, normalises G and D this way with one iteration).

    Apply it **before** building the optimiser (and before any SWA averager, EMA copy or checkpoint load):
    the trainable tensor of each layer becomes ``<layer>.parametrizations.weight.original`` and the
    ``state_dict`` keys change from ``<layer>.weight`` to ``<layer>.parametrizations.weight.original``,
    plus the buffers ``<layer>.parametrizations.weight.0._u`` / ``._v``. Checkpoints of normalised and
    plain models are therefore not interchangeable. Weight decay, SAM/GP/MP perturbations and SWA act
    on ``original``. Layers whose weight is already parametrised are left alone (idempotent).

    Args:
        module: The model (changed in place).
        include: Layer kinds to normalise, any of ``"conv"`` (Conv1d/2d/3d) and ``"linear"``.
        exclude_head: Leave the submodule named ``head`` (the classifier) and everything in it alone.
        n_power_iterations: Power iterations per training forward pass (>= 1).

    Returns:
        ``module`` itself.
    """
    kinds = (include,) if isinstance(include, str) else tuple(include)
    if not kinds or any(k not in _SN_KINDS for k in kinds):
        raise ValueError(f"include must be a non-empty subset of {sorted(_SN_KINDS)}, got {kinds!r}")
    check_int("n_power_iterations", n_power_iterations, low=1)
    if exclude_head and not isinstance(getattr(module, "head", None), nn.Module):
        raise ValueError("exclude_head=True but the module has no submodule named 'head'")
    types = tuple(t for k in kinds for t in _SN_KINDS[k])
    targets = [
        m for name, m in module.named_modules()
        if isinstance(m, types)
        and not (exclude_head and (name == "head" or name.startswith("head.")))
        and not parametrize.is_parametrized(m, "weight")
    ]
    for m in targets:
        spectral_norm(m, n_power_iterations=n_power_iterations)
    return module
