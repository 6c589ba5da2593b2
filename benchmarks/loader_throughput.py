"""Images/s of the JPEG training pipeline alone: ccsam's vs torchvision ImageFolder + PIL, same transforms.

Both pipelines read the same generated JPEGs (an ImageFolder tree in a temporary folder, deleted
afterwards), apply RandomResizedCrop(224) + horizontal flip + ColorJitter(0.4, 0.4, 0.4) and ImageNet
normalisation, and deliver float32 batches in the main process with the same worker count, batch size
and prefetch. ccsam: torchvision.io decoding, uint8 tensor transforms in the workers, normalisation after
collation (``ccsam.data.batches.train_batches``). Baseline: ``ImageFolder`` (PIL decode) ->
``transforms.RandomResizedCrop / RandomHorizontalFlip / ColorJitter / ToTensor / Normalize``.
Both use persistent workers; one untimed warm-up epoch each starts them. Timed epochs then alternate
(A B A B ...) so load from other processes hits both alike; each is timed from asking for its first
batch to receiving its last (prefetching happens inside the timed window).

Usage:
    python benchmarks/loader_throughput.py                     # 2,000 images ~400 x 350, 2 workers
    python benchmarks/loader_throughput.py --workers 8 --images 4000 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from ccsam.config.schema import DataConfig
from ccsam.data.batches import train_batches
from ccsam.data.build import build_data
from ccsam.data.file_sets import IMAGENET_MEAN, IMAGENET_STD
from ccsam.data.samplers import InstanceSampler

CLASSES = 20


def write_images(root: Path, count: int, seed: int = 0) -> None:
    """``count`` photo-like JPEGs (quality 90, about 400 x 350) in ``root/{train,test}/<class>/``.

    Content: smooth colour fields (bicubic-upsampled noise) plus fine texture, which compresses like
    natural images (~70-90 kB each) rather than like flat colour or white noise.
    """
    generator = torch.Generator().manual_seed(seed)
    for i in range(count):
        h = 330 + int(torch.randint(0, 41, (1,), generator=generator))
        w = 380 + int(torch.randint(0, 41, (1,), generator=generator))
        coarse = torch.rand(1, 3, h // 8, w // 8, generator=generator)
        field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
        image = (field * 200 + torch.rand(3, h, w, generator=generator) * 55).clamp(0, 255).to(torch.uint8)
        folder = root / "train" / f"c{i % CLASSES:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.jpg", "JPEG", quality=90)
    for c in range(CLASSES):  # image_folder wants a test split; one image per class is enough here
        (root / "test" / f"c{c:03d}").mkdir(parents=True, exist_ok=True)
        src = next((root / "train" / f"c{c:03d}").iterdir())
        (root / "test" / f"c{c:03d}" / src.name).write_bytes(src.read_bytes())


def time_epoch(make_batches: Callable[[], Iterable[torch.Tensor]]) -> tuple[float, int]:
    """(seconds, images) of one whole epoch of input tensors."""
    images, start = 0, time.perf_counter()
    for inputs in make_batches():
        images += int(inputs.shape[0])
    return time.perf_counter() - start, images


def ccsam_pipeline(root: Path, args: argparse.Namespace):
    cfg = DataConfig(
        dataset="image_folder",
        root=str(root),
        imbalance_ratio=1.0,
        val_per_class=0,
        image_size=args.image_size,
        color_jitter=0.4,
        num_workers=args.workers,
        batch_size=args.batch_size,
        prefetch_factor=args.prefetch,
    )
    data = build_data(cfg)
    loader = train_batches(data, InstanceSampler(len(data.train), 0), cfg, 0.0, 0, torch.device("cpu"))

    def one(i: int) -> object:  # a worker's work for one image (normalised: the model is on the CPU)
        return loader.dataset[(i, i)]

    return lambda: (batch.inputs for batch in loader.epoch()), one


def baseline_pipeline(root: Path, args: argparse.Namespace):
    transform = T.Compose(
        [
            T.RandomResizedCrop(args.image_size),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.4, 0.4, 0.4),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = torchvision.datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        prefetch_factor=args.prefetch if args.workers > 0 else None,
    )
    return lambda: (inputs for inputs, _ in loader), lambda i: dataset[i][0]


def per_image_ms(
    ones: dict[str, Callable[[int], object]], count: int = 100, repeat: int = 5
) -> dict[str, float]:
    """CPU milliseconds (process time, not wall time) per image of each pipeline's per-image work in
    this process: passes over ``count`` images alternate between the pipelines, each keeps its best of
    ``repeat``; other processes' load inflates this much less than wall-clock throughput."""
    times: dict[str, list[float]] = {name: [] for name in ones}
    for _ in range(repeat):
        for name, one in ones.items():
            start = time.process_time()
            for i in range(count):
                one(i)
            times[name].append((time.process_time() - start) / count * 1e3)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per pipeline (alternating)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process only collates / normalises; the workers do the work
    with tempfile.TemporaryDirectory(prefix="ccsam-loader-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_images(root, args.images)
        size_kb = sum(f.stat().st_size for f in (root / "train").rglob("*.jpg")) / args.images / 1024
        print(f"generated {args.images} JPEGs (mean {size_kb:.0f} kB) in {time.perf_counter() - start:.1f} s")
        pipelines = {"ccsam": ccsam_pipeline(root, args), "imagefolder_pil": baseline_pipeline(root, args)}
        speeds: dict[str, list[float]] = {name: [] for name in pipelines}
        costs = per_image_ms({name: one for name, (_, one) in pipelines.items()})
        for name, (epoch_fn, _) in pipelines.items():
            seconds, images = time_epoch(epoch_fn)
            print(
                f"warm-up  {name:16s} {images / seconds:8.1f} img/s (worker start-up included, not counted)"
            )
        for epoch in range(args.epochs):
            for name, (epoch_fn, _) in pipelines.items():
                seconds, images = time_epoch(epoch_fn)
                speeds[name].append(images / seconds)
                rate = images / seconds
                print(f"epoch {epoch + 1} {name:16s} {rate:8.1f} img/s ({images} images, {seconds:.2f} s)")
    print(
        f"\nmachine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
    print(
        f"workers {args.workers}, batch {args.batch_size}, image_size {args.image_size}, "
        f"prefetch {args.prefetch}"
    )
    ours, theirs = (statistics.mean(speeds[n]) for n in ("ccsam", "imagefolder_pil"))
    print(f"mean img/s: ccsam {ours:.1f}, ImageFolder+PIL {theirs:.1f}; ratio {ours / theirs:.2f}x")
    ours_ms, theirs_ms = costs["ccsam"], costs["imagefolder_pil"]
    print(
        f"per-image CPU ms (process time, 1 process, best of 5 x 100): ccsam {ours_ms:.2f}, "
        f"ImageFolder+PIL {theirs_ms:.2f}; ratio {theirs_ms / ours_ms:.2f}x"
    )


if __name__ == "__main__":
    main()
