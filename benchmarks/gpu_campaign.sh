#!/usr/bin/env bash
# CIFAR-10-LT IR 100 on one GPU (H100 / H200): CE, CC-SAM (official recipe), LDAM-DRW, Balanced Softmax,
# CC-SAM (tuned) on LDAM-DRW's split (data.subset_protocol=ldam_drw, the CIFAR presets' default), 3 seeds,
# the presets' full schedules. Rows run one after another, the 3 seeds of a row side by side on the GPU
# (ResNet-32 at batch 64-128 leaves most of an H200 idle), so whatever finishes inside a time limit is a
# set of complete rows; the most informative rows come first (CE anchor, then the CC-SAM recipe).
#
# Prepare on a machine with the data (the cache replaces the data set on the GPU machine):
#   ccsam data export --preset cifar10-lt-ce --data-root ../shared/data --out cache/cifar10-lt-ir100-ldamdrw.cache
# Run from the repo root (the `run` tool: carry cache/):
#   OUT=$OUT bash benchmarks/gpu_campaign.sh            # every row
#   ROWS="ce ccsam-official" bash benchmarks/gpu_campaign.sh
# CC-SAM tuned takes its values from CCSAM_TUNED_OVERRIDES (e.g. the FMNIST study's choice for
# stage1.flat_ratio / stage1.noise_scale / stage2.method.up_limit, written as KEY=VALUE words); without it the row
# is skipped. Re-running skips finished seeds (results.json) and resumes interrupted ones.
# Writes $OUT/gpu-campaign.md (the table so far, rewritten after every row) and the run folders.
set -euo pipefail
OUT=${OUT:-benchmarks/results/gpu-campaign}
CACHE=${CACHE:-cache/cifar10-lt-ir100-ldamdrw.cache}
SEEDS=${SEEDS:-"0 1 2"}
ROWS=${ROWS:-"ce ccsam-official ldam-drw balanced-softmax ccsam-tuned"}
CCSAM=${CCSAM:-ccsam}
mkdir -p "$OUT/runs"
if ! command -v "$CCSAM" >/dev/null; then
  python -m venv .gpu-venv >/dev/null 2>&1 || true
  . .gpu-venv/bin/activate
  pip install -q -e . 2>&1 | tail -1 || true
fi
[ -f "$CACHE" ] || { echo "missing $CACHE; export it first (see the header)" >&2; exit 2; }

preset_of() {
  case "$1" in
    ccsam-official|ccsam-tuned) echo cifar10-lt-ccsam-official ;;
    *) echo "cifar10-lt-$1" ;;
  esac
}

run_seed() {  # row seed
  local row=$1 seed=$2 dir="$OUT/runs/$1-seed$2" extra=()
  read -r -a extra <<< "${EXTRA_OVERRIDES:-}"  # e.g. runtime.precision=fp32 (applies to every row)
  if [ "$row" = ccsam-tuned ]; then read -r -a tuned <<< "${CCSAM_TUNED_OVERRIDES}"; extra+=("${tuned[@]}"); fi
  if [ -f "$dir/results.json" ]; then return 0; fi
  if [ -f "$dir/checkpoints/last.pt" ]; then
    "$CCSAM" train --resume "$dir" --no-progress > "$dir.log" 2>&1
  else
    rm -rf "$dir"
    "$CCSAM" train --preset "$(preset_of "$row")" --data-cache "$CACHE" --out "$dir" --no-progress \
      "seed=$seed" "name=cifar10-lt-$row" "data.subset_protocol=ldam_drw" "${extra[@]}" > "$dir.log" 2>&1
  fi
}

report() {
  {
    echo "# CIFAR-10-LT IR 100 on one GPU, LDAM-DRW split, seeds ${SEEDS} (table so far)"
    echo
    echo "$(date -u +%FT%TZ); $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); rows: ${ROWS}"
    echo "CC-SAM tuned overrides: ${CCSAM_TUNED_OVERRIDES:-(none: row skipped)}"
    echo
    cat "$OUT/row-times.txt" 2>/dev/null || true
    echo
    python benchmarks/summarize_runs.py "$OUT"/runs/*-seed* 2>/dev/null || echo "(no finished run yet)"
  } > "$OUT/gpu-campaign.md"
}

for row in $ROWS; do
  if [ "$row" = ccsam-tuned ] && [ -z "${CCSAM_TUNED_OVERRIDES:-}" ]; then
    echo "skip ccsam-tuned: set CCSAM_TUNED_OVERRIDES" >&2
    continue
  fi
  start=$(date +%s)
  pids=()
  for seed in $SEEDS; do run_seed "$row" "$seed" & pids+=($!); done
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  echo "- $row: $(( $(date +%s) - start )) s wall for ${SEEDS// /, } side by side (exit $status)" >> "$OUT/row-times.txt"
  report
done
report
cat "$OUT/gpu-campaign.md"
