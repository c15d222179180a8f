#!/usr/bin/env bash
# Every GPU figure of the benchmarks in one prepared run, sized for a short GPU window (at most
# 480 s of step limits in all, on one H200 with 16 cores), written as JSON under $OUT:
#
#   preflight       what the GPU machine runs (python, torch + CUDA, ray, pydantic, deflate, croniter)
#   sampling        bench/sampling.py --no-free-generator at N = 200,000: the pipeline against the naive
#                   loop, the plain Ray Data peer and the machine's ceilings (all-core encode,
#                   generator), format raw, DDIM rates, Ray Train's overhead (long epochs and the
#                   digits demo), memory at N/10 and N
#   ddpm-train      the shipped digits DDPM trained on the GPU (one worker, global batch 128 as the
#                   shipped two workers x 64: the same ~3,000 optimizer steps)
#   ddpm-steps      bench/ddpm_steps.py on it: CAS and images/s of DDIM and DPM-Solver++(2M) at
#                   10/15/25/50 steps, and CFG's two passes batched into one
#   smoke           the product path on the GPU: jobs/digits-dcgan.yaml with train.use_gpu (a Ray
#                   Train worker on the GPU, nccl, bf16), the gate measured, GPU sampling actors
#   smoke-check     its published dataset read back and checked (rows, labels, decodable PNGs)
#   free-generator  bench/sampling.py --free-generator --quick at N = 50,000 (the pipeline, the peer, the
#                   ceiling, memory at N and 10xN): genpipe's own part (encode, commit, manifest) on
#                   the machine's 16 cores with a generator that costs ~0; last, it gets what is left
#
#   bash bench/gpu.sh                  # on the GPU machine, after the two-carry install below
#   OUT=/tmp/r bash bench/gpu.sh --cpu-rehearsal   # here: the same steps at tiny sizes on the CPU
#
# One-shot: each step runs in its own session under its own time limit (min of its limit and what
# is left of the total), and whatever it leaves running is ended before the next step; a failed
# step does not stop the others (only a failed import in the preflight stops the run: nothing else
# could work).
# $OUT gets at most 7 files (the device tool brings back 8): steps.jsonl (one line per step: rc,
# seconds, limit), summary.json (device, steps, key figures), each step's JSON (a step stopped
# part-way leaves what it printed, marked incomplete) and logs.tar.gz (every step's whole log).
#
# The GPU machine (../shared/gpu/README.md) has Python 3.12, torch 2.11, scikit-learn, pyarrow,
# pandas, typer, rich, fsspec, pillow, pyyaml, but no Ray, pydantic, deflate or croniter, and no
# registry. Here, from the project root (PyPI reachable), build the wheels it lacks:
#
#   bash ../shared/gpu/wheelhouse.sh pydantic==2.14.4 deflate==0.9.0 croniter==7.0.0
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .gpu/b typing-extensions==4.16.0   # pydantic 2.14 needs >= 4.16;
#                             # wheelhouse.sh drops it as "in the image", whose version is unknown
#   du -sh .gpu/a .gpu/b      # 2026-12-01: 41M and 40M (the project tree is 1.2 MB): each call < 64 MiB
#
# .gpu/a: the first 40 MiB of ray's wheel; .gpu/b: the rest of it and pydantic, pydantic-core,
# annotated-types, typing-inspection, typing-extensions, deflate, croniter, tzdata, jsonschema (+2),
# rpds-py, tensorboardX. Reassembled and installed with a local Python 3.12 (2026-12-01): 4 s.
#
# then two device-tool `run` calls on one warm machine, the second at once (it stays warm 30 s):
#
#   run(carry=[".gpu/a"], timeout_s=60,
#       command="mkdir -p /tmp/gpu && cp .gpu/a/* /tmp/gpu/ && nvidia-smi -L && python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())'")
#   run(carry=[".gpu/b"], timeout_s=600, command=
#       "cp .gpu/b/* /tmp/gpu/ && cat /tmp/gpu/ray.whl.part-* > /tmp/gpu/$(cat /tmp/gpu/RAY_WHEEL_NAME)
#        && rm /tmp/gpu/ray.whl.part-* && python3 -m pip install -q --no-index --no-deps --no-compile
#        --target /tmp/site /tmp/gpu/*.whl && export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
#        && OUT=$OUT bash bench/gpu.sh")
#
# The install takes well under a minute; the script at most TOTAL (480 s) plus a few seconds, so
# the second call ends inside its 600 s. Copy $OUT's files under bench/results/gpu-<date>/.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[[ "${1:-}" == "--cpu-rehearsal" ]] && MODE=cpu
OUT=${OUT:-bench/results/gpu-$(date +%F)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/steps.jsonl"
PY=${PYTHON:-python3}
[[ $MODE == cpu && -x .venv/bin/python && -z "${PYTHON:-}" ]] && PY=.venv/bin/python
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORK=$(mktemp -d /tmp/genpipe-gpu-XXXX)
LOGS=$WORK/logs
mkdir -p "$LOGS"
GRACE=10  # seconds between a step's SIGTERM and SIGKILL
if [[ $MODE == gpu ]]; then
  DEV=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr 'A-Z' 'a-z')
  DEV=${DEV:-gpu}
  # limits: 30 + 205 + 70 + 50 + 75 + 10 + 40 = 480 s (estimates from the rehearsal's fixed costs, not
  # measured on the GPU: a step that runs out keeps what it printed, and the next one starts anyway)
  GPU=true TOTAL=480                       LIM_PRE=30
  SAMPLING_ARGS=(--n 200000)               LIM_SAMPLING=205
  DDPM_EPOCHS=270 DDPM_N=1000              LIM_DDPM_TRAIN=70
  STEPS_ARGS=(--images 2000)               LIM_DDPM_STEPS=50
  SMOKE_EPOCHS=3 SMOKE_N=4000 SMOKE_SHARD=1000
  SMOKE_EVAL=(--set gate.eval_images=500 --set gate.seeds=2)  # the gate runs; its figures are not the point
  LIM_SMOKE=75 LIM_CHECK=10
  FREE_ARGS=(--quick --free-n 50000)       LIM_FREE=40
else  # tiny: it proves every step works, on a busy 2-core CPU too
  # (the limits are loose: on a shared 2-core machine at load 20 one Ray Train start took 110 s)
  DEV=cpu-rehearsal GPU=false TOTAL=2400  LIM_PRE=120
  SAMPLING_ARGS=(--quick --n 1000)         LIM_SAMPLING=900
  DDPM_EPOCHS=1 DDPM_N=200                 LIM_DDPM_TRAIN=420
  STEPS_ARGS=(--images 200 --seeds 2 --steps 10)  LIM_DDPM_STEPS=300
  SMOKE_EPOCHS=1 SMOKE_N=1000 SMOKE_SHARD=250
  SMOKE_EVAL=(--set gate.eval_images=200 --set gate.seeds=2)
  LIM_SMOKE=360 LIM_CHECK=60
  FREE_ARGS=(--quick --free-n 2000)        LIM_FREE=360
fi
SETSID=()
command -v setsid >/dev/null && SETSID=(setsid -w)
START=$SECONDS
STARTED=$(date -u +%FT%TZ)
status=0
echo "genpipe bench/gpu.sh: mode $MODE, device $DEV, $(nproc) CPUs, total limit ${TOTAL}s, out $OUT"

session_pids() {  # pids of the processes in session $1 (what a step left running)
  ps -e -o pid=,sid= 2>/dev/null | awk -v s="$1" '$2 == s && $1 != s {print $1}'
}

reap() {  # end what step session $1 left behind (Ray daemons, workers), TERM then KILL
  local pids i
  pids=$(session_pids "$1")
  [[ -z $pids ]] && return 0
  echo "   ending $(echo "$pids" | wc -w) process(es) the step left running"
  kill -TERM $pids 2>/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10; do
    sleep 0.5
    pids=$(session_pids "$1")
    [[ -z $pids ]] && return 0
  done
  kill -KILL $pids 2>/dev/null
  sleep 0.5
}

salvage() {  # salvage LOG RESULT RC: a step stopped before writing RESULT leaves what it printed
  "$PY" - "$1" "$2" "$3" <<'PY' || true
import json, sys
log, result, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = []
for line in open(log, errors="replace"):
    if line.startswith('{"'):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
if rows:
    rows.append({"probe": "incomplete", "rc": rc, "what": "the step stopped before writing its file: "
                 "these are the records it printed"})
    json.dump(rows, open(result, "w"), indent=1)
    print(f"   salvaged {len(rows) - 1} record(s) into {result}")
PY
}

step() {  # step NAME LIMIT RESULT|- CMD...: run CMD under min(LIMIT, what is left of TOTAL)
  local name=$1 want=$2 result=$3 secs left t0 pid rc
  shift 3
  left=$((TOTAL - (SECONDS - START) - GRACE))
  secs=$(( want < left ? want : left ))
  if (( secs < 10 )); then
    echo "== $name skipped: the total limit (${TOTAL}s) is spent"
    echo "{\"step\": \"$name\", \"rc\": null, \"seconds\": 0, \"limit_s\": 0, \"skipped\": true}" >> "$OUT/steps.jsonl"
    status=1
    return 1
  fi
  echo "== $name (limit ${secs}s, at $((SECONDS - START))s)"
  t0=$SECONDS
  "${SETSID[@]}" timeout -k "$GRACE" "$secs" "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  pid=$!
  wait "$pid"
  rc=$?
  reap "$pid"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"limit_s\": $secs}" >> "$OUT/steps.jsonl"
  if [[ $result != - && ! -s $result ]]; then
    salvage "$LOGS/$name.log" "$result" "$rc"
  fi
  if [[ $rc == 0 ]]; then
    echo "   ok in $((SECONDS - t0))s"
  else
    status=1
    echo "!! $name failed (rc $rc$([[ $rc == 124 || $rc == 137 ]] && echo ": time limit")) after $((SECONDS - t0))s; log tail:"
    tail -n 8 "$LOGS/$name.log" | cut -c1-300 | sed 's/^/   | /'
  fi
  return "$rc"
}

finish() {
  "$PY" - "$OUT" "$DEV" "$MODE" "$STARTED" "$(nproc)" "$((SECONDS - START))" "$TOTAL" <<'PY' || true
import json, sys
from pathlib import Path
out, dev, mode, started, cpus, secs, total = sys.argv[1:8]
out = Path(out)


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


def probes(recs, *names):
    return [r for r in (recs or []) if isinstance(r, dict) and r.get("probe") in names]


steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines() if x.strip()]
figs = {}
samp = load(f"sampling-{dev}.json")
if samp is not None:
    setup = (probes(samp, "setup") or [{}])[0]
    figs["sampling"] = {
        "n": setup.get("n"), "device": setup.get("device"),
        **{p["probe"]: p.get("img_per_s") for p in probes(
            samp, "naive", "pipeline_png", "pipeline_raw", "raydata_peer", "encode_ceiling_allcores",
            "generator_ceiling")},
        "ray_start_s": (probes(samp, "ray_start") or [{}])[0].get("seconds"),
        "memory": next(({k: v for k, v in p.items() if k not in ("probe", "measure")} for p in
                        probes(samp, "sampling_peak_memory_mb")), None),
        "ddim_img_per_s": {p["steps"]: p["img_per_s"] for p in probes(samp, "ddpm_ddim")},
        "train_overhead": [{k: p.get(k) for k in ("job", "ray_train_img_per_s", "plain_img_per_s", "overhead",
                                                  "ray_train_wall_s", "plain_wall_s", "wall_ratio",
                                                  "ray_train_floor_s", "workers")}
                           for p in probes(samp, "train_overhead")],
        "summary": next(({k: v for k, v in p.items() if k != "probe"} for p in probes(samp, "summary")), None),
        "complete": not probes(samp, "incomplete"),
    }
free = load(f"free-generator-{dev}.json")
if free is not None:
    figs["free_generator"] = {
        "n": (probes(free, "setup", "free_setup") or [{}])[-1].get("n"),
        "summary": next(({k: v for k, v in p.items() if k not in ("probe", "targets")}
                         for p in probes(free, "free_summary")), None),
        "complete": not probes(free, "incomplete"),
    }
ddpm = load(f"ddpm-steps-{dev}.json")
if ddpm is not None:
    figs["ddpm_steps"] = {
        "images": ddpm.get("images"), "seeds": ddpm.get("seeds"), "device": ddpm.get("device"),
        "rows": [{"sampler": r["sampler"], "steps": r["steps"], "img_per_s": r["img_per_s"],
                  "cas": None if r.get("cas") is None else round(r["cas"], 4)} for r in ddpm.get("rows", [])],
        "cfg_batching": ddpm.get("cfg_batching"),
        "fewest_steps_within_noise": (ddpm.get("fewest_steps_within_noise") or {}).get("sampler", None)
        and {k: ddpm["fewest_steps_within_noise"][k] for k in ("sampler", "steps")},
        "complete": ddpm.get("complete", False),
    }
smoke = load(f"smoke-{dev}.json")
if smoke is not None:
    figs["smoke"] = smoke
doc = {"device": dev, "mode": mode, "date": started, "cpus": int(cpus), "seconds": int(secs),
       "total_limit_s": int(total), "steps": steps, "figures": figs}
(out / "summary.json").write_text(json.dumps(doc, indent=1) + "\n")
print(json.dumps({"steps": steps}))
PY
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null
  rm -rf "$WORK"
  echo "results in $OUT (status $status, $((SECONDS - START))s)"
}

# the smoke's check, written out: steps read no stdin
cat > "$WORK/smoke_check.py" <<'PY'
import io, json, sys

import numpy as np
from PIL import Image

from pipeline.publish import open_dataset

root, out, want, gpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "true"
ds = open_dataset(root)
m = ds.manifest
tab = ds.arrow.head(64)
col = next(c for c in tab.column_names if c in ("image", "png"))
imgs = [np.asarray(Image.open(io.BytesIO(v["bytes"] if isinstance(v, dict) else v))) for v in tab[col].to_pylist()]
spec = m.spec or {}
doc = {"rows": len(ds), "classes": len(ds.class_names), "label_counts": m.label_counts,
       "checkpoint_digest": m.checkpoint_digest, "train_use_gpu": (spec.get("train") or {}).get("use_gpu"),
       "decoded": len(imgs), "image_shape": list(imgs[0].shape), "pixel_mean": round(float(np.mean(imgs)), 2),
       "encoder": getattr(m, "encoder", None) or (m.extra or {}).get("encoder"),
       "metrics": {k: (m.metrics or {}).get(k) for k in ("cas", "real_acc", "cas_ratio", "fid", "memorization")}}
json.dump(doc, open(out, "w"), indent=1, default=str)
print(json.dumps(doc, default=str))
assert doc["rows"] == want, doc
assert doc["train_use_gpu"] is gpu, doc
assert doc["metrics"]["cas"] is not None, doc
PY

# 0. what the machine runs: a failed import stops the run (nothing else could work); running out
#    of time does not (a cold disk cache can make the first torch import slow)
step preflight "$LIM_PRE" - "$PY" -c "
import sys, platform, torch, ray, pydantic, deflate, croniter, sklearn, pyarrow
import pipeline.cli, pipeline.publish.schema as s
print(platform.python_version(), 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '-', 'ray', ray.__version__,
      'pydantic', pydantic.VERSION, 'deflate', deflate.__version__, 'encoder', s.encoder_info())
assert torch.cuda.is_available() == ('$GPU' == 'true'), 'CUDA visible?'
"
rc=$?
if [[ $rc != 0 && $rc != 124 && $rc != 137 ]]; then
  finish
  exit 1
fi
tail -n 1 "$LOGS/preflight.log" | cut -c1-400

# 1. sampling throughput, ceilings, DDIM rates, training overhead, memory
step sampling "$LIM_SAMPLING" "$OUT/sampling-$DEV.json" \
  "$PY" bench/sampling.py --no-free-generator "${SAMPLING_ARGS[@]}" --out "$OUT/sampling-$DEV.json"

# 2. DDPM steps: train the shipped digits DDPM on the device (one worker: one GPU), then sweep the samplers
step ddpm-train "$LIM_DDPM_TRAIN" - "$PY" -m pipeline run jobs/digits-ddpm.yaml --date 2026-01-01 \
  --set "storage=$WORK/runs" --set "sample.output=$WORK/data" --set "train.use_gpu=$GPU" \
  --set train.num_workers=1 --set train.batch_size=128 \
  --set "train.epochs=$DDPM_EPOCHS" --set "train.checkpoint_every=$DDPM_EPOCHS" --set gate.measure=false \
  --set "sample.num_images=$DDPM_N" --set "sample.shard_size=$DDPM_N"
RUN=$(ls -d "$WORK"/runs/digits-ddpm/train/*/done.json 2>/dev/null | head -1)
if [[ -n $RUN ]]; then
  step ddpm-steps "$LIM_DDPM_STEPS" - "$PY" bench/ddpm_steps.py "$(dirname "$RUN")" "${STEPS_ARGS[@]}" \
    --out "$OUT/ddpm-steps-$DEV.json"
else
  echo "== ddpm-steps skipped: ddpm-train left no finished run"
  echo '{"step": "ddpm-steps", "rc": null, "seconds": 0, "limit_s": 0, "skipped": true}' >> "$OUT/steps.jsonl"
  status=1
fi

# 3. the product path on the device: Ray Train worker (nccl, bf16), gate, GPU sampling actors, publish
step smoke "$LIM_SMOKE" - "$PY" -m pipeline run jobs/digits-dcgan.yaml --date 2026-01-02 \
  --set "storage=$WORK/smoke-runs" --set "sample.output=$WORK/smoke-data" --set "train.use_gpu=$GPU" \
  --set train.num_workers=1 --set "train.epochs=$SMOKE_EPOCHS" --set "train.checkpoint_every=$SMOKE_EPOCHS" \
  "${SMOKE_EVAL[@]}" --set gate.cas_min=null --set gate.memorization_max=null \
  --set "sample.num_images=$SMOKE_N" --set "sample.shard_size=$SMOKE_SHARD"
step smoke-check "$LIM_CHECK" "$OUT/smoke-$DEV.json" env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
  "$PY" "$WORK/smoke_check.py" "$WORK/smoke-data/digits-dcgan" "$OUT/smoke-$DEV.json" "$SMOKE_N" "$GPU"

# 4. genpipe's own part of sampling on this machine's cores, the generator made free
step free-generator "$LIM_FREE" "$OUT/free-generator-$DEV.json" \
  "$PY" bench/sampling.py --free-generator "${FREE_ARGS[@]}" --out "$OUT/free-generator-$DEV.json"

finish
exit $status
