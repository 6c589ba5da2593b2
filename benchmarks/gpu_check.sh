#!/usr/bin/env bash
# One prepared GPU check (issue: GPU-fast training). Run it on the lent device from the repo root with the
# exported caches carried in the ignored folder cache/:
#   ccsam data export --preset cifar10-lt-ccsam-official --data-root ../shared/data --out cache/cifar10-lt-ir100.cache
# (the cifar10-lt-ce preset has the same data fields, so one cache serves both runs).
# Writes $OUT/gpu-<date>.md (or benchmarks/results/ when OUT is unset) with wall times and last-epoch metrics.
set -euo pipefail
OUT=${OUT:-benchmarks/results}
CACHE=${CACHE:-cache/cifar10-lt-ir100.cache}
REPORT="$OUT/gpu-$(date +%F).md"
python -m venv .gpu-venv >/dev/null 2>&1 || true
. .gpu-venv/bin/activate
pip install -q -e . 2>&1 | tail -1 || true
mkdir -p "$OUT"
{
  echo "# GPU check $(date -u +%FT%TZ)"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo
  echo '## Throughput (benchmarks/throughput.py --device cuda --steps 50 --rounds 5)'
  echo
  python benchmarks/throughput.py --device cuda --steps 50 --rounds 5 --warmup 10
  echo
  echo '## ImageNet-LT-shaped ResNet-50: 1000 classes, batch 256, 224 px, bf16 (benchmarks/imagenet_lt_throughput.py)'
  echo
  for decode in cpu gpu; do
    python -W ignore::DeprecationWarning benchmarks/imagenet_lt_throughput.py --device cuda --decode "$decode" \
      --workers 14 --steps 30 --warmup 5
  done
} > "$REPORT" 2>&1
for preset in cifar10-lt-ccsam-official cifar10-lt-ce; do
  start=$(date +%s)
  ccsam train --preset "$preset" --data-cache "$CACHE" --out "$OUT/runs/$preset" --no-progress > "$OUT/$preset.log" 2>&1
  end=$(date +%s)
  {
    echo
    echo "## $preset: wall $((end - start)) s (process start to results, including data decoding and evaluation)"
    echo
    tail -4 "$OUT/$preset.log"
  } >> "$REPORT"
done
cat "$REPORT"
