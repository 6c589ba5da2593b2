"""A spawned rank that fails (rank 1) while rank 0 waits in a collective; kept apart from the test
module so that the spawned processes import only torch and ``ccsam.distributed``."""

from __future__ import annotations

import os

import torch

from ccsam.distributed import barrier
from ccsam.distributed.launch import torchrun_session


def failing_worker(rank: int, port: int, world: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with torchrun_session("cpu"):
        if rank == 1:
            raise ValueError("synthetic failure")
        barrier()  # rank 0 waits for a rank that never comes
