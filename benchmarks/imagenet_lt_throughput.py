"""ImageNet-LT-shaped training throughput: the JPEG pipeline alone, and ResNet-50 steps fed by it.

Writes generated JPEGs (about 400 x 350, quality 90) and ImageNet-LT list files (``ImageNet_LT_*.txt``,
a long-tailed profile with IR 256 over ``--classes`` classes) to a temporary folder, then measures
images/s of (1) ``train_batches`` alone and (2) SGD steps (bf16 autocast and channels_last on CUDA) of
``--arch`` on those batches, both after ``--warmup`` batches. ``--decode gpu`` decodes on CUDA.
To keep generation short, ``--unique`` distinct JPEGs are listed repeatedly (the decoder still decodes
every listed image; the page cache serves the bytes, as it would for a warm data set).

Usage:
    python benchmarks/imagenet_lt_throughput.py --device cuda --decode cpu --workers 14
    python benchmarks/imagenet_lt_throughput.py --device cpu --arch small_cnn --classes 20 --images 256 \\
        --batch-size 16 --image-size 64 --steps 4 --warmup 1 --workers 2        # smoke test
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ccsam.config.schema import DataConfig
from ccsam.data.batches import train_batches
from ccsam.data.build import build_data
from ccsam.data.samplers import InstanceSampler
from ccsam.models import build_model


def write_imagenet_lt(root: Path, classes: int, images: int, unique: int) -> None:
    """``unique`` JPEGs under ``root/img``, listed ``images`` times over ``classes`` long-tailed classes."""
    generator = torch.Generator().manual_seed(0)
    (root / "img").mkdir(parents=True)
    for i in range(unique):
        coarse = torch.rand(1, 3, 44, 50, generator=generator)
        field = F.interpolate(coarse, size=(350, 400), mode="bicubic", align_corners=False)[0]
        pixels = (field * 200 + torch.rand(3, 350, 400, generator=generator) * 55).clamp(0, 255)
        array = pixels.to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(array).save(root / "img" / f"{i:05d}.jpg", "JPEG", quality=90)
    weights = [256 ** (-c / max(classes - 1, 1)) for c in range(classes)]  # IR 256, as ImageNet-LT
    counts = [max(1, math.floor(images * w / sum(weights))) for w in weights]
    lines = [f"img/{(n + c) % unique:05d}.jpg {c}\n" for c, count in enumerate(counts) for n in range(count)]
    (root / "ImageNet_LT_train.txt").write_text("".join(lines))
    few = "".join(f"img/{c % unique:05d}.jpg {c}\n" for c in range(classes))
    (root / "ImageNet_LT_val.txt").write_text(few)
    (root / "ImageNet_LT_test.txt").write_text(few)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(batches, count: int, warmup: int, device: torch.device, step=None) -> float:
    """Images/s over ``count`` batches after ``warmup`` (``step(batch)`` applied to each if given)."""
    seen, start = 0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        if step is not None:
            step(batch)
        if i >= warmup:
            seen += batch.inputs.shape[0]
        if i + 1 == warmup + count:
            break
    _sync(device)
    assert start is not None, "not enough batches: raise --images or lower --warmup"
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=12000, help="listed training images")
    parser.add_argument("--unique", type=int, default=400, help="distinct JPEG files")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    with tempfile.TemporaryDirectory(prefix="ccsam-inlt-bench-") as tmp:
        root = Path(tmp)
        write_imagenet_lt(root, args.classes, args.images, args.unique)
        cfg = DataConfig(
            dataset="imagenet_lt",
            root=str(root),
            image_size=args.image_size,
            decode=args.decode,
            num_workers=args.workers,
            batch_size=args.batch_size,
        )
        data = build_data(cfg)
        layout = torch.channels_last if cuda else torch.contiguous_format
        loader = train_batches(data, InstanceSampler(len(data.train), 0), cfg, 0.0, 0, device, layout)
        alone = measure(loader.epoch(), args.steps, args.warmup, device)
        model = build_model(args.arch, in_channels=3, num_classes=data.num_classes).to(
            device, memory_format=layout
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

        def step(batch) -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(batch.inputs), batch.targets_a)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        trained = measure(loader.epoch(), args.steps, args.warmup, device, step)
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(
        f"{name}: {args.arch}, {data.num_classes} classes, batch {args.batch_size}, {args.image_size}px, "
        f"decode={args.decode}, {args.workers} workers, {len(data.train)} listed images"
    )
    print(f"  JPEG pipeline alone: {alone:8.1f} img/s")
    print(f"  {args.arch} SGD steps fed by it: {trained:8.1f} img/s")


if __name__ == "__main__":
    main()
