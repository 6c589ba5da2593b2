"""World-size-independent batches: every rank draws the global batch, each keeps its contiguous slice.

Every rank runs the same loader from the same seed (sampler, augmentation generator, mixup draws), so
each global batch — indices, per-sample augmentation, the mixup coefficient and its partners — is the
one a single process draws; rank ``r`` of ``W`` then keeps rows ``[r*b, (r+1)*b)`` with ``b = B / W``.
The loader's state is therefore global and a checkpoint resumes on any number of ranks. The price is
that each rank augments (and, on the DataLoader path, decodes) the whole global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from ccsam.distributed.env import rank, world_size
from ccsam.errors import ConfigError

__all__ = ["ShardedLoader", "local_rows", "shard_batch"]


def local_rows(total: int, rank_: int | None = None, world: int | None = None) -> slice:
    """Rows of this rank in a global batch of ``total`` rows (``total`` divisible by the world size)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if total % world:
        raise ConfigError(
            f"data.batch_size={total} (the global batch) must be divisible by the {world} ranks"
        )
    size = total // world
    return slice(rank_ * size, (rank_ + 1) * size)


def shard_batch(batch: Any) -> Any:
    """This rank's contiguous slice of a global :class:`ccsam.data.augment.MixedBatch` (its ``inputs``,
    ``targets_a`` and ``targets_b`` rows; the batch itself in one process)."""
    if world_size() == 1:
        return batch
    rows = local_rows(batch.targets_a.shape[0])
    return dataclasses.replace(batch, inputs=batch.inputs[rows], targets_a=batch.targets_a[rows],
                               targets_b=batch.targets_b[rows])


class ShardedLoader:
    """Wraps an ``InMemoryLoader`` / ``DataLoaderBatches`` (global batches) to yield this rank's slices;
    ``len``, ``state_dict`` and ``load_state_dict`` are the wrapped loader's (global) ones."""

    def __init__(self, loader: Any) -> None:
        self.inner = loader
        local_rows(loader.batch_size)  # refuse an indivisible global batch before the first epoch

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self) -> Iterator[Any]:
        for batch in self.inner.epoch():
            yield shard_batch(batch)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
