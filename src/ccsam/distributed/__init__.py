"""Multi-GPU / multi-node training under torchrun: process group, sharded global batches, global-batch
CC-SAM statistics, gradient averaging, SyncBatchNorm and sharded evaluation.

Everything here is a no-op in a single process, so a run without torchrun is exactly the one-process
run. What is exact and what is not is listed in the README ("Multiple GPUs and machines").
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
    init_process_group,
    is_distributed,
    is_main,
    rank,
    shutdown,
    world_size,
)
from ccsam.distributed.sharding import ShardedLoader, local_rows, shard_batch

__all__ = [
    "ShardedLoader",
    "TorchrunEnv",
    "all_gather_variable",
    "all_reduce_mean",
    "average_gradients",
    "barrier",
    "broadcast_module",
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
