"""The method-agnostic training loop: one epoch of updates (prediction is :mod:`ccsam.evaluation.predict`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch.optim import Optimizer
from tqdm.auto import tqdm

from ccsam.data.dataloader import DataLoaderBatches
from ccsam.data.loader import InMemoryLoader
from ccsam.models import Classifier
from ccsam.optim.schedules import set_learning_rate
from ccsam.training.objectives import Objective
from ccsam.training.precision import Runtime
from ccsam.training.updates import Update


def train_one_epoch(
    model: Classifier,
    loader: InMemoryLoader | DataLoaderBatches,
    objective: Objective,
    optimizer: Optimizer,
    update: Update,
    lr_at_step: Callable[[int], float],
    *,
    runtime: Runtime | None = None,
    description: str = "",
    progress: bool = True,
) -> dict[str, float]:
    """Run one epoch of optimiser steps; returns the mean loss and the accuracy on ``targets_a``.

    ``update`` is the stage's update (one SGD pass, SAM / ASAM / ImbSAM's two passes, GP, MP; see
    :func:`ccsam.training.updates.build_update`): the loop knows nothing else about the optimiser.

    Loss and correct counts accumulate on the device and are read once at the end of the epoch (no
    host synchronisation per step). The forward pass runs under ``runtime.autocast()``.
    """
    autocast = runtime.autocast if runtime is not None else contextlib.nullcontext
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for step, batch in enumerate(tqdm(loader.epoch(), total=len(loader), desc=description,
                                      leave=False, disable=not progress)):
        set_learning_rate(optimizer, lr_at_step(step))
        out = update(model, objective, batch, optimizer, autocast)
        loss_sum += out.loss.detach() * batch.targets_a.shape[0]
        correct += (out.logits.argmax(dim=1) == batch.targets_a).sum()
        seen += batch.targets_a.shape[0]
    if seen == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen}
