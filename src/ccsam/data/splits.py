"""Long-tailed training subsets and balanced validation sets as index lists, plus their manifest.

The split is built once from the full training labels, a count profile and a dedicated seed
(never the training seed), and saved as a :class:`SplitManifest` (indices plus sha256) in the
run directory, so a run can be reproduced or audited without re-drawing anything. The test
split is never touched here.

Two subset protocols (``data.subset_protocol``), both independent of torch's and numpy's global state:

* ``per_class_rng``: ``numpy.random.Generator(PCG64(SeedSequence(seed)))``, one permutation per class.
* ``ldam_drw``: the split LDAM-DRW, MiSLAS and GCL train on (Cao et al. 2019, ``IMBALANCECIFAR10/100``):
  the legacy Mersenne-Twister stream of ``np.random.seed(seed)`` (seed 0 there), per class in ascending
  order ``shuffle`` of that class's indices and the first ``n_c`` kept. A private ``RandomState(seed)``
  gives the same stream without touching the global one.

The validation draw uses ``SeedSequence(seed, spawn_key=(1,))`` under either protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ccsam.atomic_io import atomic_write_text
from ccsam.checks import check_int

__all__ = [
    "SUBSET_PROTOCOLS",
    "SplitManifest",
    "SubsetProtocol",
    "balanced_validation_subset",
    "build_split",
    "ldam_drw_subset",
    "long_tail_subset",
]

SubsetProtocol = Literal["per_class_rng", "ldam_drw"]
SUBSET_PROTOCOLS: tuple[str, ...] = ("per_class_rng", "ldam_drw")

_SUBSET_STREAM = 0
_VALIDATION_STREAM = 1
_logger = logging.getLogger(__name__)


def _rng(seed: int, stream: int) -> np.random.Generator:
    check_int("split seed", seed, low=0)
    # Stream 0 is plain SeedSequence(seed), i.e. PCG64(seed); other streams get their own spawn key.
    spawn_key = (stream,) if stream else ()
    sequence = np.random.SeedSequence(seed, spawn_key=spawn_key)
    return np.random.Generator(np.random.PCG64(sequence))


def _labels_numpy(labels: torch.Tensor, num_classes: int | None = None) -> np.ndarray:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ValueError("labels must be a 1-D integer tensor; pass ImageArrays.labels")
    array = labels.detach().cpu().numpy().astype(np.int64, copy=False)
    if array.size and array.min() < 0:
        raise ValueError(f"labels must be >= 0, found {int(array.min())}")
    if num_classes is not None and array.size and array.max() >= num_classes:
        raise ValueError(
            f"label {int(array.max())} has no entry in counts (length {num_classes}); "
            "pass one count per class"
        )
    return array


def _members_by_class(array: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of each class in data set order (one stable argsort instead of C scans)."""
    order = np.argsort(array, kind="stable")
    ends = np.cumsum(np.bincount(array, minlength=num_classes)[:num_classes])
    return [order[end - size : end] for end, size in zip(ends, np.diff(ends, prepend=0), strict=True)]


def _check_count(cls: int, count: object, available: int) -> int:
    """``count`` as an int; one error line if it is not a non-negative integer or exceeds ``available``."""
    # bool is an int subclass but not a count; an integral float (e.g. 40.0 from a JSON file) is accepted
    if isinstance(count, bool) or not isinstance(count, (int, float, np.integer)) or count < 0 \
            or int(count) != count:
        raise ValueError(f"counts[{cls}] must be a non-negative int, got {count!r}")
    if available < int(count):
        raise ValueError(
            f"class {cls} has {available} images but the profile asks for {count}; "
            "lower n_max or use the full training split"
        )
    return int(count)


def ldam_drw_subset(labels: torch.Tensor, counts: Sequence[int], seed: int = 0) -> torch.Tensor:
    """LDAM-DRW's long-tailed CIFAR subset (``IMBALANCECIFAR10/100.gen_imbalanced_data``, Cao et al. 2019).

    With the Mersenne-Twister stream of ``np.random.seed(seed)``: for ``c = 0, 1, ...`` the indices of
    class ``c`` in data set order are shuffled in place (``shuffle``) and the first ``counts[c]`` kept.
    Every class draws from the same stream in turn, so class ``c``'s subset depends on the sizes of the
    classes before it (unlike ``per_class_rng``). ``seed = 0`` with ``counts = long_tail_counts(500 or
    5000, C, IR)`` is the split of the LDAM-DRW, MiSLAS and GCL CIFAR-LT numbers.

    Returns:
        ``int64`` indices in LDAM-DRW's data set order: grouped by class (class 0 first), shuffled within.

    Example:
        >>> from ccsam.data import long_tail_counts
        >>> labels = torch.arange(10).repeat_interleave(5000)  # CIFAR-10-like: 5,000 images per class
        >>> idx = ldam_drw_subset(labels, long_tail_counts(5000, 10, 100), seed=0)
        >>> len(idx)
        12406
        >>> torch.bincount(labels[idx]).tolist()
        [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    """
    array = _labels_numpy(labels, len(counts))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"ldam_drw subset seed must be an int in [0, 2**32), got {seed!r}")
    stream = np.random.RandomState(seed)  # the legacy global generator's algorithm and seeding
    chosen: list[np.ndarray] = []
    for cls, (count, members) in enumerate(zip(counts, _members_by_class(array, len(counts)), strict=True)):
        take = _check_count(cls, count, members.size)
        shuffled = members.copy()
        stream.shuffle(shuffled)
        chosen.append(shuffled[:take])
    return torch.from_numpy(np.concatenate(chosen) if chosen else np.zeros(0, np.int64)).to(torch.int64)


def long_tail_subset(labels: torch.Tensor, counts: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Choose ``counts[c]`` training images of every class ``c``; return their ``int64`` indices.

    Per class in ascending order, the indices of that class (in data set order) are shuffled with
    one seeded generator used sequentially over the classes, and the first ``counts[c]`` kept.
    Every class is shuffled whatever its count, so the subset of class ``c`` is a prefix of a
    permutation fixed by ``seed`` alone: lower counts give nested subsets.

    Returns:
        Indices grouped by class (class 0 first), shuffled within each class.

    Example:
        >>> from ccsam.data import long_tail_counts
        >>> labels = torch.arange(10).repeat_interleave(5000)  # CIFAR-10-like: 5,000 images per class
        >>> idx = long_tail_subset(labels, long_tail_counts(5000, 10, 100), seed=0)
        >>> len(idx)
        12406
    """
    array = _labels_numpy(labels, len(counts))
    rng = _rng(seed, _SUBSET_STREAM)
    chosen: list[np.ndarray] = []
    for cls, (count, members) in enumerate(zip(counts, _members_by_class(array, len(counts)), strict=True)):
        take = _check_count(cls, count, members.size)
        chosen.append(members[rng.permutation(members.size)[:take]])
    return torch.from_numpy(np.concatenate(chosen) if chosen else np.zeros(0, np.int64)).to(torch.int64)


def balanced_validation_subset(
    labels: torch.Tensor, exclude: torch.Tensor, per_class: int = 20, seed: int = 0
) -> torch.Tensor:
    """Choose a class-balanced validation set from the images not in ``exclude``.

    Class ``c`` gets ``min(per_class, available_c)`` images drawn at random from its images that
    are not excluded (a head class used in full gets 0). The draw uses its own stream of ``seed``,
    separate from :func:`long_tail_subset`'s, so passing the same seed to both is safe.

    Returns:
        ``int64`` indices grouped by class (class 0 first).

    Example:
        >>> from ccsam.data import long_tail_counts
        >>> labels = torch.arange(10).repeat_interleave(5000)  # CIFAR-10-like: 5,000 images per class
        >>> lt_indices = long_tail_subset(labels, long_tail_counts(5000, 10, 100), seed=0)
        >>> val = balanced_validation_subset(labels, exclude=lt_indices, per_class=20, seed=0)
        >>> torch.bincount(labels[val]).tolist()  # class 0 is used in full by the subset
        [0, 20, 20, 20, 20, 20, 20, 20, 20, 20]
    """
    check_int("per_class", per_class, low=0)
    array = _labels_numpy(labels)
    excluded = torch.as_tensor(exclude, dtype=torch.int64).cpu().numpy().reshape(-1)
    if excluded.size and (excluded.min() < 0 or excluded.max() >= array.size):
        raise ValueError(
            f"exclude holds indices outside [0, {array.size - 1}]; pass indices into the same labels"
        )
    available = np.ones(array.size, dtype=bool)
    available[excluded] = False
    num_classes = int(array.max()) + 1 if array.size else 0
    rng = _rng(seed, _VALIDATION_STREAM)
    chosen: list[np.ndarray] = []
    for members in _members_by_class(array, num_classes):
        members = members[available[members]]
        take = min(per_class, members.size)
        chosen.append(members[rng.permutation(members.size)[:take]])
    return torch.from_numpy(np.concatenate(chosen) if chosen else np.zeros(0, np.int64)).to(torch.int64)


@dataclass(frozen=True)
class SplitManifest:
    """The long-tailed training subset and the validation set of a run, as indices.

    Attributes:
        train_indices: indices into the full training :class:`ImageArrays` (the LT subset).
        val_indices: class-balanced validation indices, disjoint from ``train_indices``.
        class_counts: training images per class of the LT subset.
        val_counts: validation images per class.
        subset_seed: the seed both draws came from.
        subset_protocol: how the training subset was drawn (``per_class_rng`` or ``ldam_drw``); not part
            of the sha256, which covers the indices alone.
        sources: for data sets read from list files or folders, per role (``train``, ``val``, ``test``)
            the file, its sha256 and its per-class counts; empty for array data sets. A selection
            split read from its own list appears here, not in ``val_indices`` (which then is empty).

    Example:
        >>> import tempfile
        >>> from ccsam.data import long_tail_counts
        >>> labels = torch.arange(10).repeat_interleave(5000)  # CIFAR-10-like: 5,000 images per class
        >>> manifest = build_split(labels, long_tail_counts(5000, 10, 100), subset_seed=0)
        >>> manifest.class_counts, manifest.val_counts
        ((5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50), (0, 20, 20, 20, 20, 20, 20, 20, 20, 20))
        >>> with tempfile.TemporaryDirectory() as run_dir:  # your run directory
        ...     manifest.save_json(Path(run_dir) / "split.json")
        ...     SplitManifest.load_json(Path(run_dir) / "split.json") == manifest
        True
    """

    train_indices: tuple[int, ...]
    val_indices: tuple[int, ...]
    class_counts: tuple[int, ...]
    val_counts: tuple[int, ...]
    subset_seed: int
    subset_protocol: str = "per_class_rng"
    sources: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train_indices", "val_indices", "class_counts", "val_counts"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if len(self.class_counts) != len(self.val_counts):
            raise ValueError(
                f"class_counts has {len(self.class_counts)} classes but val_counts {len(self.val_counts)}; "
                "give one entry per class in both"
            )
        if sum(self.class_counts) != len(self.train_indices) or sum(self.val_counts) != len(self.val_indices):
            raise ValueError("SplitManifest counts do not add up to the number of indices; rebuild the split")
        if not set(self.train_indices).isdisjoint(self.val_indices):
            raise ValueError("SplitManifest train_indices and val_indices overlap; rebuild the split")

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_counts)``."""
        return len(self.class_counts)

    def sha256(self) -> str:
        """Return the sha256 hex digest of the canonical JSON of ``train_indices`` and ``val_indices``
        (and of ``sources`` when there are any, so a changed list file changes the hash)."""
        content: dict[str, Any] = {
            "train_indices": list(self.train_indices),
            "val_indices": list(self.val_indices),
        }
        if self.sources:
            content["sources"] = self.sources
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of all fields plus ``sha256``."""
        return {
            "train_indices": list(self.train_indices),
            "val_indices": list(self.val_indices),
            "class_counts": list(self.class_counts),
            "val_counts": list(self.val_counts),
            "subset_seed": self.subset_seed,
            "subset_protocol": self.subset_protocol,
            **({"sources": dict(self.sources)} if self.sources else {}),
            "sha256": self.sha256(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitManifest:
        """Rebuild a manifest from :meth:`to_dict` output; a stored ``sha256``, if any, must match."""
        fields = ("train_indices", "val_indices", "class_counts", "val_counts", "subset_seed")
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"split manifest lacks {missing}; regenerate it with SplitManifest.save_json")
        optional = {"subset_protocol": data["subset_protocol"]} if "subset_protocol" in data else {}
        manifest = cls(**{name: data[name] for name in fields}, **optional, sources=data.get("sources") or {})
        stored = data.get("sha256")
        if stored is not None and stored != manifest.sha256():
            raise ValueError(
                f"split manifest sha256 mismatch (stored {stored}, computed {manifest.sha256()}): the "
                "indices were modified; restore the original file or rebuild the split"
            )
        return manifest

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as JSON to ``path`` atomically (temporary file then ``os.replace``)."""
        atomic_write_text(Path(path), json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> SplitManifest:
        """Read a manifest written by :meth:`save_json`, verifying its stored sha256."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "sha256" not in data:
            raise ValueError(f"{path} is not a split manifest with a sha256; regenerate it with save_json")
        return cls.from_dict(data)


def _name_classes(classes: Sequence[int], limit: int = 10) -> str:
    """``"class 3"`` / ``"classes 0, 4"``: the class indices, the first ``limit`` of them and a count of
    the rest."""
    if len(classes) == 1:
        return f"class {classes[0]}"
    named = ", ".join(str(c) for c in classes[:limit])
    rest = len(classes) - limit
    return f"classes {named}" + (f" (and {rest} more)" if rest > 0 else "")


def build_split(
    labels: torch.Tensor,
    counts: Sequence[int],
    *,
    subset_seed: int = 0,
    val_per_class: int = 20,
    protocol: SubsetProtocol = "per_class_rng",
) -> SplitManifest:
    """Draw the long-tailed training subset and the balanced validation set of one run.

    Calls :func:`long_tail_subset` (``protocol="per_class_rng"``) or :func:`ldam_drw_subset`
    (``"ldam_drw"``), then :func:`balanced_validation_subset` on the remaining images, both with
    ``subset_seed`` (the validation draw on its own stream). Logs a warning naming the classes left with
    no validation image (the subset uses their whole training pool) and one when some class has fewer
    unused images than ``val_per_class``: either way balanced validation accuracy is not over every class
    equally.

    Example:
        >>> from ccsam.data import long_tail_counts
        >>> labels = torch.arange(100).repeat_interleave(500)  # CIFAR-100-like: 500 images per class
        >>> manifest = build_split(labels, long_tail_counts(500, 100, 100), subset_seed=0)
        >>> sum(manifest.class_counts), sum(manifest.val_counts)
        (10847, 1980)
    """
    if protocol not in SUBSET_PROTOCOLS:
        raise ValueError(f"unknown subset protocol {protocol!r}; use one of {', '.join(SUBSET_PROTOCOLS)}")
    draw = ldam_drw_subset if protocol == "ldam_drw" else long_tail_subset
    train = draw(labels, counts, seed=subset_seed)
    val = balanced_validation_subset(labels, train, per_class=val_per_class, seed=subset_seed)
    val_counts = torch.bincount(labels.to(torch.int64)[val], minlength=len(counts))[: len(counts)]
    empty = [c for c, n in enumerate(val_counts.tolist()) if n == 0] if val_per_class > 0 else []
    if empty:  # the training subset uses these classes in full: balanced validation accuracy skips them
        _logger.warning(
            "the validation split has no image of %s: the long-tailed training subset uses all of their "
            "training images, so balanced validation accuracy averages over the other classes only; lower "
            "data.n_max so that they keep data.val_per_class=%d unused images each, or accept that "
            "validation leaves them out",
            _name_classes(empty), val_per_class,
        )
    short = [c for c, n in enumerate(val_counts.tolist()) if 0 < n < val_per_class]
    if short:  # a class with a few unused images left over unbalances the split
        fewest = min(int(val_counts[c]) for c in short)
        _logger.warning(
            "the validation split is not class-balanced: %d class(es) have fewer unused training images than "
            "data.val_per_class=%d (the fewest: %d); set data.val_per_class<=%d for a balanced split",
            len(short), val_per_class, fewest, fewest,
        )
    return SplitManifest(
        train_indices=tuple(train.tolist()),
        val_indices=tuple(val.tolist()),
        class_counts=tuple(int(c) for c in counts),
        val_counts=tuple(val_counts.tolist()),
        subset_seed=subset_seed,
        subset_protocol=protocol,
    )
