# Distillation throughput on 1 vs 2 GPUs (nvidia-h100-x2), a short smollm2 run: the same command, only trainer.devices changed.
# usage: bash bench/scaling.sh OUT [STEPS] [TIMEOUT_S]
source bench/gpu_env.sh
export METASD_APT_LISTS=$PWD/.gpu/debian METASD_DEBIAN_FAQ=$PWD/.gpu/debian/debian-faq.en.txt.gz
OUT=$1 STEPS=${2:-150} LIMIT=${3:-120}
N="data.domains.code.n=32 data.domains.math.n=32 data.domains.chat.n=32 data.domains.translation.n=32 data.domains.summarisation.n=32 data.domains.qa.n=32"
for d in 1 2; do
  timeout $LIMIT python3 train.py recipe=smollm2 run_dir=/tmp/scale$d trainer.devices=$d stages=[data,distill] $N \
    data.max_new_tokens=64 drafter.specialists=none distill.max_steps=$STEPS distill.val_every=$STEPS > $OUT/scale_${d}gpu.log 2>&1
  echo "devices=$d rc=$? $(cat /tmp/scale$d/distill/throughput.json 2>/dev/null)"
  cp /tmp/scale$d/distill/acceptance.json $OUT/scale_${d}gpu_acceptance.json 2>/dev/null
  cp /tmp/scale$d/distill/throughput.json $OUT/scale_${d}gpu_throughput.json 2>/dev/null
done
