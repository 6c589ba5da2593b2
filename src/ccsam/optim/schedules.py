"""Schedules as pure functions of explicit counters (the loop owns the counters).

- :func:`learning_rate` gives the LR of a stage at (stage epoch, step within the epoch).
- :func:`adversarial_weight` gives CC-SAM stage 2's alpha at a stage-2 epoch.
- :func:`scheduled_sam_radius` gives SAM's rho at a stage-1 epoch under a ``rho_milestones`` schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer

from ccsam.config.choices import RhoSchedule
from ccsam.config.schema import ScheduleFields


def official_step_factor(
    epoch: int, *, warmup_epochs: int, warmup_start_factor: float, milestones: Sequence[int], gamma: float
) -> float:
    """LR multiplier of the official CC-SAM code's WarmupMultiStepLR at 0-indexed ``epoch``.

    The official loop calls ``scheduler.step()`` at the *start* of every epoch (PyTorch 1.4 style), so
    epoch e is trained with the scheduler's value at counter t = e + 1:
    factor(t) = (w0 + (1 - w0) t / W if t < W else 1) * gamma^#{m in milestones : m <= t}.
    With W = 5, w0 = 1/3, milestones (160, 180), gamma 0.1 and lr 0.1 this gives the per-epoch table of
    spec section 1.4: 0.0467, 0.0600, 0.0733, 0.0867, then 0.1 up to epoch 158, 0.01 for 159..178 and
    0.001 from 179 on.
    """
    t = epoch + 1
    warm = warmup_start_factor + (1.0 - warmup_start_factor) * t / warmup_epochs if t < warmup_epochs else 1.0
    return warm * gamma ** sum(1 for m in milestones if m <= t)


def cosine_factor(progress: float, *, warmup_progress: float, warmup_start_factor: float) -> float:
    """Linear warm-up from ``warmup_start_factor`` to 1 over ``warmup_progress``, then half-cosine to 0.

    ``progress`` is the fraction of the stage done (epoch + step / steps_per_epoch) / epochs.
    """
    if progress < warmup_progress:
        return warmup_start_factor + (1.0 - warmup_start_factor) * progress / warmup_progress
    rest = (progress - warmup_progress) / max(1.0 - warmup_progress, 1e-12)
    return 0.5 * (1.0 + math.cos(math.pi * min(rest, 1.0)))


def learning_rate(stage: ScheduleFields, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """Learning rate of a stage at 0-indexed stage ``epoch`` and ``step`` within it.

    ``official_step`` changes once per epoch (as the released code); ``cosine`` changes every step;
    ``constant`` is ``stage.lr`` throughout (official CIFAR stage 2: 0.01).
    """
    if stage.schedule == "constant":
        return stage.lr
    if stage.schedule == "official_step":
        return stage.lr * official_step_factor(
            epoch,
            warmup_epochs=stage.warmup_epochs,
            warmup_start_factor=stage.warmup_start_factor,
            milestones=stage.milestones,
            gamma=stage.gamma,
        )
    epochs = max(stage.epochs, 1)
    progress = (epoch + step / max(steps_per_epoch, 1)) / epochs
    return stage.lr * cosine_factor(
        progress, warmup_progress=stage.warmup_epochs / epochs, warmup_start_factor=stage.warmup_start_factor
    )


def adversarial_weight(stage_epoch: int, total_epochs: int, up_limit: float) -> float:
    """CC-SAM stage-2 weight of the adversarial loss: alpha = min((t + 1) / T, up_limit) (spec 2.2)."""
    return min((stage_epoch + 1) / max(total_epochs, 1), up_limit)


def set_learning_rate(optimizer: Optimizer, lr: float) -> None:
    """Write ``lr * lr_factor`` into every parameter group (``lr_factor`` 1 where a group has none; e.g.
    MiSLAS's head at a fraction of its LWS scales' rate); the one place the loop touches the optimiser's LR."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)


def scheduled_sam_radius(stage: ScheduleFields, epoch: int) -> float | None:
    """SAM's / ASAM's ``rho`` at 0-based ``epoch`` of a stage whose optimiser has ``rho_milestones``;
    ``None`` otherwise (a constant ``rho`` stays in the optimiser as built)."""
    choice = getattr(stage, "optimizer", None)
    if isinstance(choice, RhoSchedule) and choice.rho_milestones:
        return choice.rho_at(epoch)
    return None


def set_sam_radius(optimizer: Optimizer, rho: float) -> None:
    """Write the SAM radius ``rho`` into every parameter group (a ``stage1.optimizer.rho_milestones``
    schedule, set at the start of each epoch; SAM reads ``group["rho"]`` at every first step)."""
    for group in optimizer.param_groups:
        group["rho"] = rho
