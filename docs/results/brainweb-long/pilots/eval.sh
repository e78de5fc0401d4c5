#!/usr/bin/env bash
# eval.sh NAME CHECKPOINT : per-tissue validation metrics of a pilot on val32.h5 (1 thread)
cd /work/main
OMP_NUM_THREADS=1 python -m pinqi evaluate --checkpoint "$2" --data runs/pilots/data/val32.h5 \
  --out runs/pilots/eval/$1 --device cpu > runs/pilots/eval-$1.log 2>&1
