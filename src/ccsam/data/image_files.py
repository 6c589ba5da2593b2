"""Image data sets kept on disk: list files (``relative/path label`` per line) and ImageFolder trees.

The large long-tailed benchmarks (ImageNet-LT, Places-LT, iNaturalist 2018) are distributed as JPEG
trees plus split files with one ``relative/path label`` line per image, paths relative to the image
root. :func:`read_list_file` parses such a file, :func:`read_image_folder` scans a torchvision
``ImageFolder`` tree (``root/<class>/<image>``); both return an :class:`ImageFiles`, the on-disk
counterpart of :class:`~ccsam.data.arrays.ImageArrays` (paths instead of pixels). Every problem with
the files is an :class:`ImageFileError` whose message names the file, the line and the fix.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ccsam.errors import CcsamError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFileError",
    "ImageFiles",
    "LoadOptions",
    "file_sha256",
    "read_image_folder",
    "read_list_file",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
OPEN_SET_LABEL = -1  # label of an open-set image (a class absent from training)


class ImageFileError(CcsamError, ValueError):
    """A list file or image that is missing or garbled; the message names the file, line and fix."""


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class LoadOptions:
    """How a split of image files is decoded and batched (set from ``DataConfig`` by ``build_data``)."""

    image_size: int = 224
    color_jitter: float = 0.0
    decode: str = "cpu"
    num_workers: int = 2
    prefetch_factor: int = 4


@dataclass(frozen=True)
class ImageFiles:
    r"""Images on disk: ``root / paths[i]`` has label ``labels[i]``; ``lines[i]`` is where it was listed.

    Attributes:
        root: folder the paths are relative to (``data.root``).
        paths: relative image paths, as written in the list file.
        labels: ``int64 [N]``; ``-1`` marks an open-set image (a class the model never saw).
        class_names: one name per class; its length defines ``num_classes``.
        source: the list file or folder the images were read from (for error messages).
        lines: 1-based line of each image in ``source`` (empty for a folder scan).
        loading: decoding and batching options of this split.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # stands for data.root and its list file
        ...     root = Path(tmp)
        ...     _ = (root / "train.txt").write_text("train/n01/a.jpg 0\ntrain/n02/b.jpg 1\n")
        ...     files = read_list_file(root / "train.txt", root)
        ...     files.path(0) == root / "train/n01/a.jpg"
        True
        >>> files.paths, files.labels.tolist(), files.class_names, files.lines
        (('train/n01/a.jpg', 'train/n02/b.jpg'), [0, 1], ('0', '1'), (1, 2))
    """

    root: Path
    paths: tuple[str, ...]
    labels: torch.Tensor
    class_names: tuple[str, ...]
    source: str
    lines: tuple[int, ...] = ()
    loading: LoadOptions = LoadOptions()

    channels = 3  # every image is decoded to RGB

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels) or (self.lines and len(self.lines) != len(self.paths)):
            raise ValueError(f"{self.source}: {len(self.paths)} paths but {len(self.labels)} labels")

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(class_names)``."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> Path:
        """The absolute path of image ``index``."""
        return self.root / self.paths[index]

    def where(self, index: int) -> str:
        """``'<source> line <n>'`` (or the folder) of image ``index``, for error messages."""
        return f"{self.source} line {self.lines[index]}" if self.lines else self.source

    def class_counts(self) -> torch.Tensor:
        """``int64 [num_classes]`` images per class (open-set images not counted)."""
        known = self.labels[self.labels >= 0]
        return torch.bincount(known, minlength=self.num_classes)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageFiles:
        """The images at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        picked = index.tolist()
        lines = tuple(self.lines[i] for i in picked) if self.lines else ()
        return replace(
            self, paths=tuple(self.paths[i] for i in picked), labels=self.labels[index].clone(), lines=lines
        )

    def with_names(self, class_names: tuple[str, ...]) -> ImageFiles:
        """The same images with other class names (e.g. the training list's)."""
        return replace(self, class_names=class_names)


def _parse_line(text: str, where: str, allow_negative: bool) -> tuple[str, int]:
    parts = text.rsplit(maxsplit=1)  # paths may hold spaces; the label is the last token
    if len(parts) != 2:
        raise ImageFileError(
            f"{where}: expected 'relative/path label', got {text.strip()!r}; fix or delete the line"
        )
    path, token = parts
    try:
        label = int(token)
    except ValueError:
        label = None
    if label is None or (label < 0 and not (allow_negative and label == OPEN_SET_LABEL)):
        raise ImageFileError(f"{where}: label {token!r} is not a class index (an integer >= 0); fix the line")
    return path, label


def read_list_file(list_path: Path, root: Path, *, role: str = "train", open_set: bool = False) -> ImageFiles:
    """Parse a ``relative/path label`` list file (blank lines skipped) into :class:`ImageFiles`.

    Class names are placeholders (``'0'``, ``'1'``, ...) covering the labels seen; the data-set builder
    replaces them with the training list's. With ``open_set`` every label becomes ``-1``.

    Raises:
        ImageFileError: the file is missing or empty, or a line is not ``path label`` with an
            integer label >= 0.
    """
    if not list_path.is_file():
        raise ImageFileError(
            f"{list_path}: {role} list file not found; put it there or set data.list_dir to its folder"
        )
    paths: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    with open(list_path, encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            path, label = _parse_line(text, f"{list_path} line {number}", allow_negative=open_set)
            paths.append(path)
            labels.append(OPEN_SET_LABEL if open_set else label)
            lines.append(number)
    if not paths:
        raise ImageFileError(
            f"{list_path}: the {role} list file is empty; it needs one 'relative/path label' line per image"
        )
    tensor = torch.tensor(labels, dtype=torch.int64)
    names = tuple(str(c) for c in range(int(tensor.max()) + 1)) if not open_set else ("0",)
    return ImageFiles(root, tuple(paths), tensor, names, str(list_path), tuple(lines))


def check_images_exist(files: ImageFiles) -> None:
    """Raise one :class:`ImageFileError` naming the first listed image that is not a file (and the count)."""
    missing = [i for i, rel in enumerate(files.paths) if not os.path.isfile(files.root / rel)]
    if missing:
        first = missing[0]
        raise ImageFileError(
            f"{files.path(first)}: image listed at {files.where(first)} not found ({len(missing)} of "
            f"{len(files)} listed images missing); set data.root to the folder the list paths are relative to"
        )


def read_image_folder(folder: Path, root: Path, class_names: tuple[str, ...] | None = None) -> ImageFiles:
    """Scan a torchvision ``ImageFolder`` tree ``folder/<class>/<image>`` (sorted, image suffixes only).

    Labels are the positions of the class folders in sorted order, or in ``class_names`` when given (a
    test folder then must not hold a class the training folder lacks). Paths are relative to ``root``.

    Raises:
        ImageFileError: the folder is missing, holds no class folder or image, or has an unknown class.
    """
    if not folder.is_dir():
        raise ImageFileError(
            f"{folder}: image folder not found; data.dataset=image_folder expects "
            "data.root/train/<class>/<image> and data.root/test/<class>/<image>"
        )
    found = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not found:
        raise ImageFileError(
            f"{folder}: no class folders inside; put each class's images in {folder}/<class>/"
        )
    names = class_names if class_names is not None else tuple(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ImageFileError(
            f"{folder}/{unknown[0]}: class folder absent from the training folder; "
            "rename it or add it to train/"
        )
    paths: list[str] = []
    labels: list[int] = []
    for name in found:
        for file in sorted(os.listdir(folder / name)):
            if file.lower().endswith(IMAGE_SUFFIXES):
                paths.append(os.path.relpath(folder / name / file, root))
                labels.append(names.index(name))
    if not paths:
        raise ImageFileError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return ImageFiles(root, tuple(paths), torch.tensor(labels, dtype=torch.int64), names, str(folder))


def listing_sha256(files: ImageFiles) -> str:
    """sha256 of the ``path label`` lines of ``files`` (what a list file of this folder would hash to)."""
    text = "".join(f"{p} {int(y)}\n" for p, y in zip(files.paths, files.labels.tolist(), strict=True))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
