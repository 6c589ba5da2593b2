"""The protocol every sharpness-aware optimizer implements (house rule G3, the davda54/sam contract).

A two-pass step of SAM (Foret et al., ICLR 2021) and its variants (ASAM, ImbSAM, CC-SAM) is:

1. forward + backward at ``w``  -> ``p.grad = g(w)``;
2. ``first_step()``: ``w <- w + eps(g)``, the old ``w`` is kept;
3. forward + backward at ``w + eps`` -> ``p.grad = g(w + eps)``;
4. ``second_step()``: ``w`` is restored bit-exactly and ``base_optimizer`` steps with ``g(w + eps)``.

``step(closure)`` is steps 2-4 with ``closure`` doing step 3. The training loop only knows this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from torch.optim import Optimizer

__all__ = ["BaseOptimizerWrapper", "SharpnessOptimizer"]


@runtime_checkable
class SharpnessOptimizer(Protocol):
    """A two-pass optimizer: ``first_step`` perturbs, ``second_step`` restores and steps.

    ``base_optimizer.param_groups`` is the same list object as ``param_groups`` (so learning-rate
    adapters write one place), also after ``load_state_dict``.

    Example:
        >>> import torch
        >>> from ccsam.optim.sam import SAM
        >>> isinstance(SAM([torch.nn.Parameter(torch.zeros(1))], torch.optim.SGD, lr=0.1), SharpnessOptimizer)
        True
    """

    base_optimizer: Optimizer
    param_groups: list[dict[str, Any]]

    def first_step(self, zero_grad: bool = False) -> None:
        """Move the weights to ``w + eps`` computed from the current gradients."""
        ...

    def second_step(self, zero_grad: bool = False) -> None:
        """Restore ``w`` exactly and apply ``base_optimizer.step()`` with the current gradients."""
        ...

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """``first_step`` -> ``closure()`` (forward + backward at ``w + eps``) -> ``second_step``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers ...) and the shared param groups."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict`` and re-link ``base_optimizer.param_groups`` to ``param_groups``."""
        ...


class BaseOptimizerWrapper(Optimizer):
    """An optimizer that updates through ``self.base_optimizer`` and shares its ``param_groups`` and
    ``state`` (one list of group dicts and one state: LR schedulers, checkpoints and hooks see one truth).

    Subclasses build ``self.base_optimizer``, then call :meth:`_share_with_base`.
    """

    base_optimizer: Optimizer

    def _share_with_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict`` (its param groups carry the wrapper's options, e.g. ``rho``)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the base optimizer, then share its (new) ``param_groups`` and ``state`` again."""
        self.base_optimizer.load_state_dict(state_dict)
        self._share_with_base()
