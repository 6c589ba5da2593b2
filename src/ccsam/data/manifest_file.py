"""``ccsam data manifest``: a run's split manifest written without training, for checking or sharing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ccsam.atomic_io import atomic_write_text
from ccsam.config.schema import DataConfig
from ccsam.data.build import build_manifest
from ccsam.errors import RunDirError

__all__ = ["write_manifest_file"]


def write_manifest_file(cfg: DataConfig, out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write ``build_manifest(cfg)`` as JSON to ``out`` (refusing an existing file) and return a summary.

    The file is :meth:`SplitManifest.to_dict` (``train_indices``, ``val_indices``, ``class_counts``,
    ``val_counts``, ``subset_seed``, ``subset_protocol``, ``sha256``) plus ``data``: the data settings
    that produced it. :meth:`SplitManifest.load_json` reads it back and checks the sha256; it equals the
    ``split_manifest.json`` of a run with the same data settings.

    Example:
        >>> import tempfile
        >>> from ccsam.config import resolve_config
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_manifest_file(resolve_config("digits-lt").data, Path(tmp) / "split.json")
        {'train': 335, 'val': 200, 'subset_protocol': 'per_class_rng', 'sha256': '...'}

        For CIFAR-10-LT the same call reads the CIFAR-10 labels from your data folder (``data.root``):

        >>> summary = write_manifest_file(resolve_config("cifar10-lt-ce").data, "split.json")  # doctest: +SKIP
        >>> summary["train"]  # doctest: +SKIP
        12406
    """
    path = Path(out)
    if path.exists():
        raise RunDirError(f"'{path}' already exists; choose another --out (a manifest is never overwritten)")
    manifest = build_manifest(cfg)
    settings = cfg.model_dump(mode="json", include={"dataset", "profile", "imbalance_ratio", "n_max",
                                                    "subset_seed", "subset_protocol", "val_per_class"})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**manifest.to_dict(), "data": settings}) + "\n")
    return {"train": len(manifest.train_indices), "val": len(manifest.val_indices),
            "subset_protocol": manifest.subset_protocol, "sha256": manifest.sha256()}
