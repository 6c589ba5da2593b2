#!/usr/bin/env bash
# Multi-GPU scaling check (issue 11), for a machine with several GPUs; run from the repo root.
# 1 GPU, then every visible GPU (torchrun --standalone), for a CIFAR-100-LT-shaped ResNet-32 step and an
# ImageNet-LT-shaped torchvision ResNet-50 step (random data, bf16): global images/s, ms per step, and
# the CC-SAM gathers as a share of the CC-SAM step. Writes $OUT/gpu-scaling-<date>.md (default
# benchmarks/results/). Expected gather bytes per data set: benchmarks/results/distributed.md.
set -euo pipefail
OUT=${OUT:-benchmarks/results}
STEPS=${STEPS:-30}
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
REPORT="$OUT/gpu-scaling-$(date +%F).md"
mkdir -p "$OUT"
{
  echo "# GPU scaling $(date -u +%FT%TZ): 1 vs $GPUS GPUs"
  echo
  echo "| shape | GPU | ranks | method | global images/s | ms / step | CC-SAM gathers / step |"
  echo "|---|---|---|---|---|---|---|"
  for shape in cifar100 imagenet; do
    for n in $(printf '%s\n' 1 "$GPUS" | sort -un); do
      torchrun --standalone --nproc_per_node="$n" benchmarks/gpu_scaling.py --shape "$shape" --steps "$STEPS"
    done
  done
} | tee "$REPORT"
