"""Naive flattening updates of the CC-SAM motivation study (spec section 5.3): GP and MP.

The CC-SAM slides apply four generic "flat minima" operations to long-tailed methods and find that
they hardly help. Two of them are updates (SN and SWA are :mod:`ccsam.optim.spectral_norm` and
:mod:`ccsam.optim.swa`):

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

GP and MP are *updates* with the engine's signature
``update(model, objective, batch, optimizer, autocast) -> StepOutput`` (see
``ccsam.training.updates``); they work with any plain ``torch.optim`` optimiser (not a SAM wrapper).
Both restore the weights bit-exactly with ``p.copy_(saved)`` after every perturbed pass (house rule G3),
and BatchNorm running statistics are updated by exactly one forward pass per step (the others run under
:func:`ccsam.models.bn.bn_stats_frozen`). The perturbation math is
:func:`ccsam.optim.perturbation.sam_epsilon` (GP's ``r g / ||g||`` is SAM's ``eps`` with ``rho = r``) and
:func:`ccsam.optim.perturbation.uniform_noise` (MP).

Which parameters are perturbed: those of the optimiser's parameter groups that require gradients (the
parameters the step trains; e.g. only the head in a frozen-backbone stage 2). The global norm of GP is
over those of them that received a gradient in the first pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ccsam.checks import check_int, check_number
from ccsam.distributed import run_objective
from ccsam.models.bn import bn_stats_frozen
from ccsam.optim.perturbation import sam_epsilon, uniform_noise
from ccsam.optim.sam import maybe_no_sync

__all__ = [
    "GradientPenaltyUpdate",
    "ModelPerturbationUpdate",
    "make_gradient_penalty_update",
    "make_model_perturbation_update",
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


class GradientPenaltyUpdate:
    """One step of gradient-norm penalty training (Zhao, Zhang, Hu, ICML 2022, eq. 7 / Alg. 1).

    Objective ``L(w) + lambda ||g(w)||`` with ``g = grad L``; gradient by finite difference::

        g1 = g(w),  w' = w + r g1 / ||g1||,  g2 = g(w'),  w <- step(w, (1 - a) g1 + a g2),  a = lambda / r

    ``||g1||`` is the global L2 norm over the trainable parameters that have a gradient (floored at
    1e-12, so ``g1 = 0`` gives ``w' = w``). The second pass runs with BatchNorm statistics frozen; ``w``
    is restored bit-exactly before the optimiser step. ``a = 0`` is plain SGD (one wasted pass).

    Under DDP both backwards are synchronised (DDP's all-reduce): ``g1`` defines the finite-difference
    direction, which must be that of the global batch, and both ``g1`` and ``g2`` enter the update.

    Build it with :func:`make_gradient_penalty_update`.
    """

    def __init__(self, r: float = 0.05, a: float = 0.8) -> None:
        check_number("r (the finite-difference step)", r, low=0)
        check_number("a (= lambda / r)", a, low=0)
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
            out = run_objective(model, objective, batch)
        out.loss.backward()  # synchronised under DDP: g1 defines the direction and enters the update
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
                second = run_objective(model, objective, batch)
            second.loss.backward()  # synchronised under DDP
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


class ModelPerturbationUpdate:
    """One step of F2M-style model perturbation (Shi et al., NeurIPS 2021, Alg. 1, training part).

    For ``m = 1..M``: draw ``u_m ~ U[-b, b]`` for every trainable parameter (:func:`uniform_noise`),
    set ``w <- w + u_m``, forward + backward, restore ``w`` bit-exactly (``p.copy_``). The backwards
    accumulate into ``p.grad``, which is divided by ``M`` before ``optimizer.step()``: ``grad = (1/M)
    sum_m g_m`` (with ``b = 0`` and ``M`` a power of two exactly the SGD gradient; otherwise within a
    rounding of it). BatchNorm running statistics are updated by the first copy only (at ``w + u_1``);
    copies 2..M run under ``bn_stats_frozen``.

    Under DDP the copies are gradient accumulation: copies ``1..M-1`` run under ``model.no_sync()``
    (rank-local sums, no communication) and only copy ``M``'s backward is synchronised, so DDP's one
    all-reduce averages ``sum_m g_m`` over the ranks: the global-batch gradient of every copy, since
    every rank draws the same noise (the stage's generator, seeded alike on every rank).

    Reproducibility: all draws come from :attr:`generator`, copy by copy, parameter by parameter in the
    optimiser's group order. Save ``update.generator.get_state()`` in a checkpoint and restore it with
    ``set_state`` to resume the same noise sequence. Under DDP give every rank the same seed so the ranks
    perturb identically.

    Returns the first copy's output (loss and logits at ``w + u_1``, an unbiased estimate of the averaged
    loss). Build it with :func:`make_model_perturbation_update`.

    Attributes:
        bound: Half-width ``b`` of the noise.
        copies: Number of noisy copies ``M``.
        generator: The ``torch.Generator`` the noise is drawn from.
    """

    def __init__(self, bound: float = 0.01, copies: int = 2,
                 generator: torch.Generator | None = None) -> None:
        check_number("bound", bound, low=0)
        check_int("copies", copies, low=1)
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
        optimizer.zero_grad(set_to_none=True)
        outputs: list[_Out] = []
        for m in range(1, self.copies + 1):
            noise = uniform_noise(params, self.bound, self.generator)
            saved = [p.detach().clone() for p in params]
            # Copies before the last only accumulate: no all-reduce (DDP syncs the sum at the last one).
            sync = contextlib.nullcontext() if m == self.copies else maybe_no_sync(model)
            try:
                with torch.no_grad():
                    for p, u in zip(params, noise, strict=True):
                        p.add_(u)
                frozen = bn_stats_frozen(model) if m > 1 else contextlib.nullcontext()
                with sync:
                    with frozen, autocast():
                        out = run_objective(model, objective, batch)
                    out.loss.backward()
            finally:
                with torch.no_grad():
                    for p, old in zip(params, saved, strict=True):
                        p.copy_(old)
            if not outputs:  # keep only the first copy's output
                outputs.append(out)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.div_(self.copies)
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
