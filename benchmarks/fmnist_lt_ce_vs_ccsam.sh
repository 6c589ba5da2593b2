#!/usr/bin/env bash
# Fashion-MNIST-LT IR 100: fmnist-lt-ce vs fmnist-lt-ccsam, 2 seeds each, CPU.
# Usage: bash benchmarks/fmnist_lt_ce_vs_ccsam.sh [DATA_ROOT] [OUT_DIR]
# Then:  python benchmarks/summarize_runs.py OUT_DIR/* > benchmarks/results/fmnist-lt-ce-vs-ccsam.md
set -euo pipefail
DATA_ROOT=${1:-../shared/data}
OUT=${2:-runs/fmnist-lt-bench}
for preset in fmnist-lt-ce fmnist-lt-ccsam; do
  for seed in 0 1; do
    ccsam train --preset "$preset" --data-root "$DATA_ROOT" --out "$OUT/$preset-seed$seed" --no-progress seed=$seed
  done
done
