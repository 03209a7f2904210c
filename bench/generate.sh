#!/usr/bin/env bash
# `gsc generate` (KV cache, CPU) against transformers' generate (KV cache,
# PyTorch on the CPU) on the same model: S of performance.md as a Llama
# (SwiGLU, so that transformers runs its native LlamaForCausalLM), trained
# one step, exported, then N tokens greedily from the same prompt by each,
# R rounds each, alternating. Prints each one's median, the ratio, and
# whether both wrote the same text (greedy decoding of the same model).
#   bash bench/generate.sh [--tokens N] [--rounds R]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
tokens=250; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --tokens) tokens=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo build --release --quiet
gsc=./target/release/gsc
$gsc run examples/gpt_vs_ngpt.gs --run gpt --set model.gpt.activation=swiglu \
  --max-stage-steps 1 --runs-dir "$out/runs" > /dev/null
run=$(ls -d "$out"/runs/gpt_vs_ngpt-*)
$gsc export "$run" --to hf "$out/hf" > /dev/null
gsc_times=()
for r in $(seq "$rounds"); do
  line=$($gsc generate "$run" --prompt "ROMEO:" -n "$tokens" --temperature 0 2>&1 >"$out/gsc.txt" | tail -1)
  gsc_times+=("$(echo "$line" | sed -E 's/.* in ([0-9.]+) s.*/\1/')")
  python3 "$here/torch_generate.py" "$out/hf" --prompt "ROMEO:" --tokens "$tokens" --rounds 1 2>/dev/null >> "$out/torch.jsonl"
done
python3 - "$out/torch.jsonl" "$out/gsc.txt" "$tokens" "${gsc_times[@]}" <<'PY'
import json, statistics, sys
tokens, gsc = int(sys.argv[3]), statistics.median(float(t) for t in sys.argv[4:])
rows = [json.loads(l) for l in open(sys.argv[1])]
same = open(sys.argv[2]).read().rstrip("\n") == rows[-1]["text"]
peer = statistics.median(r["seconds"] for r in rows)
print(f"{tokens} tokens, S as a Llama, greedy, median of {len(rows)} rounds each")
print(f"| system | seconds | tokens/s | gsc × |")
print(f"|---|---:|---:|---:|")
print(f"| gsc generate | {gsc:.3f} | {tokens / gsc:,.0f} | 1.00 |")
print(f"| {rows[0]['system']} | {peer:.3f} | {tokens / peer:,.0f} | {peer / gsc:.2f} |")
print("the same text from both:", "yes" if same else "NO")
PY
