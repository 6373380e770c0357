#!/usr/bin/env bash
# Every GPU check of issue 30 in one go, for a machine with a CUDA GPU (one is lent now and then):
#
#     benchmarks/gpu_check.sh OUT_DIR [PART ...]      # PARTs: device gpu_tests gpu_bench bf16_parity full_suite (default: all)
#
# On a lease of 15 minutes, run it in two calls: `... OUT_DIR device gpu_tests gpu_bench`, then
# `... OUT_DIR bf16_parity` (and full_suite if time is left); results of both land in OUT_DIR.
#
# 1. the GPU's description (nvidia-smi, torch's view of it)          -> OUT_DIR/device.txt
# 2. the tests marked gpu, then the device-parametrised ones on CUDA   -> OUT_DIR/gpu_tests.txt
# 3. the GPU section of make bench (benchmarks/gpu_speed.py)           -> OUT_DIR/gpu_bench.txt (JSON lines at the end)
# 4. the bf16 parity study on the GPU (seeds 0 1 2, 1,000 steps each)  -> OUT_DIR/bf16_parity.txt, bf16_parity.png
# 5. the full test suite on the GPU machine (make test), if time is left -> OUT_DIR/full_suite.txt
# Each part has its own time limit and exit code (OUT_DIR/status.txt); a failing part does not
# stop the others. Copy the figures into docs/performance.md ("On a GPU") with the GPU's name.
set -u
out=${1:?usage: benchmarks/gpu_check.sh OUT_DIR [device gpu_tests gpu_bench bf16_parity full_suite]}
shift
parts=${*:-device gpu_tests gpu_bench bf16_parity full_suite}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=offline
PY=${PYTHON:-python}

part() {  # part NAME SECONDS FILE COMMAND...: run it under a time limit, record its exit code and time
    local name=$1 limit=$2 file=$3 started=$SECONDS
    shift 3
    case " $parts " in *" $name "*) ;; *) return 0 ;; esac
    echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
    timeout "$limit" "$@" > "$out/$file" 2>&1
    local code=$?
    echo "$name exit=$code seconds=$((SECONDS - started))" | tee -a "$out/status.txt"
    tail -n 5 "$out/$file"
}

part device 60 device.txt bash -c "nvidia-smi; lscpu | grep 'Model name'; $PY -c 'import json, torch; from benchmarks.gpu_speed import gpu_description; print(json.dumps(gpu_description()))'"
part gpu_tests 300 gpu_tests.txt bash -c "$PY -m pytest -q -p no:randomly -m gpu tests/; $PY -m pytest -q -p no:randomly tests/test_device_data.py tests/test_step_sync.py"
part gpu_bench 300 gpu_bench.txt $PY benchmarks/gpu_speed.py --steps 300 --repeats 3
part bf16_parity 420 bf16_parity.txt $PY benchmarks/bf16_parity.py --seeds 0 1 2 --plot "$out/bf16_parity.png" -- trainer.accelerator=cuda
part full_suite 420 full_suite.txt make test PYTHON="$PY"
echo "results in $out: status.txt, device.txt, gpu_tests.txt, gpu_bench.txt, bf16_parity.txt/png, full_suite.txt"
