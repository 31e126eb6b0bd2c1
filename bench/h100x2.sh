# The nvidia-h100-x2 session, after the model is joined in /tmp/model (README: "GPU runs on the device machines").
#   phase train: the smollm2 recipe (6 domains) on 2 GPUs -- the 1-GPU command with only trainer.devices=2
#                added -- then, on the trained run, the correctness checks on GPU 0 and the GPU tests on GPU 1
#   phase bench: finishes the run if it was cut, then bench.py's timed configurations on GPU 0 alone
#   phase quick: a smaller smollm2 run ($QUICK overrides) on 2 GPUs, then the bench on GPU 0, in one call
# usage: bash bench/h100x2.sh train|bench|quick OUT [COMMIT] [LIMIT_S]
set -o pipefail
source bench/gpu_env.sh
export METASD_APT_LISTS=$PWD/.gpu/debian METASD_DEBIAN_FAQ=$PWD/.gpu/debian/debian-faq.en.txt.gz
R=/tmp/runs/smollm2-2gpu OUT=$2 COMMIT=${3:-unknown} LIMIT=${4:-560} O=/tmp/o
TRAIN="python3 train.py recipe=smollm2 run_dir=$R trainer.devices=2"
mkdir -p $OUT /tmp/runs $O
left() { echo $((LIMIT - SECONDS)); }
if [ "$1" = quick ]; then
  QUICK="data.domains.code.n=64 data.domains.math.n=64 data.domains.chat.n=64 data.domains.translation.n=64
    data.domains.summarisation.n=64 data.domains.qa.n=64 distill.max_steps=200 distill.val_every=200
    distill.specialist_steps=60 decode.heldout_per_domain=3"
  R=/tmp/runs/quick
  TRAIN="python3 train.py recipe=smollm2 run_dir=$R trainer.devices=2 $QUICK"
  nvidia-smi -L | tee $OUT/cards.txt
  timeout 300 $TRAIN 2>&1 | tee $OUT/train.log | grep "✓\|error"
  cp $R/manifest.json $R/config.yaml $OUT/
fi
if [ "$1" = train ]; then
  nvidia-smi -L | tee $OUT/cards.txt
  timeout $((LIMIT - 150)) $TRAIN 2>&1 | tee -a $OUT/train.log | grep -v "it/s\]" | tail -40
  echo "train rc=$?"
  [ -f $R/export/ensemble.json ] || exit 0
  cp $R/manifest.json $R/config.yaml $R/distill/acceptance.json $OUT/
  B="bench/bench.py run=$R prompts=$R/data/heldout.jsonl per_category=2 max_new_tokens=256 timed=false commit=$COMMIT"
  (CUDA_VISIBLE_DEVICES=1 timeout $(($(left) - 10)) python3 -m pytest -q tests/gpu > $O/gpu_tests.log 2>&1
   CUDA_VISIBLE_DEVICES=1 timeout $(($(left) - 10)) python3 $B check_fp32=0 check_eager=12 out=$O/eager > $O/eager.log 2>&1) &
  CUDA_VISIBLE_DEVICES=0 timeout $(($(left) - 10)) python3 $B check_fp32=128 check_eager=0 out=$O/fp32 > $O/fp32.log 2>&1
  wait
  tail -3 $O/gpu_tests.log; tail -1 $O/eager.log $O/fp32.log
  cat $O/eager/checks.json $O/fp32/checks.json > $OUT/checks.json 2>/dev/null
  tar czf $OUT/checks_logs.tgz -C $O . ; exit 0
fi
[ "$1" = bench ] && timeout $((LIMIT - 420)) $TRAIN 2>&1 | tail -3  # finishes the run if the train phase was cut
CUDA_VISIBLE_DEVICES=0 timeout $(($(left) - 20)) python3 bench/bench.py run=$R prompts=$R/data/heldout.jsonl per_category=2 \
  max_new_tokens=256 hf_max=2 check_eager=0 check_fp32=0 budget_s=$(($(left) - 100)) out=$O/bench commit=$COMMIT \
  2>&1 | tee $OUT/bench.log | grep -v Loading
cp $R/manifest.json $OUT/manifest.json; cp $R/log_acceptance/tau_heatmap.png $R/fit_bandit/replay_tau.png $O/bench/ 2>/dev/null
cp $O/bench/results.md $O/bench/results.json $OUT/; tar czf $OUT/bench.tgz -C $O .
