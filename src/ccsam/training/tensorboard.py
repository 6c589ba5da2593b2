"""Optional TensorBoard scalars beside ``metrics.jsonl`` (``logging.tensorboard=true``, extra ``[tb]``).

TensorBoard is imported only when asked for; without it the run stops before training with one line
that says how to install it. Each per-epoch record of the run becomes scalars named by its (nested)
keys, e.g. ``train/loss``, ``train/img_per_s``, ``val/balanced``, ``val/few``, at step = global epoch;
the final test metrics go under ``test/`` at step = total epochs. Events are written to
``RUN_DIR/tensorboard/`` (``tensorboard --logdir RUN_DIR``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ccsam.errors import CcsamError

__all__ = ["TensorBoardScalars", "require_tensorboard", "scalars_of"]

# Record fields that index the record rather than measure something.
_INDEX_KEYS = frozenset({"epoch", "stage", "stage_epoch"})
# Per-epoch training fields that are grouped under train/.
_TRAIN_KEYS = frozenset({"loss", "accuracy", "lr", "alpha", "images", "img_per_s", "data_wait_s", "time_s"})


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or one :class:`CcsamError` line if TensorBoard is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CcsamError(
            "logging.tensorboard=true needs the tensorboard package: pip install 'ccsam[tb]' "
            "(or pip install tensorboard), or set logging.tensorboard=false"
        ) from None
    return SummaryWriter


def scalars_of(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numbers of a (nested) record as ``{"group/name": value}``; lists, strings, None are skipped.

    Top-level training fields go under ``train/``; nested dicts (``val``) use their key as the group.

    Example:
        >>> scalars_of({"epoch": 3, "loss": 0.5, "val": {"top1": 0.7, "few": None}})
        {'train/loss': 0.5, 'val/top1': 0.7}
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if not prefix and key in _INDEX_KEYS:
            continue
        if isinstance(value, Mapping):
            out.update(scalars_of(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            group = "train/" if not prefix and key in _TRAIN_KEYS else prefix
            out[f"{group}{key}"] = float(value)
    return out


class TensorBoardScalars:
    """A ``SummaryWriter`` on ``log_dir`` that writes records as scalars.

    ``purge_step`` (the epoch a resumed run continues from) drops events at or after it that an
    interrupted run wrote after its last checkpoint, as ``metrics.jsonl`` does.
    """

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        writer = require_tensorboard()
        self._writer = writer(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: Mapping[str, Any], step: int) -> None:
        """Add every scalar of ``record`` at ``step`` and flush (a long run's curves stay current)."""
        for tag, value in scalars_of(record).items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
