"""Training-step throughput (images/s): plain CE vs CC-SAM stage 1 vs CC-SAM stage 2, and the naive
per-class stage 1 of the official code (one autograd call per class in the batch).

Every method runs the same ResNet-32 on the same batches; methods are interleaved over several rounds
and the median is reported, so the ratios come from one run on one machine.

Usage:
    python benchmarks/throughput.py                       # CPU, 10 and 100 classes, batch 64 and 128
    python benchmarks/throughput.py --device cuda --steps 50 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ccsam.config.schema import RuntimeConfig
from ccsam.data.augment import MixedBatch
from ccsam.data.profiles import long_tail_counts
from ccsam.models import Classifier, build_model
from ccsam.training.objectives import (
    CcsamStage1Objective,
    CcsamStage2Objective,
    ErmObjective,
    StepOutput,
)
from ccsam.training.precision import Runtime


class NaiveCcsamStage1:
    """The official code's stage 1: a Python loop over the classes present, one ``autograd.grad`` per
    class for the head gradient, the perturbed head applied to that class's rows (spec 1.3)."""

    def __init__(self, class_counts: torch.Tensor, flat_ratio: float, noise_scale: float) -> None:
        self.counts, self.flat_ratio, self.noise_scale = class_counts, flat_ratio, noise_scale

    def __call__(self, model: Classifier, batch: MixedBatch) -> StepOutput:
        features = model.features(batch.inputs)
        head = model.head
        logits = head(features)
        per_sample = batch.lam * F.cross_entropy(logits, batch.targets_a, reduction="none") + (
            1 - batch.lam) * F.cross_entropy(logits, batch.targets_b, reduction="none")
        params = [head.weight, head.bias]
        k = sum(p.numel() for p in params)
        theta = torch.sqrt(sum(p.detach().square().sum() for p in params)) + 1e-12
        flat = []
        for c in batch.targets_a.unique().tolist():
            rows = (batch.targets_a == c).nonzero().flatten()
            grads = torch.autograd.grad(per_sample[rows].mean(), params, retain_graph=True)
            n = max(float(self.counts[c]) - 1, 1.0)
            eps = []
            for g in grads:
                gn = g.norm().clamp_min(1e-12)
                scale = (self.noise_scale * theta.sqrt() / gn.sqrt() / 2**0.5 / n**0.25 / k**0.25 * k**0.5)
                eps.append((scale * g / gn).detach())
            out = F.linear(features[rows], head.weight + eps[0], head.bias + eps[1])
            flat.append(F.cross_entropy(out, batch.targets_a[rows], reduction="none"))
        loss = (1 - self.flat_ratio) * per_sample.mean() + self.flat_ratio * torch.cat(flat).mean()
        return StepOutput(loss, logits.detach())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_method(model: Classifier, objective: Callable, batches: list[MixedBatch], params, runtime: Runtime,
                steps: int) -> float:
    """Images/s of ``steps`` SGD steps (forward, backward, update) cycling over ``batches``."""
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    _sync(runtime.device)
    start = time.perf_counter()
    for step in range(steps):
        batch = batches[step % len(batches)]
        with runtime.autocast():
            out = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    _sync(runtime.device)
    return steps * batches[0].inputs.shape[0] / (time.perf_counter() - start)


def run_config(num_classes: int, batch_size: int, args: argparse.Namespace, device: torch.device) -> dict:
    runtime = Runtime.resolve(RuntimeConfig(precision=args.precision), device)
    n_max = 5000 if num_classes <= 10 else 500
    counts = torch.tensor(long_tail_counts(n_max, num_classes, 100.0), device=device)
    generator = torch.Generator().manual_seed(0)
    probs = (counts / counts.sum()).cpu()
    batches = []
    for _ in range(4):
        x = torch.randn(batch_size, 3, 32, 32, generator=generator).to(device)
        if runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.multinomial(probs, batch_size, replacement=True, generator=generator).to(device)
        batches.append(MixedBatch(x, y, y.roll(1), 0.7))
    torch.manual_seed(0)
    model = build_model("resnet32", in_channels=3, num_classes=num_classes).to(device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    methods = {
        "ce": (ErmObjective(), lambda: model.parameters()),
        "ccsam_stage1": (CcsamStage1Objective(counts, 0.3, 1e-2), lambda: model.parameters()),
        "naive_stage1": (NaiveCcsamStage1(counts, 0.3, 1e-2), lambda: model.parameters()),
        "ccsam_stage2": (CcsamStage2Objective(counts, 0.5, 2.0, 1.0), lambda: model.head.parameters()),
    }
    speeds: dict[str, list[float]] = {name: [] for name in methods}
    for objective, params in methods.values():  # warm-up (allocator, cuDNN autotuning)
        time_method(model, objective, batches, params(), runtime, args.warmup)
    for _ in range(args.rounds):
        for name, (objective, params) in methods.items():
            speeds[name].append(time_method(model, objective, batches, params(), runtime, args.steps))
    return {name: statistics.median(values) for name, values in speeds.items()}


def head_only(num_classes: int, batch_size: int, args: argparse.Namespace, device: torch.device) -> dict:
    """Time the stage-1 perturbation alone (features given): our closed form vs the per-class loop.

    Both compute the flat loss and back-propagate into features, W and b; the backbone is left out so
    the ratio isolates the part CC-SAM adds to a CE step."""
    n_max = 5000 if num_classes <= 10 else 500
    counts = torch.tensor(long_tail_counts(n_max, num_classes, 100.0), device=device)
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(batch_size, 64, generator=generator).to(device).requires_grad_()
    probs = (counts / counts.sum()).cpu()
    y = torch.multinomial(probs, batch_size, replacement=True, generator=generator).to(device)
    head = torch.nn.Linear(64, num_classes).to(device)

    class _FeaturesOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def features(self, _: torch.Tensor) -> torch.Tensor:
            return features

    model = _FeaturesOnly()
    batch = MixedBatch(features, y, y.roll(1), 0.7)
    ours, naive = CcsamStage1Objective(counts, 0.3, 1e-2), NaiveCcsamStage1(counts, 0.3, 1e-2)
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    for _ in range(args.rounds + 1):
        for name, objective in (("ours", ours), ("naive", naive)):
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.head_steps):
                objective(model, batch).loss.backward()
            _sync(device)
            times[name].append((time.perf_counter() - start) / args.head_steps)
    result = {name: statistics.median(values[1:]) for name, values in times.items()}
    result["present"] = int(y.unique().numel())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per method per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--head-steps", type=int, default=50, help="steps per round of the head-only timing")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"# throughput: ResNet-32, 32x32 inputs, device {device} ({name}), torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, precision {args.precision}, median of {args.rounds} rounds x "
          f"{args.steps} steps\n")
    print("| classes | batch | CE img/s | CC-SAM stage 1 img/s | stage 1 / CE | stage 2 img/s | "
          "naive stage 1 img/s | ours / naive |")
    print("|---|---|---|---|---|---|---|---|")
    for num_classes in args.classes:
        for batch_size in args.batch:
            s = run_config(num_classes, batch_size, args, device)
            print(f"| {num_classes} | {batch_size} | {s['ce']:.0f} | {s['ccsam_stage1']:.0f} | "
                  f"{s['ccsam_stage1'] / s['ce']:.3f} | {s['ccsam_stage2']:.0f} | {s['naive_stage1']:.0f} | "
                  f"{s['ccsam_stage1'] / s['naive_stage1']:.2f}x |", flush=True)
    print("\nStage-1 perturbation alone (features given; forward + backward of the flat loss), ms per step:\n")
    print("| classes | batch | classes in the batch | ours ms | naive per-class loop ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for num_classes in args.classes:
        for batch_size in args.batch:
            t = head_only(num_classes, batch_size, args, device)
            print(f"| {num_classes} | {batch_size} | {t['present']} | {1e3 * t['ours']:.2f} | {1e3 * t['naive']:.2f} | "
                  f"{t['naive'] / t['ours']:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
