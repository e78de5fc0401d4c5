#!/usr/bin/env bash
# The prepared GPU call (issue 17, 18): one device run that
#   1. measures the training step of the old and the new code (benchmarks/gpu_step.py), and
#   2. trains the follow-up of the long training for the rest of its minutes (the same preset,
#      configs/brainweb-long.yaml, from the shipped default's weights towards 75,000 steps =
#      300,000 samples, the learning curve's estimate for the whole-mask goal; the long run
#      itself ended at its 10,000 steps), copying the checkpoint into $OUT every minute, so that
#      a call killed at its limit still brings back the last one.
#
# Prepare on the development machine (the device copy has no git history and no ../shared;
# carried paths may hold 64 MiB in all, so: the old code without its weights, 0.6 MB; the 15
# training and validation subjects only, 46 MiB; the run's checkpoint travels as a tracked
# file, docs/results/brainweb-longer/last.ckpt, and is put in place below):
#   git archive 47221dd src configs pyproject.toml ':(exclude)src/pinqi/weights' \
#     | (mkdir -p runs/baseline-src && tar -x -C runs/baseline-src)
#   mkdir -p runs/brainweb-data && for s in 05 38 41 42 43 44 45 46 47 48 50 51 52 53 54; do
#     cp ../shared/data/brainweb/subject${s}_crisp_v.mnc.gz runs/brainweb-data/; done
# then call the device tool with
#   carry: ["runs/baseline-src", "runs/brainweb-data"]
#   command: bash benchmarks/gpu_session.sh 480        (seconds of training after the benchmark)
#   timeout_s: 600
# and bring back $OUT/last.ckpt and $OUT/metrics.csv into docs/results/brainweb-longer/.
set -uo pipefail
train_seconds=${1:-420}
out=${OUT:-out}
mkdir -p "$out"
pip install --quiet -e . >/dev/null 2>&1 || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$out/device.txt" 2>&1
timeout 240 python benchmarks/gpu_step.py --baseline-src runs/baseline-src --skip-methods \
  --repeats 3 > "$out/gpu_step.txt" 2>&1
if [ -f docs/results/brainweb-longer/last.ckpt ] && [ ! -f runs/brainweb-longer/checkpoints/last.ckpt ]; then
  mkdir -p runs/brainweb-longer/checkpoints runs/brainweb-longer/logs
  cp docs/results/brainweb-longer/last.ckpt runs/brainweb-longer/checkpoints/
  cp docs/results/brainweb-longer/metrics.csv runs/brainweb-longer/logs/
fi
timeout --signal=INT "$train_seconds" pinqi train --config configs/brainweb-long.yaml \
  --out runs/brainweb-longer --resume auto --init default --set optim.max_steps=75000 \
  --set optim.pretrain_epochs=0 \
  --set optim.accelerator=gpu --set optim.num_workers=6 \
  --set data.brainweb_dir=runs/brainweb-data > "$out/train.log" 2>&1 &
trainer=$!
while kill -0 "$trainer" 2>/dev/null; do
  sleep 60
  cp runs/brainweb-longer/checkpoints/last.ckpt "$out/last.ckpt" 2>/dev/null
  cp runs/brainweb-longer/logs/metrics.csv "$out/metrics.csv" 2>/dev/null
done
wait "$trainer"
cp runs/brainweb-longer/checkpoints/last.ckpt "$out/last.ckpt" 2>/dev/null
cp runs/brainweb-longer/logs/metrics.csv "$out/metrics.csv" 2>/dev/null
tail -c 2000 "$out/train.log"
