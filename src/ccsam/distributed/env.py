"""The torchrun environment and the process group: detection, start-up, rank queries, barriers.

``torchrun`` exports ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus the rendezvous address); a plain
``python -m ccsam`` / ``ccsam`` process has none of them and stays a single process: every helper here
then answers as rank 0 of a world of one and no collective is ever issued.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "TorchrunEnv",
    "barrier",
    "comm_device",
    "init_process_group",
    "is_distributed",
    "is_main",
    "rank",
    "shutdown",
    "world_size",
]


@dataclass(frozen=True)
class TorchrunEnv:
    """``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` of this process as exported by torchrun."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def detect(cls) -> TorchrunEnv | None:
        """The torchrun variables, or ``None`` when this process was not started by torchrun."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return None
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def init_process_group(device: str, env: TorchrunEnv | None = None) -> TorchrunEnv | None:
    """Join the torchrun process group (NCCL for CUDA, Gloo for the CPU); ``None`` without torchrun.

    ``device`` is the config's ``device`` (``auto`` / ``cpu`` / ``cuda``). On CUDA each process uses
    ``cuda:LOCAL_RANK`` (``torch.cuda.set_device``), so ``torch.device("cuda")`` means its own GPU.
    A world of one (``torchrun --nproc_per_node=1``) starts no group: it is the single-process run.
    """
    env = env or TorchrunEnv.detect()
    if env is None or env.world_size == 1 or dist.is_initialized():
        return env if dist.is_initialized() else None
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo", rank=env.rank, world_size=env.world_size)
    return env


def shutdown() -> None:
    """Leave the process group (after a normal end; a failed rank exits without it)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the one rank that writes files and prints."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def comm_device() -> torch.device:
    """Where small host values must go for a collective: this rank's GPU under NCCL, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
