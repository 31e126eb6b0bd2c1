#!/usr/bin/env bash
# Distillation throughput on 1 vs 2 GPUs: the same short smollm2_quick run (data + distill, no
# specialists), only trainer.devices changed; throughput and acceptance per device count under OUT.
# usage: bash bench/scaling.sh RUNS_DIR OUT [STEPS]
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,4p "$0"; exit 2; }
runs=$(realpath -m "$1") out=$(realpath -m "$2") steps=${3:-150}
cd "$(dirname "$0")/.."  # the repository root
# two processes: keep NVLink multicast off (NCCL NVLS, symmetric memory)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
for d in 1 2; do
  run="$runs/scale_${d}gpu"
  python3 train.py recipe=smollm2_quick run_dir="$run" trainer.devices=$d stages=[data,distill] \
    data.max_new_tokens=64 drafter.specialists=none distill.max_steps="$steps" distill.val_every="$steps" \
    > "$out/scale_${d}gpu.log" 2>&1
  cp "$run/distill/throughput.json" "$out/scale_${d}gpu_throughput.json"
  cp "$run/distill/acceptance.json" "$out/scale_${d}gpu_acceptance.json"
  echo "devices=$d $(cat "$out/scale_${d}gpu_throughput.json")"
done
