#!/usr/bin/env bash
# Train a recipe, then benchmark the trained run on its held-out prompts (one GPU); results under OUT.
# usage: bash bench/run_recipe.sh RECIPE RUN_DIR OUT [train overrides...] [-- bench options...]
#   e.g. bash bench/run_recipe.sh smollm2_quick runs/quick out/quick trainer.devices=2 -- max_new_tokens=256
# Re-running resumes the run (finished stages are kept). The bench merges the recipe's entry into
# bench/results/headline.json, copied to OUT with results.{md,json}.
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,6p "$0"; exit 2; }
recipe=$1 run_dir=$(realpath -m "$2") out=$(realpath -m "$3")
shift 3
cd "$(dirname "$0")/.."  # the repository root: train.py, bench/
train=() bench=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do train+=("$1"); shift; done
if [ $# -gt 0 ]; then shift; fi  # the "--"
bench=("$@")
# trainer.devices > 1 starts several processes: keep NVLink multicast off (NCCL NVLS, symmetric memory)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
mkdir -p "$out"
python3 train.py recipe="$recipe" run_dir="$run_dir" "${train[@]}" 2>&1 | tee "$out/train.log"
cp "$run_dir/manifest.json" "$run_dir/config.yaml" "$out/"
python3 -m bench.bench run="$run_dir" prompts="$run_dir/data/heldout.jsonl" out="$out/bench" commit="$commit" \
  "${bench[@]}" 2>&1 | tee "$out/bench.log"
cp bench/results/headline.json "$out/"
