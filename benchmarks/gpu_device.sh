#!/usr/bin/env bash
# The GPU checks, as one prepared command for a lent GPU machine whose image already holds
# CUDA PyTorch, Lightning and torchmetrics but not ranklab's other needs (README, "GPU"):
#
#   make device-wheels                          # here, once: the missing wheels into .whl/
#   bash benchmarks/gpu_device.sh               # there, from the repository root, .whl carried
#
# (.whl/ is git-ignored: a copy of the working tree that leaves ignored files behind must be told
# to take it, e.g. this workplace's device tool with carry [".whl"] and timeout_s 600.)
#
# Each step has its own time limit and writes its log under $OUT (default outputs/device), so a
# step that runs long still leaves the others' results; the benchmark runs first. The limits add
# up to 740 s: under the device tool's 600 s cap the last steps may be cut, never the bench.
# $OUT receives 8 files (the tool brings back at most 8). Exit status: the first failed step's.
# TRAIN_ARGS and BENCH_ARGS are added to the run's and the benchmarks' arguments: a CPU smoke
# test of this script is
#   TRAIN_ARGS="trainer=cpu trainer.precision=32-true" BENCH_ARGS="--rows 20000 --batch 4096 \
#     --max-vocab 1000 --epochs 2 --repeats 1 --precision 32-true" bash benchmarks/gpu_device.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/device}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/ranklab-site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/ranklab-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
status=0
step() {  # step NAME SECONDS COMMAND...: run it with a limit, keep its log, remember a failure
  local name=$1 limit=$2 rc
  shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "== $name: exit $rc"
  [ "$status" = 0 ] && [ "$rc" != 0 ] && status=$rc
  return 0
}

step environment 60 bash -c "nvidia-smi; $PY -c 'import torch, lightning; print(torch.__version__, \
torch.version.cuda, torch.cuda.get_device_name(), \"lightning\", lightning.__version__)'"
# make bench-gpu first (the figures the README lacks): DCNv2 and DLRM, batch 65,536,
# bf16-mixed, beside the bare loop
step bench-gpu 330 "$PY" benchmarks/gpu_throughput.py --out "$OUT" ${BENCH_ARGS:-}
# the GPU tests (they skip on CI): data stays on the card; BST reruns to the same digits
step gpu-tests 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/train/test_devices.py
# one ranklab-train run as a user starts it: bf16-mixed and torch.compile, metrics.json's GPU
# memory and latency columns
rm -rf /tmp/ranklab-device-run
step train-bf16-compile 100 "$PY" -m ranklab.train trainer=gpu model=dcnv2 \
  trainer.precision=bf16-mixed +model.compile=true trainer.max_epochs=2 \
  hydra.run.dir=/tmp/ranklab-device-run ${TRAIN_ARGS:-}
cp /tmp/ranklab-device-run/metrics.json "$OUT/train-bf16-compile-metrics.json" 2>/dev/null
# DCNv2 under torch.compile (build() compiles the module in place: both sides run it compiled)
step bench-gpu-compile 150 "$PY" benchmarks/gpu_throughput.py --models dcnv2 --repeats 1 \
  --overrides +model.compile=true --out "$OUT" ${BENCH_ARGS:-}
exit "$status"
