"""Sharded evaluation: each rank predicts a contiguous block of the split, the blocks are gathered in
order, and every rank then computes the metrics of the whole split (the single-process numbers, up to
the float differences of batching the same samples differently)."""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch

from ccsam.distributed.collectives import all_gather_variable
from ccsam.distributed.env import is_distributed, rank, world_size

__all__ = ["gather_predictions", "local_split"]


class _Split(Protocol):
    """What sharding needs of :class:`ccsam.data.arrays.ImageArrays`."""

    def __len__(self) -> int: ...

    def subset(self, indices: torch.Tensor) -> _Split: ...


S = TypeVar("S", bound=_Split)


def local_split(arrays: S) -> S:
    """This rank's block ``[r * ceil(N / W), (r + 1) * ceil(N / W))`` of a split (all of it in one
    process)."""
    if not is_distributed():
        return arrays
    per_rank = -(-len(arrays) // world_size())
    start = min(rank() * per_rank, len(arrays))
    return arrays.subset(torch.arange(start, min(start + per_rank, len(arrays))))  # type: ignore[return-value]


def gather_predictions(logits: torch.Tensor) -> torch.Tensor:
    """Every rank's block of logits concatenated in rank order: the logits of the whole split."""
    return all_gather_variable(logits) if is_distributed() else logits
