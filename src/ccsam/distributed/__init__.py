"""Multi-GPU / multi-node training under torchrun: the process group, PyTorch's DistributedDataParallel
around the model (:mod:`~ccsam.distributed.ddp`), sharded global batches, the collectives DDP does not
cover (row gathers, per-class gradient sums, BatchNorm buffers), SyncBatchNorm and sharded evaluation.

Only torch and :mod:`ccsam.errors` below it; the engine's side (global-batch CC-SAM objectives, stage
and model set-up) is :mod:`ccsam.training.distributed`. Everything is a no-op in a single process, so a
run without torchrun is exactly the one-process run. What is exact and what is not: README, "Multiple
GPUs and machines".
"""

from ccsam.distributed.collectives import (
    all_gather_variable,
    all_reduce_mean,
    all_reduce_min,
    all_reduce_sum,
    average_buffers,
    broadcast_module,
    gather_rows,
)
from ccsam.distributed.ddp import ObjectiveModule, is_wrapped, run_objective, unwrap_model, wrap_model
from ccsam.distributed.env import (
    TorchrunEnv,
    barrier,
    comm_device,
    init_process_group,
    is_distributed,
    is_main,
    rank,
    shutdown,
    world_size,
)
from ccsam.distributed.sharding import local_rows
from ccsam.distributed.sync_bn import (
    GlobalBatchNorm2d,
    convert_sync_batchnorm,
    global_batch_statistics,
    normalises_global_batch,
)

__all__ = [
    "GlobalBatchNorm2d",
    "ObjectiveModule",
    "TorchrunEnv",
    "all_gather_variable",
    "all_reduce_mean",
    "all_reduce_min",
    "all_reduce_sum",
    "average_buffers",
    "barrier",
    "broadcast_module",
    "comm_device",
    "convert_sync_batchnorm",
    "gather_rows",
    "global_batch_statistics",
    "init_process_group",
    "is_distributed",
    "is_main",
    "is_wrapped",
    "local_rows",
    "normalises_global_batch",
    "rank",
    "run_objective",
    "shutdown",
    "unwrap_model",
    "world_size",
    "wrap_model",
]
