#!/usr/bin/env bash
# Distillation throughput on 1, 2, ... GPUs: one data stage, copied into one run per device count,
# then the generalist's distillation (no specialists, no draft-vocabulary cut) with only
# trainer.devices changed; OUT gets each count's log, throughput and acceptance, and
# `python -m bench.scaling` writes scaling.json, scaling.md and scaling.png there. A count whose
# throughput is already in OUT, and a data stage already done, are not run again (delete to redo).
# usage: bash bench/scaling.sh RUNS_DIR OUT [STEPS] [RECIPE] ["1 2 4"] [key=value ...]
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,7p "$0"; exit 2; }
runs=$(realpath -m "$1") out=$(realpath -m "$2") steps=${3:-150} recipe=${4:-smollm2_quick} devices=${5:-"1 2"}
shift $(( $# < 5 ? $# : 5 ))
cd "$(dirname "$0")/.."  # the repository root
# several processes: keep NVLink multicast off (NCCL NVLS, symmetric memory)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
mkdir -p "$out" "$runs"
args=(recipe="$recipe" drafter.specialists=none drafter.head.draft_vocab_sizes=[]
      distill.max_steps="$steps" distill.val_every="$steps" "$@")
most=$(tr ' ' '\n' <<< "$devices" | sort -n | tail -1)
python3 train.py "${args[@]}" run_dir="$runs/data" trainer.devices="$most" stages=[data] > "$out/data.log" 2>&1
for d in $devices; do
  run="$runs/scale_${d}gpu"
  [ -f "$out/scale_${d}gpu_throughput.json" ] && { echo "devices=$d: measured before, kept"; continue; }
  rm -rf "$run" && cp -a "$runs/data" "$run"  # the same examples for every device count
  python3 train.py "${args[@]}" run_dir="$run" trainer.devices="$d" stages=[data,distill] > "$out/scale_${d}gpu.log" 2>&1
  cp "$run/distill/throughput.json" "$out/scale_${d}gpu_throughput.json"
  cp "$run/distill/acceptance.json" "$out/scale_${d}gpu_acceptance.json"
  echo "devices=$d $(tr -d ' \n' < "$out/scale_${d}gpu_throughput.json")"
done
python3 -m bench.scaling out="$out" devices="$devices" recipe="$recipe" steps="$steps"
