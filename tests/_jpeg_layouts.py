"""Test helper (imported by tests/data and tests/training): small JPEG trees and list files in the exact
layouts of ImageNet-LT, Places-LT, iNaturalist 2018, a user's own lists and an ImageFolder tree
(12 classes, 40 x 36 images, written by Pillow at JPEG quality 90).

Each class has its own mean colour plus noise, so a model can learn something in one epoch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

NUM_CLASSES = 12
TRAIN_COUNTS = (30, 22, 16, 12, 9, 7, 5, 4, 3, 3, 2, 2)  # long-tailed, as the real lists
VAL_PER_CLASS, TEST_PER_CLASS, OPEN_IMAGES = 2, 4, 6
HEIGHT, WIDTH = 36, 40
CLASS_DIRS = tuple(f"n{c:08d}" for c in range(NUM_CLASSES))
LIST_NAMES = {
    "imagenet_lt": {
        "train": "ImageNet_LT_train.txt",
        "val": "ImageNet_LT_val.txt",
        "test": "ImageNet_LT_test.txt",
        "open": "ImageNet_LT_open.txt",
    },
    "places_lt": {
        "train": "Places_LT_train.txt",
        "val": "Places_LT_val.txt",
        "test": "Places_LT_test.txt",
        "open": "Places_LT_open.txt",
    },
    "inat2018": {"train": "iNaturalist18_train.txt", "test": "iNaturalist18_val.txt"},
    "list_file": {"train": "my_train.txt", "val": "my_val.txt", "test": "my_test.txt"},
}


def _image(label: int, generator: torch.Generator) -> torch.Tensor:
    colour = torch.tensor([(37 * label) % 256, (91 * label + 40) % 256, (53 * label + 90) % 256])
    noise = torch.randint(-30, 31, (3, HEIGHT, WIDTH), generator=generator)
    return (colour.view(3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)


def _write_images(
    root: Path, folder: str, counts: list[int], generator: torch.Generator
) -> list[tuple[str, int]]:
    entries = []
    for label, count in enumerate(counts):
        for i in range(count):
            rel = f"{folder}/{CLASS_DIRS[label]}/{CLASS_DIRS[label]}_{i}.JPEG"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(label, generator).permute(1, 2, 0).numpy()).save(root / rel, "JPEG", quality=90)
            entries.append((rel, label))
    return entries


def _write_list(path: Path, entries: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{rel} {label}\n" for rel, label in entries))


def write_list_layout(root: Path, dataset: str, list_dir: Path | None = None) -> Path:
    """Write images under ``root`` and ``dataset``'s list files into ``list_dir`` (default ``root``)."""
    generator = torch.Generator().manual_seed(0)
    names = LIST_NAMES[dataset]
    list_dir = list_dir or root
    roles = {
        "train": list(TRAIN_COUNTS),
        "val": [VAL_PER_CLASS] * NUM_CLASSES,
        "test": [TEST_PER_CLASS] * NUM_CLASSES,
    }
    for role, counts in roles.items():
        if role in names:
            _write_list(list_dir / names[role], _write_images(root, role, counts, generator))
    if "open" in names:
        opened = _write_images(root, "open", [OPEN_IMAGES], generator)
        _write_list(list_dir / names["open"], [(rel, -1) for rel, _ in opened])
    return root


def write_image_folder(root: Path, per_class: int = 12) -> Path:
    """``root/train/<class>/*.JPEG`` with ``per_class`` images each and ``root/test/<class>/*`` with 3."""
    generator = torch.Generator().manual_seed(1)
    _write_images(root, "train", [per_class] * NUM_CLASSES, generator)
    _write_images(root, "test", [3] * NUM_CLASSES, generator)
    return root


def file_overrides(root: Path, dataset: str, **extra: object) -> list[str]:
    """Overrides of a seconds-long CPU run on a generated layout (small CNN, 16-pixel crops)."""
    base: dict[str, object] = {
        "data.dataset": dataset,
        "data.root": str(root),
        "data.image_size": 16,
        "data.batch_size": 8,
        "data.n_max": "null",
        "data.augment": "crop_flip",
        "data.num_workers": 0,
        "data.eval_batch_size": 32,
        "model.arch": "small_cnn",
        "model.width": 8,
        "device": "cpu",
        "runtime.threads": 1,
        "stage1.method": "erm",
        "stage1.epochs": 1,
        "stage1.warmup_epochs": 0,
        "stage1.milestones": "[]",
        "stage2.epochs": 0,
        "eval.many_threshold": 10,
        "eval.few_threshold": 4,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]
