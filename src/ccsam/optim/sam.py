"""SAM (Foret et al., ICLR 2021) and ASAM (Kwon et al., ICML 2021) around any torch optimizer.

The davda54/sam contract (house rule G3), re-derived: ``first_step`` / ``second_step`` /
``step(closure)``, a ``base_optimizer`` that shares ``param_groups`` and ``state``, and a
``load_state_dict`` that re-links them. The update of one step is

    g1 = dL/dw (w),  eps = rho * g1 / ||g1||   (ASAM: rho * T_w^2 g1 / ||T_w g1||, T_w = |w| + eta),
    g2 = dL/dw (w + eps),  w <- base_update(w, g2)

with the math in :mod:`ccsam.optim.perturbation`. ``w`` is restored with ``p.copy_(old)`` (bit-exact),
so ``rho = 0`` reproduces the base optimizer exactly.

Mixed precision and DDP (see :class:`SAM` for the full call sequences):

- bf16 ``torch.autocast``: nothing changes (no loss scaling).
- fp16 with ``torch.amp.GradScaler``: backward both passes on ``scaler.scale(loss)``; ``first_step``
  runs on the *scaled* gradients (``eps`` is invariant to the scale, and an overflow gives ``eps = 0``);
  ``second_step(grad_scaler=scaler)`` unscales, checks and steps through ``scaler.step(base_optimizer)``;
  then ``scaler.update()``. Do **not** call ``scaler.unscale_`` before ``first_step``: it may run once
  per update, and the second pass's gradients would then reach the base optimizer still scaled.
- DDP, exact: let both backwards all-reduce; ``eps`` then comes from the global-batch gradient, as in
  one process (what the training engine does, :mod:`ccsam.training.updates`).
- DDP, cheaper: run the first forward/backward under :func:`maybe_no_sync` (``model.no_sync()``) so
  that only the second pass all-reduces; ``eps`` then uses each rank's local gradient (davda54/sam
  README), so the perturbation depends on the number of GPUs.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.amp import GradScaler
from torch.optim import Optimizer

from ccsam.optim.base import BaseOptimizerWrapper
from ccsam.optim.perturbation import global_grad_norm, sam_epsilon

__all__ = ["SAM", "maybe_no_sync"]

_SAM_KEYS = ("rho", "adaptive", "eta")


def _check_hparams(rho: float, eta: float) -> None:
    if not 0 <= rho < math.inf:
        raise ValueError(f"rho must be finite and >= 0, got {rho}")
    if not 0 <= eta < math.inf:
        raise ValueError(f"eta (the ASAM offset in T_w = |w| + eta) must be finite and >= 0, got {eta}")


def check_optimizer_class(base_optimizer_cls: Any) -> None:
    """Refuse an optimizer instance (or anything else that is not a class) where its class is wanted."""
    if not isinstance(base_optimizer_cls, type):
        what = type(base_optimizer_cls).__name__
        raise TypeError(f"base_optimizer_cls must be an optimizer class such as torch.optim.SGD, not an instance "
                        f"of {what}; pass the class and its keyword arguments (lr=..., momentum=...)")


def maybe_no_sync(model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """``model.no_sync()`` for DDP / FSDP-style wrappers, a ``nullcontext`` for a plain module.

    Wrap a backward whose gradient is only accumulated in it (e.g. all but the last of several
    accumulated passes), or SAM's *first* forward + backward for the cheaper rank-local perturbation
    (then only the gradient at ``w + eps`` is all-reduced, one all-reduce per step as SGD).

    Example::

        with maybe_no_sync(model):
            loss_fn(model(x), y).backward()
    """
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()


class SAM(BaseOptimizerWrapper):
    """Sharpness-Aware Minimization; ``adaptive=True`` gives ASAM.

    Args:
        params: Parameters or parameter groups; a group may set its own ``rho``, ``adaptive``, ``eta``
            (the norm ``||g||`` stays global over all groups, each group scaled by its own ``T_w``).
        base_optimizer_cls: The optimizer class that applies the update, e.g. ``torch.optim.SGD``.
        rho: Radius ``rho >= 0`` (0.05 for CIFAR ResNets; ASAM typically 0.5-2).
        adaptive: ASAM's elementwise scaling ``T_w = |w| + eta``.
        eta: ASAM offset ``eta >= 0`` (Kwon et al. use 0.01).
        **base_kwargs: Passed to ``base_optimizer_cls`` (``lr``, ``momentum``, ``weight_decay`` ...).

    Example:
        Plain, bf16 autocast (same code inside ``torch.autocast``), and BN statistics updated once::

            opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
            with maybe_no_sync(model):                      # DDP: no all-reduce in the first pass
                loss_fn(model(x), y).backward()
            opt.first_step(zero_grad=True)                  # w <- w + eps
            with bn_stats_frozen(model):                    # ccsam.models.bn
                loss_fn(model(x), y).backward()
            opt.second_step(zero_grad=True)                 # w restored, SGD step with g(w + eps)

        fp16 with ``scaler = torch.amp.GradScaler(device_type)``::

            scaler.scale(loss_fn(model(x), y)).backward()
            opt.first_step(zero_grad=True)                  # no unscale_ here: eps is scale-invariant
            scaler.scale(loss_fn(model(x), y)).backward()
            # to clip: scaler.unscale_(opt.base_optimizer); clip_grad_norm_(model.parameters(), c)
            opt.second_step(zero_grad=True, grad_scaler=scaler)
            scaler.update()
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        **base_kwargs: Any,
    ) -> None:
        _check_hparams(rho, eta)
        check_optimizer_class(base_optimizer_cls)
        super().__init__(params, {"rho": rho, "adaptive": adaptive, "eta": eta, **base_kwargs})
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self._share_with_base()
        self.defaults = {**self.base_optimizer.defaults, "rho": rho, "adaptive": adaptive, "eta": eta}
        self._backup: dict[Tensor, Tensor] | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to both optimizers (one shared dict), with SAM's and the base's defaults."""
        _check_hparams(*(param_group.get(k, self.defaults[k]) for k in ("rho", "eta")))
        base = self.__dict__.get("base_optimizer")
        if base is None:  # called from Optimizer.__init__, before the base optimizer exists
            super().add_param_group(param_group)
            return
        for key in _SAM_KEYS:
            param_group.setdefault(key, self.defaults[key])
        base.add_param_group(param_group)  # appends to the shared list

    def _grad_norm(self) -> Tensor | None:
        """Global ``||g||`` (``||T_w g||`` for adaptive groups) over all groups; None without gradients."""
        norms = [
            global_grad_norm(g["params"], g["adaptive"], g["eta"])
            for g in self.param_groups
            if any(p.grad is not None for p in g["params"])
        ]
        if not norms:
            return None
        dtype = functools.reduce(torch.promote_types, (n.dtype for n in norms))
        return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device, dtype) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Save ``w``, move to ``w + eps``, ``eps`` from the current ``p.grad`` (Foret et al., eq. 2)."""
        if self._backup is not None:
            raise RuntimeError("first_step() called twice without second_step(); the saved w would be lost")
        norm = self._grad_norm()
        self._backup = {}
        for group in self.param_groups:
            if norm is None or group["rho"] == 0:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            epsilons = sam_epsilon(params, group["rho"], group["adaptive"], group["eta"], norm)
            for p, e in zip(params, epsilons, strict=True):
                if e is not None:
                    self._backup[p] = p.detach().clone()
                    p.add_(e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False, grad_scaler: GradScaler | None = None) -> None:
        """Restore ``w`` bit-exactly, then ``base_optimizer.step()`` with ``p.grad = g(w + eps)``.

        With ``grad_scaler`` the step is ``grad_scaler.step(base_optimizer)`` (unscale, inf check, maybe
        skip); the caller then runs ``grad_scaler.update()``.
        """
        if self._backup is None:
            raise RuntimeError("second_step() called without first_step()")
        for p, old in self._backup.items():
            p.copy_(old)
        self._backup = None
        if grad_scaler is None:
            self.base_optimizer.step()
        else:
            grad_scaler.step(self.base_optimizer)
        if zero_grad:
            self.zero_grad()

    def step(  # type: ignore[override]
        self, closure: Callable[[], Any] | None = None, grad_scaler: GradScaler | None = None
    ) -> Any:
        """Both SAM moves around ``closure`` (forward + backward at ``w + eps``, run with grad enabled).

        The first forward + backward at ``w`` must already have filled ``p.grad``. Returns what
        ``closure`` returns (the loss at ``w + eps``). With ``grad_scaler``, ``closure`` backpropagates
        ``grad_scaler.scale(loss)``.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that re-runs forward and backward at w + eps")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step(grad_scaler=grad_scaler)
        return loss

