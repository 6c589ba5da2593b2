"""World-size-independent batches: every rank draws the global batch, each keeps its contiguous slice.

Every rank runs the same loader from the same seed (sampler, augmentation generator, mixup draws), so
each global batch — indices, per-sample augmentation draws, the mixup coefficient and its partners —
is the one a single process draws; rank ``r`` of ``W`` then keeps rows ``[r*b, (r+1)*b)`` with
``b = B / W`` (the loaders' ``keep``: they draw every random number of the global batch but augment,
and on the DataLoader path load, only the kept rows and their mixup partners). The loader's state is
therefore global and a checkpoint resumes on any number of ranks.
"""

from __future__ import annotations

from ccsam.distributed.env import rank, world_size
from ccsam.errors import ConfigError

__all__ = ["local_rows"]


def local_rows(total: int, rank_: int | None = None, world: int | None = None, *,
               key: str = "data.batch_size") -> slice:
    """Rows of this rank in a global batch of ``total`` rows (``total`` divisible by the world size; ``key``
    names the setting in the error)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if total % world:
        raise ConfigError(f"{key}={total} (the global batch) must be divisible by the {world} ranks")
    size = total // world
    return slice(rank_ * size, (rank_ + 1) * size)
