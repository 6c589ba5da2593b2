"""What a training epoch does about a NaN / infinite loss (``runtime.on_nonfinite``).

* ``stop`` (default): every step's loss is checked on the device (no host synchronisation per step);
  the flags are read every :data:`CHECK_EVERY` steps and at the end of the epoch, and the epoch ends at
  the first check that finds one, reporting the exact first non-finite step. The caller then stops the
  run before anything of that epoch is written, so the last checkpoint is the last good one.
* ``skip``: a step whose gradients are not all finite is not applied (the optimiser, or a SAM-family
  optimiser's base optimiser, does not step) and is counted; this synchronises once per step, as
  ``torch.amp.GradScaler`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.optim import Optimizer

from ccsam.distributed import all_reduce_mean, all_reduce_min, all_reduce_sum, comm_device, is_distributed

CHECK_EVERY = 32


class NonFiniteWatch:
    """Per-step non-finite flags of one epoch, kept on the device and read in blocks."""

    def __init__(self) -> None:
        self._flags: list[torch.Tensor] = []
        self._offset = 0
        self.first_step: int | None = None
        self.first_value: float | None = None

    def record(self, loss: torch.Tensor) -> bool:
        """Add one step's loss; returns True when a check found a non-finite step (stop the epoch)."""
        self._flags.append(loss.detach().reshape(()))
        return len(self._flags) >= CHECK_EVERY and self.check()

    def check(self) -> bool:
        """Read the pending flags once; True if any step so far had a non-finite loss.

        Under torchrun the ranks decide together (one all-reduce per check): the first step at which the
        loss of any rank was non-finite, so every rank ends the epoch at the same check and reports the
        same step (a rank stopping alone would leave the others waiting in their next collective)."""
        if self.first_step is None and self._flags:
            losses = torch.stack(self._flags).float()
            bad = (~torch.isfinite(losses)).nonzero()
            index = int(bad[0, 0]) if bad.numel() else len(self._flags)  # len: none in this block
            if is_distributed():
                index = int(all_reduce_min(torch.tensor(float(index), device=comm_device())))
            if index < len(self._flags):
                value = losses[index] if not torch.isfinite(losses[index]) else torch.tensor(0.0)
                if is_distributed():  # a non-finite loss of a rank at that step (nan + x = nan, inf + x = inf)
                    value = all_reduce_sum(value.to(comm_device()))
                self.first_step, self.first_value = self._offset + index, float(value)
            self._offset += len(self._flags)
            self._flags = []
        return self.first_step is not None


@contextlib.contextmanager
def skip_nonfinite_steps(optimizer: Optimizer) -> Iterator[list[int]]:
    """Within the block, optimiser steps with a non-finite gradient are skipped; yields a one-element
    list counting the skipped steps. For SAM-family optimisers the base optimiser's step is guarded, so
    ``second_step`` still restores the unperturbed weights first."""
    target = getattr(optimizer, "base_optimizer", optimizer)
    step: Callable[..., object] = target.step
    skipped = [0]

    def guarded(*args: object, **kwargs: object) -> object:
        grads = [p.grad for group in target.param_groups for p in group["params"] if p.grad is not None]
        bad = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if is_distributed():  # skip on every rank or on none: the steps' gradient all-reduces must pair up
            bad = bool(all_reduce_mean(torch.tensor(float(bad), device=comm_device())) > 0)
        if bad:
            skipped[0] += 1
            return None
        return step(*args, **kwargs)

    own = target.__dict__.get("step")
    target.step = guarded  # type: ignore[method-assign]
    try:
        yield skipped
    finally:
        if own is None:
            del target.step  # back to the class's (hooked) method
        else:
            target.step = own  # type: ignore[method-assign]
