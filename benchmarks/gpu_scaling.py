"""Multi-GPU throughput of one training step and the share of the CC-SAM gathers in it (issue 11).

Run under torchrun (benchmarks/gpu_scaling.sh runs 1 GPU and then all visible GPUs). Random images on
the device (no data loading), bf16 autocast, SGD through the engine's DistributedDataParallel wrapper; the global batch
is split over the ranks exactly as in training. Rank 0 prints one markdown row per method:
global images/s and ms per step, and for CC-SAM the time of its gathers (features, labels, mixup
partners) measured alone on the same tensors, as a share of the CC-SAM step.

Usage: torchrun --nproc_per_node=N benchmarks/gpu_scaling.py --shape imagenet --steps 30
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from ccsam.data.augment import MixedBatch
from ccsam.distributed import (
    gather_rows,
    init_process_group,
    is_main,
    local_rows,
    shutdown,
    world_size,
    wrap_model,
)
from ccsam.models import build_model
from ccsam.training.distributed import GlobalCcsamStage1
from ccsam.training.objectives import CcsamStage1Objective, ErmObjective
from ccsam.training.updates import sgd_update

SHAPES = {  # global batch, classes, image size, backbone
    "cifar100": (64, 100, 32, "resnet32"),
    "imagenet": (256, 1000, 224, "resnet50"),
}


class TorchvisionClassifier(nn.Module):
    """torchvision ResNet-50 as a backbone (``fc`` removed) + linear head: ``features`` / ``head``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet50()
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(2048, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _timed(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="cifar100")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    init_process_group("cuda")
    torch.backends.cudnn.benchmark = True
    batch, classes, size, arch = SHAPES[args.shape]
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = (TorchvisionClassifier(classes) if arch == "resnet50"
             else build_model(arch, in_channels=3, num_classes=classes, width=16, bias=True))
    model = model.to(device, memory_format=torch.channels_last)
    rows = local_rows(batch)
    images = torch.randn(batch, 3, size, size, device=device)[rows]
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, classes, (batch,), device=device)
    local = MixedBatch(images, labels[rows], labels.roll(1)[rows], 0.7)
    counts = torch.linspace(500, 5, classes, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    runner = wrap_model(model)  # DDP under torchrun (the model itself on one GPU)
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    objectives = {
        "erm": ErmObjective(),
        "ccsam stage 1 (head)": GlobalCcsamStage1(CcsamStage1Objective(counts, 0.5, 0.5)),
    }
    results = {
        name: _timed(lambda o=o: sgd_update(runner, o, local, optimizer, autocast), args.steps, args.warmup)
        for name, o in objectives.items()
    }
    with torch.no_grad(), autocast():
        features = model.features(local.inputs)
    def gathers() -> None:
        gather_rows(features), gather_rows(local.targets_a), gather_rows(local.targets_b)

    gather = _timed(gathers, args.steps, args.warmup)
    if is_main():
        name = torch.cuda.get_device_name()
        for method, seconds in results.items():
            share = f"{100 * gather / seconds:.2f} %" if method.startswith("ccsam") else "-"
            print(f"| {args.shape} | {name} | {world_size()} | {method} | {batch / seconds:,.0f} "
                  f"| {1000 * seconds:.1f} | {share} |")
    shutdown()


if __name__ == "__main__":
    main()
