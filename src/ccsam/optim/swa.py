"""Stochastic weight averaging (Izmailov et al., UAI 2018; cited by the CC-SAM slides via He et al.,
NeurIPS 2019, "Asymmetric valleys"), one of the naive flattening baselines of spec section 5.3:
``w_SWA = (1 / n) sum_i w_i`` over one snapshot per epoch in the last ~25 % of training, then BatchNorm
statistics recomputed at ``w_SWA``. :class:`SwaAverager`, :func:`swa_window`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, update_bn

from ccsam.checks import check_int

__all__ = ["SwaAverager", "swa_window"]


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
    check_int("epoch", epoch)
    check_int("total_epochs", total_epochs)
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
        model: The model being trained (a plain module, not a DDP wrapper: pass
            ``ccsam.distributed.unwrap_model(ddp)``). It is deep-copied once; apply
            :func:`apply_spectral_norm` before creating the averager.
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
        self.averaged = AveragedModel(model, device=None if device is None else torch.device(device))

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
        self.copy_to(model)
        device = next(model.parameters()).device
        update_bn(_input_tensors(itertools.chain([first], it)), model, device=device)
        return model

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Copy ``w_SWA`` into ``model``'s parameters (buffers untouched); returns ``model``."""
        self._check_names(model)
        for p, q in zip(model.parameters(), self.averaged.module.parameters(), strict=True):
            p.copy_(q)
        return model

    def state_dict(self) -> dict[str, Any]:
        """``n_averaged`` and the averaged copy's tensors (``AveragedModel.state_dict()``) for checkpoints."""
        return self.averaged.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (strict: same architecture)."""
        self.averaged.load_state_dict(state_dict)
