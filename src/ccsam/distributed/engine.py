"""What the training engine asks of the distributed layer, in one place (all no-ops in one process).

:class:`ccsam.training.trainer.Trainer` calls :func:`check_config` and :func:`prepare_model` once,
:func:`distribute_stage` on every stage it builds, :func:`distribute_objective` on every objective and
:func:`reduce_train_stats` on every epoch's statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from ccsam.config.schema import RunConfig
from ccsam.distributed.collectives import all_reduce_mean, broadcast_module
from ccsam.distributed.env import comm_device, is_distributed, world_size
from ccsam.distributed.objectives import distribute_objective
from ccsam.distributed.optim import average_gradients_before_steps
from ccsam.distributed.sharding import ShardedLoader, local_rows
from ccsam.distributed.sync_bn import convert_sync_batchnorm
from ccsam.errors import ConfigError

__all__ = ["check_config", "distribute_objective", "distribute_stage", "prepare_model", "reduce_train_stats"]


def check_config(cfg: RunConfig) -> None:
    """Refuse, with one line, what has no exact multi-rank form here."""
    if not is_distributed():
        return
    if cfg.stage1.method == "ccsam" and cfg.stage1.perturb_scope != "head":
        raise ConfigError(
            f"stage1.perturb_scope={cfg.stage1.perturb_scope} is not supported on several ranks yet "
            "(its per-class gradients would need an all-reduce per class); "
            "use perturb_scope=head or one process"
        )
    for name, stage in (("stage1", cfg.stage1), ("stage2", cfg.stage2)):
        if stage.flattening != "none":
            raise ConfigError(
                f"{name}.flattening={stage.flattening} (GP / MP) is not supported on several ranks"
            )
    local_rows(cfg.data.batch_size, 0, world_size())


def prepare_model(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """``runtime.sync_bn`` -> global-batch BatchNorm; then every rank starts from rank 0's weights."""
    if not is_distributed():
        return model
    if cfg.runtime.sync_bn:
        device = next(model.parameters()).device
        model = convert_sync_batchnorm(model, device)
    broadcast_module(model)
    return model


def distribute_stage(stage: object) -> None:
    """This rank's slice of each global batch, and gradients averaged before every optimiser step."""
    if not is_distributed():
        return
    stage.loader = ShardedLoader(stage.loader)  # type: ignore[attr-defined]
    average_gradients_before_steps(stage.optimizer)  # type: ignore[attr-defined]


def reduce_train_stats(stats: dict[str, float]) -> dict[str, float]:
    """Mean over ranks of the per-rank mean loss / accuracy (equal slices: the global-batch means)."""
    if not is_distributed() or not stats:
        return stats
    keys = sorted(stats)
    local = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=comm_device())
    values = all_reduce_mean(local)
    return {k: float(v) for k, v in zip(keys, values, strict=True)}
