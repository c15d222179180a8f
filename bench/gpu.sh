#!/usr/bin/env bash
# Every GPU figure of the benchmarks in one prepared run, sized for a short GPU window
# (<= 8 minutes of run time on one H200 with 16 cores), written as JSON under $OUT:
#
#   1. sampling: the pipeline against the naive loop, the plain Ray Data peer and the machine's
#      ceilings (all-core encode, generator), format raw, DDIM rates, Ray Train's overhead
#      (whole call vs a plain loop, long epochs and the digits demo), memory at N and 10xN;
#   2. DDPM steps: a digits DDPM trained on the GPU, then CAS and images/s for DDIM and
#      DPM-Solver++(2M) at 10/15/25/50 steps and CFG batching (bench/ddpm_steps.py);
#   3. a GPU smoke of the product path: a tiny job end to end with train.use_gpu: true (a Ray Train
#      worker on the GPU, nccl, bf16) and GPU sampling actors, its output read back and checked.
#
#   bash bench/gpu.sh                  # on the GPU machine, after the two-carry install (bench/README.md)
#   bash bench/gpu.sh --cpu-rehearsal  # here: the same steps at tiny sizes on the CPU, to know it works
#
# Each step has its own time limit and records what it got; a failed step does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[[ "${1:-}" == "--cpu-rehearsal" ]] && MODE=cpu
OUT=${OUT:-bench/results/gpu-$(date +%F)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
[[ -x .venv/bin/python && $MODE == cpu ]] && PY=.venv/bin/python
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
WORK=$(mktemp -d /tmp/genpipe-gpu-XXXX)
if [[ $MODE == gpu ]]; then
  DEV=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr 'A-Z' 'a-z')
  QUICK="" GPU=true DDPM_EPOCHS=270 SMOKE_EPOCHS=3 LIMIT=300
else
  DEV=cpu-rehearsal QUICK="--quick" GPU=false DDPM_EPOCHS=3 SMOKE_EPOCHS=1 LIMIT=400
fi
echo "{\"device\": \"$DEV\", \"mode\": \"$MODE\", \"date\": \"$(date -u +%FT%TZ)\", \"cpus\": $(nproc)}" > "$OUT/device.json"
status=0
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s)"
  local t0=$SECONDS
  timeout "$secs" "$@"; local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$OUT/steps.jsonl"
  [[ $rc == 0 ]] || { echo "!! $name failed (rc $rc)"; status=1; }
}

# 1. sampling and training overhead
step sampling "$LIMIT" "$PY" bench/sampling.py $QUICK --out "$OUT/sampling-$DEV.json"

# 2. DDPM steps: train the shipped digits DDPM on the device, then sweep the samplers
step ddpm-train 150 "$PY" -m pipeline run jobs/digits-ddpm.yaml --date 2026-01-01 \
  --set "storage=$WORK/runs" --set "sample.output=$WORK/data" --set "train.use_gpu=$GPU" \
  --set "train.epochs=$DDPM_EPOCHS" --set "train.checkpoint_every=$DDPM_EPOCHS" --set gate.measure=false \
  --set sample.num_images=1000 --set sample.shard_size=1000
RUN=$(dirname "$(ls -d "$WORK"/runs/digits-ddpm/train/*/done.json | head -1)")
step ddpm-steps 120 "$PY" bench/ddpm_steps.py "$RUN" --images $([[ $MODE == gpu ]] && echo 2000 || echo 200) \
  --out "$OUT/ddpm-steps-$DEV.json"

# 3. the product path on the GPU: Ray Train worker (nccl, bf16), gate, GPU sampling actors, publish
step smoke 150 "$PY" -m pipeline run jobs/digits-dcgan.yaml --date 2026-01-02 \
  --set "storage=$WORK/smoke-runs" --set "sample.output=$WORK/smoke-data" --set "train.use_gpu=$GPU" \
  --set train.num_workers=1 --set "train.epochs=$SMOKE_EPOCHS" --set "train.checkpoint_every=$SMOKE_EPOCHS" \
  --set gate.eval_images=500 --set gate.cas_min=null --set gate.memorization_max=null \
  --set sample.num_images=4000 --set sample.shard_size=1000
step smoke-check 60 "$PY" - "$WORK/smoke-data/digits-dcgan" "$OUT/smoke-$DEV.json" <<'PY'
import json, sys
from pipeline.publish import open_dataset
ds = open_dataset(sys.argv[1])
m = ds.manifest
doc = {"rows": len(ds), "classes": len(ds.class_names), "label_counts": m.label_counts,
       "checkpoint_digest": m.checkpoint_digest, "metrics": {k: (m.metrics or {}).get(k)
       for k in ("cas", "real_acc", "cas_ratio", "fid", "memorization")}}
assert doc["rows"] == 4000, doc
json.dump(doc, open(sys.argv[2], "w"), indent=1)
print(json.dumps(doc))
PY
rm -rf "$WORK"
echo "results in $OUT (status $status)"
exit $status
