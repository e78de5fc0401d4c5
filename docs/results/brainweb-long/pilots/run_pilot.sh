#!/usr/bin/env bash
# run_pilot.sh NAME MINUTES [--init X] KEY=VALUE... : one pilot from the /tmp/pilot snapshot,
# 1 thread, stopped after MINUTES
name=$1; minutes=$2; shift 2
extra=()
if [ "${1:-}" = "--init" ]; then extra=(--init "$2"); shift 2; fi
for kv in data.t1_any_probability=0 data.uniform_probability=0 data.phase_any_probability=0 \
  "data.intensity_range=[1.0,1.0]" model.lambda_p_per_parameter=false "$@"; do extra+=(--set "$kv"); done
cd /work/main
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=${SNAPSHOT:-/tmp/pilot}/src
timeout --signal=INT $((minutes*60)) python -m pinqi train --config configs/cpu-brainweb.yaml \
  --out runs/pilots/$name "${extra[@]}" > runs/pilots/$name.log 2>&1
echo "$name ended rc=$?" >> runs/pilots/$name.log
