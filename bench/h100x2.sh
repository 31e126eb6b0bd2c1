# The H100x2 session (device tool, nvidia-h100-x2), after the model is joined in /tmp/model:
#   phase train: the smollm2 recipe (6 domains) on 2 GPUs, the same command as 1 GPU but trainer.devices=2
#   phase bench: bench.py on GPU 0 (its run) while GPU 1 re-runs the distill stage on 1 GPU with the same data
# usage: bash bench/h100x2.sh train|bench OUT [COMMIT]
set -o pipefail
source bench/gpu_env.sh
export METASD_APT_LISTS=$PWD/.gpu/debian METASD_DEBIAN_FAQ=$PWD/.gpu/debian/debian-faq.en.txt.gz
R2=/tmp/runs/smollm2-2gpu R1=/tmp/runs/smollm2-1gpu OUT=$2 O=/tmp/o
mkdir -p $OUT /tmp/runs $O
if [ "$1" = train ]; then
  nvidia-smi -L | tee $OUT/cards.txt
  python3 train.py recipe=smollm2 run_dir=$R2 trainer.devices=2 decode.heldout_per_domain=4 2>&1 | tee -a $OUT/train_2gpu.log | grep -v "it/s\]" | tail -60
  exit $?
fi
python3 train.py recipe=smollm2 run_dir=$R2 trainer.devices=2 decode.heldout_per_domain=4 2>&1 | tail -3  # resume if cut
mkdir -p $R1 && cp -r $R2/data $R2/config.yaml $R1/ && python3 -c "
import json; m = json.load(open('$R2/manifest.json')); m['stages'] = {'data': m['stages']['data']}
json.dump(m, open('$R1/manifest.json', 'w'))"
(CUDA_VISIBLE_DEVICES=1 python3 train.py recipe=smollm2 run_dir=$R1 stages=[distill] decode.heldout_per_domain=4 > $O/distill_1gpu.log 2>&1; echo "1-gpu distill rc=$?" >> $O/distill_1gpu.log) &
CUDA_VISIBLE_DEVICES=0 python3 bench/bench.py run=$R2 prompts=$R2/data/heldout.jsonl per_category=2 max_new_tokens=256 \
  hf_max=2 check_eager=false check_fp32=32 out=$O/bench commit=${3:-unknown} 2>&1 | tee $O/bench.log | grep -v Loading | tail -40
wait
tail -3 $O/distill_1gpu.log
for r in $R1 $R2; do cp $r/distill/throughput.json $O/$(basename $r)-throughput.json; cp $r/distill/acceptance.json $O/$(basename $r)-acceptance.json; done
cp $R2/manifest.json $O/manifest-2gpu.json; cp $R2/config.yaml $O/; cp $R2/log_acceptance/tau_heatmap.png $R2/fit_bandit/*.png $O/ 2>/dev/null
tar czf $OUT/h100x2.tgz -C $O . && cp $O/bench/results.md $OUT/ ; ls -R $O
