#!/usr/bin/env bash
# gsc and PyTorch on the reference workloads, in one run, with the ratios:
# gsc (CPU backend, built with MLIR when MLIR 22 is installed:
# scripts/setup-mlir; then it runs MLIR's loop kernels, as a long stage of
# `gsc run` does once they are compiled), gsc on Cranelift's loop kernels
# alone (GSC_SWITCH_CODE=never; only in a build with MLIR), PyTorch as
# installed, and PyTorch with MKL's AVX-512 path forced (LD_PRELOAD of
# mkl_shim.c) — PyTorch at its best on AMD CPUs.
# With --bf16: gsc with `precision = bf16` against PyTorch with autocast to
# bf16 (the Cranelift-only row left out).
# --no-mlir builds gsc without MLIR: Cranelift's loop kernels only.
#   bash bench/side_by_side.sh [--steps N] [--warmup N] [--rounds R] [--bf16] [--no-mlir] [S M]
# The three systems take turns, R rounds of each (default 3), and the table
# gives each one's median over its rounds: on a shared VM whose speed drifts
# by a third within minutes, one pass of each would measure the drift.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
steps=10; warmup=3; rounds=3; models=(); precision=f32; torch_flags=(); want_mlir=yes; cranelift_row=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --bf16) precision=bf16; torch_flags=(--bf16); cranelift_row=no; shift ;;
    --no-mlir) want_mlir=no; shift ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(S M)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
gcc -shared -fPIC -O2 -o "$out/libmkl_shim.so" "$here/mkl_shim.c"
mlir=no
if [ -x /usr/lib/llvm-22/bin/mlir-opt ] && [ $want_mlir = yes ]; then
  cargo build --release --quiet --features mlir && mlir=yes
else
  cargo build --release --quiet
fi
for r in $(seq "$rounds"); do
  echo "round $r of $rounds" >&2
  "${CARGO_TARGET_DIR:-target}/release/gsc" bench --precision $precision --steps "$steps" --warmup "$warmup" "${models[@]}" >> "$out/gsc.jsonl"
  if [ $mlir = yes ] && [ $cranelift_row = yes ]; then
    GSC_SWITCH_CODE=never "${CARGO_TARGET_DIR:-target}/release/gsc" bench --steps "$steps" --warmup "$warmup" "${models[@]}" >> "$out/gsc_cranelift.jsonl"
  fi
  python3 "$here/torch_bench.py" --steps "$steps" --warmup "$warmup" --models "${models[@]}" "${torch_flags[@]}" >> "$out/torch.jsonl"
  LD_PRELOAD="$out/libmkl_shim.so" python3 "$here/torch_bench.py" --steps "$steps" --warmup "$warmup" --models "${models[@]}" "${torch_flags[@]}" >> "$out/torch_mkl.jsonl"
done
python3 - "$out" <<'PY'
import json, sys, os, statistics
out = sys.argv[1]
def load(name):
    rows = {}
    for line in open(os.path.join(out, name)):
        if line.strip():
            r = json.loads(line)
            rows.setdefault(r["model"], []).append(r)
    # Per model, the round with the median throughput (all its fields).
    return {m: sorted(rs, key=lambda r: r["tokens_per_s"])[len(rs) // 2] | {"all": [r["tokens_per_s"] for r in rs]} for m, rs in rows.items()}
gsc, torch, best = load("gsc.jsonl"), load("torch.jsonl"), load("torch_mkl.jsonl")
cranelift = load("gsc_cranelift.jsonl") if os.path.exists(os.path.join(out, "gsc_cranelift.jsonl")) else {}
# The machine, as gsc measured it: numbers from different machines are
# never to be compared.
g0 = next(iter(gsc.values()))
print(f"machine: {g0.get('cpu', '?')}, {g0.get('threads', '?')} threads, kernels for {g0.get('isa', '?')}, "
      f"loop kernels by {g0.get('loop_code', '?')}, "
      f"f32 GEMM peak {g0.get('gemm_peak_gflops', 0):.0f} GFLOP/s (1024³, measured); MFU against --peak-gflops; "
      f"products in {g0.get('precision', 'f32')}")
print(f"{'model':<6}{'system':<26}{'ms/step':>10}{'tokens/s':>11}{'MFU':>7}{'RSS MB':>8}{'gsc ×':>8}   tokens/s per round")
for m in gsc:
    g = gsc[m]
    for label, r in (("gsc", g), ("gsc, Cranelift loops only", cranelift.get(m)), ("PyTorch as installed", torch.get(m)), ("PyTorch + MKL shim", best.get(m))):
        if r is None:
            continue
        rss = r.get("peak_rss_mb") or r.get("peak_rss_mib", 0)
        ratio = g["tokens_per_s"] / r["tokens_per_s"]
        rounds = " ".join(f"{t:.0f}" for t in r["all"])
        print(f"{m:<6}{label:<26}{r['ms_per_step']:>10.1f}{r['tokens_per_s']:>11.0f}{r['mfu']*100:>6.1f}%{rss:>8}{ratio:>8.2f}   {rounds}")
PY
