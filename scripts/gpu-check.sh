#!/usr/bin/env bash
# The GPU check, run from the folder scripts/gpu-bundle makes, on a machine
# with an NVIDIA GPU, its driver and PyTorch (CUDA build), with no Rust, no
# LLVM and no network needed. Each part has a timeout, 8 minutes in all:
#   1. the conformance suite on the GPU (every kernel kind, whole training
#      steps of gpt, gpt+LayerNorm and nGPT, shared parameters) against the
#      reference interpreter;
#   2. parity: examples/smoke.gs (two stages and a growth) trained on the GPU
#      and on the CPU from the same artifact, losses compared step by step;
#   3. the S, M and G (GPT-2 small: 12 layers, d 768, context 1024)
#      training steps of gsc and of PyTorch eager on the same card: ms/step,
#      tokens/s, MFU against the card's f32 peak (--peak-gflops, default
#      67000: an H100 SXM's f32 without tensor cores).
# Usage: ./gpu-check.sh [PEAK_GFLOPS]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
peak=${1:-67000}
status=0
step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || status=1
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' || status=1
# cuBLAS from PyTorch's wheels when CUDA's own is not on the library path.
libs=$(python3 -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for d in nvidia.__path__ for p in glob.glob(d + "/*/lib/libcublas*.so*")})))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

step "1. conformance on the GPU"
GSC_PTX_DIR="$here/ptx/conformance" timeout 90 ./conformance cuda:: --test-threads 1 || status=1

step "2. parity: smoke.gs on the GPU and on the CPU"
rm -rf runs
for backend in cuda cpu; do
  timeout 60 ./gsc run examples/smoke.gs --artifact smoke.json --backend "$backend" \
    --runs-dir "runs/$backend" > "runs-$backend.log" 2>&1 || { status=1; tail -20 "runs-$backend.log"; }
  grep -E "GPU:|grow into|val_loss|smoke " "runs-$backend.log" | tail -6
done
python3 - <<'PY' || status=1
import glob, json
def losses(backend):
    (path,) = glob.glob(f"runs/{backend}/*/metrics.jsonl")
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if r.get("kind") == "step"}
gpu, cpu = losses("cuda"), losses("cpu")
steps = sorted(set(gpu) & set(cpu))
assert steps, "no common logged steps"
first = steps[:5]
d5 = max(abs(gpu[s] - cpu[s]) for s in first)
dall = max(abs(gpu[s] - cpu[s]) for s in steps)
print(f"parity: {len(steps)} logged steps; max |loss GPU - CPU| {d5:.2e} over steps {first}, {dall:.2e} over all")
assert d5 < 1e-3, "the first steps differ"
assert dall < 5e-2, "the runs drift apart"
PY

step "3. S, M and G: gsc (cuda) and PyTorch eager, same card"
timeout 150 ./gsc bench S M G --backend cuda --ptx ptx/bench --steps 10 --warmup 3 \
  --peak-gflops "$peak" || status=1
timeout 120 python3 torch_bench.py --models S M G --device cuda --steps 10 --warmup 3 \
  --peak-gflops "$peak" || status=1

step "done: $([ $status = 0 ] && echo passed || echo FAILED)"
exit $status
