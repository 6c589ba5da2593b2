"""Multi-GPU / multi-node training under torchrun: the process group, sharded global batches, the
collectives (row gathers, gradient averaging), SyncBatchNorm and sharded evaluation.

Only torch and :mod:`ccsam.errors` below it; the engine's side (global-batch CC-SAM objectives, stage
and model set-up) is :mod:`ccsam.training.distributed`. Everything is a no-op in a single process, so a
run without torchrun is exactly the one-process run. What is exact and what is not: README, "Multiple
GPUs and machines".
"""

from ccsam.distributed.collectives import (
    all_gather_variable,
    all_reduce_mean,
    average_gradients,
    broadcast_module,
    gather_rows,
)
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
from ccsam.distributed.optim import average_gradients_before_steps
from ccsam.distributed.sharding import ShardedLoader, local_rows, shard_batch
from ccsam.distributed.sync_bn import GlobalBatchNorm2d, convert_sync_batchnorm

__all__ = [
    "GlobalBatchNorm2d",
    "ShardedLoader",
    "TorchrunEnv",
    "all_gather_variable",
    "all_reduce_mean",
    "average_gradients",
    "average_gradients_before_steps",
    "barrier",
    "broadcast_module",
    "comm_device",
    "convert_sync_batchnorm",
    "gather_rows",
    "init_process_group",
    "is_distributed",
    "is_main",
    "local_rows",
    "rank",
    "shard_batch",
    "shutdown",
    "world_size",
]
