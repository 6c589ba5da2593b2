"""Per-sample AutoAugment (CIFAR-10 policy) + Cutout on one 32 x 32 uint8 image at a time: the DataLoader path.

A DataLoader worker augments one image per call with a generator seeded by the sample's key
(``ccsam.data.dataloader.AugmentedImages``). Three ways to do the AutoAugment part, each followed by the
same Cutout (``ccsam.data.augment.cutout``, 16 px), all with ``fill=128`` and one thread (as in a worker):

* ``batched(1)``: ``ccsam.data.autoaugment.autoaugment`` on a batch of one (the path before this change);
* ``single``: ``ccsam.data.autoaugment.autoaugment_single``: the same draws and output, no grouping;
* ``torchvision v2``: ``torchvision.transforms.v2.AutoAugment(AutoAugmentPolicy.CIFAR10, fill=128)``,
  seeded per sample through the default generator (``torch.default_generator.manual_seed``, state saved
  and restored), since it draws from the global RNG; ``torch.manual_seed`` would cost ~0.6 ms more per
  call (it also seeds the CUDA generators).

The variants run interleaved (the order rotates every round) over the same images, so load from other
processes hits all alike; per-sample medians over rounds and the medians of the per-round ratios are
printed.

Usage:
    python benchmarks/autoaugment_per_sample.py --data-root ../shared/data     # 12 rounds x 200 images
    python benchmarks/autoaugment_per_sample.py --rounds 20 --images 500       # random images without data
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torchvision.transforms import v2

from ccsam.config import resolve_config
from ccsam.data.augment import cutout
from ccsam.data.autoaugment import CIFAR10_POLICY, autoaugment, autoaugment_single
from ccsam.data.build import build_data

FILL = 128
CUTOUT = 16
Variant = Callable[[torch.Tensor, int], torch.Tensor]


def batched_one(image: torch.Tensor, seed: int) -> torch.Tensor:
    """The batched AutoAugment on a batch of one, then Cutout."""
    generator = torch.Generator().manual_seed(seed)
    return cutout(autoaugment(image, generator, CIFAR10_POLICY, fill=FILL), CUTOUT, generator)


def single(image: torch.Tensor, seed: int) -> torch.Tensor:
    """The single-image AutoAugment, then Cutout."""
    generator = torch.Generator().manual_seed(seed)
    return cutout(autoaugment_single(image, generator, CIFAR10_POLICY, fill=FILL), CUTOUT, generator)


def torchvision_v2() -> Variant:
    """torchvision's v2 AutoAugment seeded per sample through the default generator, then Cutout."""
    transform = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=FILL)

    def run(image: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        default = torch.default_generator
        state = default.get_state()
        default.manual_seed(seed)
        augmented = transform(image[0])[None]
        default.set_state(state)
        return cutout(augmented, CUTOUT, generator)

    return run


def cifar_images(data_root: str | None, count: int) -> tuple[torch.Tensor, str]:
    """``count`` real CIFAR-10 test images if ``data_root`` holds them, else uniform noise images."""
    if data_root and (Path(data_root) / "cifar-10-batches-py").is_dir():
        cfg = resolve_config("cifar10-lt-ccsam-official", [f"data.root={data_root}"])
        return build_data(cfg.data).test.images[:count].clone(), "CIFAR-10 test images"
    noise = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return noise, "uniform noise images"


def main() -> None:
    """Time the three variants interleaved and print per-sample medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("CCSAM_DATA_ROOT"))
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, what = cifar_images(args.data_root, args.images)
    variants: dict[str, Variant] = {"batched(1)": batched_one, "single": single, "torchvision v2": torchvision_v2()}
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, 1 thread")
    print(f"{len(images)} {what} per round, {args.rounds} rounds, interleaved; AutoAugment fill {FILL} + "
          f"Cutout {CUTOUT}")
    names = list(variants)
    per_sample: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn = variants[name]
            start = time.perf_counter()
            for i in range(len(images)):
                fn(images[i : i + 1], r * len(images) + i)
            per_sample[name].append((time.perf_counter() - start) / len(images) * 1e6)
    print("\n| variant | us / sample (median) | images / s |")
    print("|---|---:|---:|")
    for name in names:
        us = statistics.median(per_sample[name])
        print(f"| {name} | {us:.0f} | {1e6 / us:.0f} |")
    print()
    for a, b in (("batched(1)", "single"), ("torchvision v2", "single"), ("batched(1)", "torchvision v2")):
        ratio = statistics.median(x / y for x, y in zip(per_sample[a], per_sample[b], strict=True))
        print(f"time {a} / {b}: {ratio:.2f} (median of per-round ratios)")


if __name__ == "__main__":
    main()
