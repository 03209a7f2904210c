#!/usr/bin/env bash
# Data parallel against threads on one machine: tokens/s of workload S
# (bench/workloads/S.gs) trained by `mpirun -n 2` (one rank a core, one
# thread each) and by one process with two threads, alternating, ROUNDS
# rounds of STEPS steps; the first logged window of each run is left out.
#   bash bench/ranks.sh [--rounds 2] [--steps 40]
# Needs a release gsc built with `--features mpi` (./scripts/setup-mpi).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=2 steps=40
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--steps N]" >&2; exit 2 ;;
  esac
done
./scripts/fetch-data >/dev/null
cargo build --release --quiet --features mpi
gsc=${CARGO_TARGET_DIR:-target}/release/gsc
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for r in $(seq "$rounds"); do
  "$gsc" run bench/workloads/S.gs --runs-dir "$out/threads-$r" --max-stage-steps "$steps" >/dev/null
  mpirun -n 2 "$gsc" run bench/workloads/S.gs --runs-dir "$out/ranks-$r" --max-stage-steps "$steps" >/dev/null
done
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /'
python3 - "$out" <<'PY'
import glob, json, sys
def rate(kind):
    vals = []
    for f in sorted(glob.glob(f"{sys.argv[1]}/{kind}-*/*/metrics.jsonl")):
        steps = [json.loads(l) for l in open(f)]
        vals += [r["tokens_per_s"] for r in steps if r["kind"] == "step"][1:]
    return sum(vals) / len(vals)
t, r = rate("threads"), rate("ranks")
print(f"S, 1 process x 2 threads: {t:,.0f} tok/s")
print(f"S, mpirun -n 2 x 1 thread: {r:,.0f} tok/s ({r / t:.2f}x)")
PY
