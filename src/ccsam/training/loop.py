"""The method-agnostic training loop: one epoch of updates (prediction is :mod:`ccsam.evaluation.predict`)."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from ccsam.data.dataloader import DataLoaderBatches
from ccsam.data.memory_loader import InMemoryLoader
from ccsam.optim.schedules import set_learning_rate
from ccsam.training.nonfinite import NonFiniteWatch, skip_nonfinite_steps
from ccsam.training.objectives import Objective
from ccsam.training.precision import Runtime
from ccsam.training.updates import Update


def train_one_epoch(
    model: nn.Module,
    loader: InMemoryLoader | DataLoaderBatches,
    objective: Objective,
    optimizer: Optimizer,
    update: Update,
    lr_at_step: Callable[[int], float],
    *,
    runtime: Runtime | None = None,
    description: str = "",
    progress: bool = True,
    on_nonfinite: str = "stop",
) -> dict[str, float | int]:
    """Run one epoch of optimiser steps; returns the mean loss, the accuracy on ``targets_a`` and timing.

    ``model`` is the model, or under torchrun ``DistributedDataParallel`` around it (``Stage.runner``);
    ``update`` is the stage's update (one SGD pass, SAM / ASAM / ImbSAM's two passes, GP, MP; see
    :func:`ccsam.training.updates.build_update`): the loop knows nothing else about the optimiser.

    ``on_nonfinite`` (see :mod:`ccsam.training.nonfinite`): ``stop`` ends the epoch early at a
    non-finite loss and adds ``nonfinite_step`` / ``nonfinite_loss`` to the result; ``skip`` leaves out
    steps with non-finite gradients (not applied, not averaged) and adds ``skipped_steps``.

    Loss and correct counts accumulate on the device and are read once at the end of the epoch (no
    host synchronisation per step). The forward pass runs under ``runtime.autocast()``.

    Timing (for long runs): ``images`` trained on, ``img_per_s`` = images / wall time of the epoch (the
    final read of the accumulators waits for the device), and ``data_wait_s`` = host time spent
    waiting for the loader to hand over the next batch (high values mean the input pipeline, not the
    model, limits the speed).
    """
    autocast = runtime.autocast if runtime is not None else contextlib.nullcontext
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    data_wait = 0.0
    start = time.perf_counter()
    batches = iter(tqdm(loader.epoch(), total=len(loader), desc=description, leave=False,
                        disable=not progress))
    watch = NonFiniteWatch()
    guard = skip_nonfinite_steps(optimizer) if on_nonfinite == "skip" else contextlib.nullcontext([0])
    with guard as skipped:
        for step in itertools.count():
            waited = time.perf_counter()
            batch = next(batches, None)
            data_wait += time.perf_counter() - waited
            if batch is None:
                break
            set_learning_rate(optimizer, lr_at_step(step))
            before = skipped[0]
            out = update(model, objective, batch, optimizer, autocast)
            if skipped[0] != before:
                continue
            if on_nonfinite == "stop" and watch.record(out.loss):
                break
            loss_sum += out.loss.detach() * batch.targets_a.shape[0]
            correct += (out.logits.argmax(dim=1) == batch.targets_a).sum()
            seen += batch.targets_a.shape[0]
    nonfinite: dict[str, float | int] = {}
    if on_nonfinite == "stop" and watch.check():
        # check() is True exactly when it has recorded the first non-finite step and its loss
        first_step, first_value = watch.first_step, watch.first_value
        assert first_step is not None and first_value is not None
        nonfinite = {"nonfinite_step": first_step, "nonfinite_loss": first_value}
    elif on_nonfinite == "skip":
        nonfinite = {"skipped_steps": skipped[0]}
    if seen == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "images": 0, "img_per_s": 0.0,
                "data_wait_s": data_wait, **nonfinite}
    stats = {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen}
    elapsed = time.perf_counter() - start
    return {**stats, "images": seen, "img_per_s": seen / elapsed if elapsed > 0 else float("inf"),
            "data_wait_s": data_wait, **nonfinite}

