#!/usr/bin/env bash
# Where the CPU time of whole training steps goes, by on-CPU samples
# (`perf record -e cpu-clock`). Unlike the step bench's per-kernel wall
# times, samples count only time a thread actually ran, so another process
# on the machine (a training run, a build) does not inflate them.
#
#   bash bench/profile.sh [--arch gpt|ngpt] [--threads N] [--steps N]
#
# Needs `perf` (Debian: linux-perf). JIT kernels appear by name
# (`k98_gelu_bwd`): Cranelift writes perf's JIT map when perf records.
set -euo pipefail
cd "$(dirname "$0")/.."

arch=gpt threads=1 steps=4
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
command -v perf >/dev/null || { echo "bench/profile.sh needs perf (apt-get install linux-perf)" >&2; exit 1; }

bin=$(cargo bench -p gsc-runtime --bench step --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable") and m.get("target", {}).get("name") == "step": print(m["executable"])')
data=$(mktemp /tmp/gsc-profile.XXXXXX)
# The JIT map of this run is the one written after $data was made; other
# processes' maps stay.
trap 'find /tmp -maxdepth 1 -name "perf-*.map" -newer "$data" -delete; rm -f "$data"' EXIT

GSC_BENCH_ARCH=$arch GSC_BENCH_STEPS=$steps RAYON_NUM_THREADS=$threads \
    perf record -q -e cpu-clock -F 1000 -o "$data" "$bin" | grep -E '^(model|step:)'
perf report -i "$data" --stdio --no-children --sort symbol 2>/dev/null |
    awk '/^ *[0-9.]+%/ {
        share = $1 + 0; sym = $3
        if (sym ~ /microkernel|(avx2|avx512|bf16)::micro/) g = "matmul microkernels"
        else if (sym ~ /pack_a|pack_b|vectorize::imp/) g = "matmul packing"
        else if (sym ~ /attention/) g = "attention"
        else if (sym ~ /^k[0-9]+_/) { g = "JIT loop kernels"; sub(/^k[0-9]+_/, "", sym); jit[sym] += share }
        else if (sym ~ /^(mem|__mem)/) g = "memset/memcpy"
        else g = "other (setup, kernel, runtime)"
        group[g] += share
    }
    END {
        print "on-CPU share of the run (setup included):"
        for (g in group) printf "  %6.2f %%  %s\n", group[g], g | "sort -rn"
        close("sort -rn")
        print "JIT loop kernels by name (all layers):"
        for (k in jit) printf "  %6.2f %%  %s\n", jit[k], k | "sort -rn | head -12"
    }'
