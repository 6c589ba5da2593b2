"""Naive flattening baselines of the CC-SAM motivation study (spec section 5.3): GP, MP, SN and SWA.

The CC-SAM slides apply four generic "flat minima" operations to long-tailed methods and find that
they hardly help. This module provides them:

- **GP** -- gradient-norm penalty (Zhao, Zhang, Hu, ICML 2022, "Penalizing gradient norm for
  efficiently improving generalization"). Minimise ``L(w) + lambda ||grad L(w)||``; its gradient is
  approximated by a finite difference along ``n = g / ||g||`` (their eq. 7)::

      grad = (1 - a) grad L(w) + a grad L(w + r g / ||g||),      a = lambda / r.

  :func:`make_gradient_penalty_update` (defaults ``r = 0.05``, ``a = 0.8``, the paper's CIFAR values).
- **MP** -- model perturbation as in F2M (Shi et al., NeurIPS 2021, "Overcoming catastrophic forgetting
  in incremental few-shot learning by finding flat minima"): the loss is averaged over ``M`` copies of
  the model with uniform noise ``u_m ~ U[-b, b]`` on every trainable parameter::

      grad = (1 / M) sum_m grad L(w + u_m).

  :func:`make_model_perturbation_update` (defaults ``b = 0.01``, ``M = 2``). F2M's later clamping of the
  incremental updates to the flat region is not part of it (there are no incremental sessions here).
- **SN** -- spectral normalisation (Miyato et al., ICLR 2018; used in BigGAN, Brock et al., ICLR 2019):
  ``W_SN = W / sigma(W)`` with the top singular value ``sigma`` estimated by power iteration (one per
  training forward pass). :func:`apply_spectral_norm`.
- **SWA** -- stochastic weight averaging (Izmailov et al., UAI 2018; cited by the slides via He et al.,
  NeurIPS 2019, "Asymmetric valleys"): ``w_SWA = (1 / n) sum_i w_i`` over one snapshot per epoch in the
  last ~25 % of training, then BatchNorm statistics recomputed at ``w_SWA``. :class:`SwaAverager`,
  :func:`swa_window`.

GP and MP are *updates* with the engine's signature
``update(model, objective, batch, optimizer, autocast) -> StepOutput`` (see
``ccsam.training.updates``); they work with any plain ``torch.optim`` optimiser (not a SAM wrapper).
Both restore the weights bit-exactly with ``p.copy_(saved)`` after every perturbed pass (house rule G3),
and BatchNorm running statistics are updated by exactly one forward pass per step (the others run under
:func:`ccsam.models.bn.bn_stats_frozen`). The perturbation math is
:func:`ccsam.optim.perturbation.sam_epsilon`
(GP's ``r g / ||g||`` is SAM's ``eps`` with ``rho = r``) and :func:`uniform_noise` (MP).

Which parameters are perturbed: those of the optimiser's parameter groups that require gradients (the
parameters the step trains; e.g. only the head in a frozen-backbone stage 2). The global norm of GP is
over those of them that received a gradient in the first pass.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm
from torch.optim import Optimizer
from torch.optim.swa_utils import AveragedModel, update_bn

from ccsam.models.bn import bn_stats_frozen
from ccsam.optim.perturbation import sam_epsilon

__all__ = [
    "GradientPenaltyUpdate",
    "ModelPerturbationUpdate",
    "SwaAverager",
    "apply_spectral_norm",
    "make_gradient_penalty_update",
    "make_model_perturbation_update",
    "swa_window",
    "uniform_noise",
]


class _StepOutputLike(Protocol):
    loss: Tensor
    logits: Tensor


_Out = TypeVar("_Out", bound=_StepOutputLike)
Autocast = Callable[[], contextlib.AbstractContextManager[object]]


def _trainable(optimizer: Optimizer) -> list[Tensor]:
    """The optimiser's parameters that require gradients, in group order, without duplicates."""
    seen: set[int] = set()
    params: list[Tensor] = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


def _finite_nonneg(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


# --------------------------------------------------------------------------------------------------
# GP: gradient-norm penalty
# --------------------------------------------------------------------------------------------------


class GradientPenaltyUpdate:
    """One step of gradient-norm penalty training (Zhao, Zhang, Hu, ICML 2022, eq. 7 / Alg. 1).

    Objective ``L(w) + lambda ||g(w)||`` with ``g = grad L``; gradient by finite difference::

        g1 = g(w),  w' = w + r g1 / ||g1||,  g2 = g(w'),  w <- step(w, (1 - a) g1 + a g2),  a = lambda / r

    ``||g1||`` is the global L2 norm over the trainable parameters that have a gradient (floored at
    1e-12, so ``g1 = 0`` gives ``w' = w``). The second pass runs with BatchNorm statistics frozen; ``w``
    is restored bit-exactly before the optimiser step. ``a = 0`` is plain SGD (one wasted pass).

    Under DDP both passes all-reduce (``g1`` enters the update, unlike SAM's first pass).

    Build it with :func:`make_gradient_penalty_update`.
    """

    def __init__(self, r: float = 0.05, a: float = 0.8) -> None:
        _finite_nonneg("r (the finite-difference step)", r)
        _finite_nonneg("a (= lambda / r)", a)
        self.r = float(r)
        self.a = float(a)

    def __repr__(self) -> str:
        return f"GradientPenaltyUpdate(r={self.r}, a={self.a})"

    def __call__(self, model: nn.Module, objective: Callable[[nn.Module, Any], _Out], batch: Any,
                 optimizer: Optimizer, autocast: Autocast) -> _Out:
        """Two passes and one ``optimizer.step()``; returns the first pass's output (loss at ``w``)."""
        params = _trainable(optimizer)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = objective(model, batch)
        out.loss.backward()
        with_grad = [p for p in params if p.grad is not None]
        g1 = [p.grad for p in with_grad]
        saved: list[tuple[Tensor, Tensor]] = []
        with torch.no_grad():
            for p, e in zip(with_grad, sam_epsilon(with_grad, self.r), strict=True):
                if e is not None:
                    saved.append((p, p.detach().clone()))
                    p.add_(e)
        for p in params:
            p.grad = None
        try:
            with bn_stats_frozen(model), autocast():
                second = objective(model, batch)
            second.loss.backward()
        finally:
            with torch.no_grad():
                for p, old in saved:
                    p.copy_(old)
        with torch.no_grad():
            first = dict(zip(map(id, with_grad), g1, strict=True))
            for p in params:
                g1_p = first.get(id(p))
                g2 = p.grad
                if g1_p is None and g2 is None:
                    continue
                if g1_p is None:
                    p.grad = g2.mul_(self.a)  # type: ignore[union-attr]
                elif g2 is None:
                    p.grad = g1_p.mul_(1.0 - self.a)
                else:
                    p.grad = g1_p.mul_(1.0 - self.a).add_(g2, alpha=self.a)
        optimizer.step()
        return out


def make_gradient_penalty_update(r: float = 0.05, a: float = 0.8) -> GradientPenaltyUpdate:
    """The GP update ``update(model, objective, batch, optimizer, autocast)`` (Zhao et al., ICML 2022).

    Gradient ``(1 - a) grad L(w) + a grad L(w + r g/||g||)``, the finite-difference gradient of
    ``L + lambda ||grad L||`` with ``lambda = a r``.

    Args:
        r: Finite-difference step ``r >= 0`` (0.05 for CIFAR in the paper).
        a: Mixing weight ``a = lambda / r >= 0`` (0.8 in the paper; ``a = 0`` is plain SGD).

    Example::

        update = make_gradient_penalty_update(r=0.05, a=0.8)
        out = update(model, objective, batch, torch.optim.SGD(model.parameters(), lr=0.1), nullcontext)
    """
    return GradientPenaltyUpdate(r, a)


# --------------------------------------------------------------------------------------------------
# MP: model perturbation (F2M)
# --------------------------------------------------------------------------------------------------


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
    _finite_nonneg("bound", bound)
    noise = []
    for p in params:
        r = torch.rand(p.shape, dtype=p.dtype, device=generator.device, generator=generator)
        noise.append(r.mul_(2.0).sub_(1.0).mul_(bound).to(p.device))
    return noise


class ModelPerturbationUpdate:
    """One step of F2M-style model perturbation (Shi et al., NeurIPS 2021, Alg. 1, training part).

    For ``m = 1..M``: draw ``u_m ~ U[-b, b]`` for every trainable parameter (:func:`uniform_noise`),
    set ``w <- w + u_m``, forward + backward, restore ``w`` bit-exactly (``p.copy_``). The gradients are
    averaged as a running mean ``gbar <- gbar + (g_m - gbar) / m`` (so ``b = 0`` reproduces SGD exactly),
    then ``optimizer.step()`` with ``grad = (1/M) sum_m g_m``. BatchNorm running statistics are updated by
    the first copy only (at ``w + u_1``); copies 2..M run under ``bn_stats_frozen``.

    Reproducibility: all draws come from :attr:`generator`, copy by copy, parameter by parameter in the
    optimiser's group order. Save ``update.generator.get_state()`` in a checkpoint and restore it with
    ``set_state`` to resume the same noise sequence. Under DDP every copy all-reduces; give every rank the
    same seed so the ranks perturb identically.

    Returns the first copy's output (loss and logits at ``w + u_1``, an unbiased estimate of the averaged
    loss). Build it with :func:`make_model_perturbation_update`.

    Attributes:
        bound: Half-width ``b`` of the noise.
        copies: Number of noisy copies ``M``.
        generator: The ``torch.Generator`` the noise is drawn from.
    """

    def __init__(self, bound: float = 0.01, copies: int = 2,
                 generator: torch.Generator | None = None) -> None:
        _finite_nonneg("bound", bound)
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ValueError(f"copies must be an int >= 1, got {copies!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.bound = float(bound)
        self.copies = copies
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __repr__(self) -> str:
        return (f"ModelPerturbationUpdate(bound={self.bound}, copies={self.copies}, "
                f"generator on {self.generator.device})")

    def __call__(self, model: nn.Module, objective: Callable[[nn.Module, Any], _Out], batch: Any,
                 optimizer: Optimizer, autocast: Autocast) -> _Out:
        """``M`` perturbed passes, one ``optimizer.step()`` with the averaged gradient."""
        params = _trainable(optimizer)
        mean: dict[int, Tensor] = {}
        outputs: list[_Out] = []
        for m in range(1, self.copies + 1):
            optimizer.zero_grad(set_to_none=True)
            noise = uniform_noise(params, self.bound, self.generator)
            saved = [p.detach().clone() for p in params]
            try:
                with torch.no_grad():
                    for p, u in zip(params, noise, strict=True):
                        p.add_(u)
                frozen = bn_stats_frozen(model) if m > 1 else contextlib.nullcontext()
                with frozen, autocast():
                    out = objective(model, batch)
                out.loss.backward()
            finally:
                with torch.no_grad():
                    for p, old in zip(params, saved, strict=True):
                        p.copy_(old)
            if not outputs:  # keep only the first copy's output
                outputs.append(out)
            with torch.no_grad():
                for p in params:
                    g, acc = p.grad, mean.get(id(p))
                    if acc is None:
                        if g is not None:  # earlier copies gave no gradient: they count as zeros
                            mean[id(p)] = g if m == 1 else g.mul_(1.0 / m)
                    elif g is None:
                        acc.mul_((m - 1) / m)
                    else:
                        acc.lerp_(g, 1.0 / m)
        with torch.no_grad():
            for p in params:
                p.grad = mean.get(id(p))
        optimizer.step()
        return outputs[0]


def make_model_perturbation_update(bound: float = 0.01, copies: int = 2,
                                   generator: torch.Generator | None = None) -> ModelPerturbationUpdate:
    """The MP update ``update(model, objective, batch, optimizer, autocast)`` (F2M, Shi et al. 2021).

    Gradient ``(1 / M) sum_m grad L(w + u_m)``, ``u_m ~ U[-b, b]`` elementwise on every trainable
    parameter (spec 5.3: ``b = 0.01``, ``M = 2..4``).

    Args:
        bound: Noise half-width ``b >= 0`` (``b = 0`` is plain SGD with ``M`` identical passes).
        copies: Number of noisy copies ``M >= 1``.
        generator: Where the noise is drawn. Pass one on the parameters' device (e.g.
            ``torch.Generator(device="cuda").manual_seed(s)``) to avoid a host-to-device copy per step.
            ``None``: a CPU generator seeded 0, owned by the returned update (device-independent draws,
            copied to the parameters' device). Exposed as ``update.generator`` for checkpoints.

    Example::

        update = make_model_perturbation_update(bound=0.01, copies=2)
        out = update(model, objective, batch, optimizer, contextlib.nullcontext)
        ckpt["mp_generator"] = update.generator.get_state()
    """
    return ModelPerturbationUpdate(bound, copies, generator)


# --------------------------------------------------------------------------------------------------
# SN: spectral normalisation
# --------------------------------------------------------------------------------------------------

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
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) \
            or n_power_iterations < 1:
        raise ValueError(f"n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
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


# --------------------------------------------------------------------------------------------------
# SWA: stochastic weight averaging
# --------------------------------------------------------------------------------------------------


def swa_window(epoch: int, total_epochs: int, start_fraction: float = 0.75) -> bool:
    """Whether the 0-based ``epoch`` is in the SWA averaging window (Izmailov et al. 2018).

    The window is ``floor(start_fraction * total_epochs) <= epoch < total_epochs`` (a 1e-9 tolerance
    absorbs decimal-to-binary error, so 0.29 * 100 starts at 29). It always holds at least the last epoch.
    E.g. 200 epochs, 0.75: epochs 150..199; 10 epochs: 7, 8, 9.

    Args:
        epoch: 0-based epoch index, ``0 <= epoch < total_epochs``.
        total_epochs: Number of epochs ``>= 1`` of the averaged training run (or stage).
        start_fraction: Fraction of training before averaging starts, ``0 <= start_fraction < 1``.
    """
    for name, v in (("epoch", epoch), ("total_epochs", total_epochs)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if total_epochs < 1 or not 0 <= epoch < total_epochs:
        raise ValueError(f"need 0 <= epoch < total_epochs and total_epochs >= 1, got {epoch}, {total_epochs}")
    if not (isinstance(start_fraction, (int, float)) and 0 <= start_fraction < 1):
        raise ValueError(f"start_fraction must be in [0, 1), got {start_fraction!r}")
    return epoch >= math.floor(start_fraction * total_epochs + 1e-9)


def _input_tensors(batches: Iterable[Any]) -> Iterator[Tensor]:
    for item in batches:
        x = item[0] if isinstance(item, (list, tuple)) and item else item
        if not isinstance(x, Tensor):
            raise ValueError(f"batches must yield tensors (or tuples led by one), not {type(x).__name__}")
        yield x


class SwaAverager:
    """Stochastic weight averaging (Izmailov et al., UAI 2018) around ``torch.optim.swa_utils.AveragedModel``.

    ``w_SWA = (1 / n) sum_{i=1..n} w_i`` over the snapshots passed to :meth:`update` (one per epoch in
    the window, see :func:`swa_window`; the running form is ``w_SWA <- w_SWA + (w - w_SWA) / (n + 1)``).
    Only parameters are averaged; BatchNorm statistics are recomputed at ``w_SWA`` by :meth:`finalize`.
    The learning-rate schedule during the window (constant or cyclic) is the caller's.

    Args:
        model: The model being trained (a plain module, not a DDP wrapper: pass ``ddp.module``). It is
            deep-copied once; apply :func:`apply_spectral_norm` before creating the averager.
        device: Where the averaged copy lives (default: the model's device; ``"cpu"`` saves GPU memory).

    Example::

        swa = SwaAverager(model)
        for epoch in range(epochs):
            train_one_epoch(...)
            if swa_window(epoch, epochs):
                swa.update(model)
        swa.finalize(model, (x for x, _ in train_batches))   # weights <- w_SWA, BN recomputed
        ckpt["swa"] = swa.state_dict()
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        self.averaged = AveragedModel(model, device=device)

    @property
    def n_averaged(self) -> int:
        """Number of snapshots averaged so far."""
        return int(self.averaged.n_averaged.item())

    def _check_names(self, model: nn.Module) -> None:
        ours = [n for n, _ in self.averaged.module.named_parameters()]
        theirs = [n for n, _ in model.named_parameters()]
        if ours != theirs:
            raise ValueError("model's parameters do not match the averaged model's (different architecture?)")

    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (call once per epoch in the window)."""
        self._check_names(model)
        self.averaged.update_parameters(model)

    @torch.no_grad()
    def finalize(self, model: nn.Module, batches: Iterable[Any]) -> nn.Module:
        """Copy ``w_SWA`` into ``model`` and recompute its BatchNorm statistics over ``batches``.

        BN buffers are reset and re-estimated with ``torch.optim.swa_utils.update_bn`` (train-mode forward
        passes, ``momentum=None``): ``running_mean`` = mean over batches of the batch means, ``running_var``
        = mean of the unbiased batch variances. Inputs are moved to the model's device; pass them prepared
        as the training loop would (normalised, channels_last), without mixup. The model's train/eval mode
        is restored. Returns ``model``.

        Args:
            model: The model to receive the averaged weights (same architecture as at construction).
            batches: Iterable of input tensors ``[B, ...]`` (or tuples/lists whose first item is one).
        """
        if self.n_averaged == 0:
            raise ValueError("no snapshot has been averaged yet; call update(model) first")
        self._check_names(model)
        it = iter(batches)
        first = next(it, None)
        if first is None:
            raise ValueError("batches is empty; BatchNorm statistics need at least one batch")
        for p, q in zip(model.parameters(), self.averaged.module.parameters(), strict=True):
            p.copy_(q)
        device = next(model.parameters()).device
        update_bn(_input_tensors(itertools.chain([first], it)), model, device=device)
        return model

    def state_dict(self) -> dict[str, Any]:
        """``n_averaged`` and the averaged copy's tensors (``AveragedModel.state_dict()``) for checkpoints."""
        return self.averaged.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (strict: same architecture)."""
        self.averaged.load_state_dict(state_dict)
