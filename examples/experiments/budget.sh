#!/usr/bin/env bash
# Compute to reach the from-scratch loss, measured the strict way: each
# growth run is trained again with every stage's budget scaled by 70 % and
# by 50 % (its LR schedule, warmup-stable-decay, shrinking with it), so that
# its final loss — after a full decay — can be set against the scratch
# run's. A run whose 50 % version ends within 0.5 % of scratch's loss needs
# at most half the compute. Runs gutenberg_small.gs's RUNS (default: the
# nGPT's gradual schedule and the GPT's late depth expansion), seed 1, one
# run per core; about 6 minutes on two cores.
#
#   ./examples/experiments/budget.sh [OUT_DIR] [RUN…]
set -euo pipefail
cd "$(dirname "$0")/../.."
file=examples/experiments/gutenberg_small.gs
out=${1:-runs/experiments/budget}
shift || true
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(ngpt_gradual gpt_late)
cargo build --release --quiet
plan=$(mktemp)
./target/release/gsc compile "$file" --emit=plan --format=json > "$plan"
points=()
for run in "${runs[@]}"; do
  for scale in 0.7 0.5; do points+=("$run $scale"); done
done
one() {
  local run=$1 scale=$2
  # `--set grow.RUN.STAGE=…` for every stage, from the plan's FLOPs.
  local sets
  sets=$(python3 -c '
import json, sys
plan = json.load(open(sys.argv[1]))
name = sys.argv[2]
run = next(r for r in plan["runs"] if r["name"] == name)
for s in run["stages"]:
    flops = s["steps"] * s["train"]["batch"] * s["model"]["context"] * s["flops_per_token"]
    print("grow.%s.%s=%s flops" % (name, s["name"], ("%.4g" % (flops * float(sys.argv[3]))).replace("e+", "e")))
' "$plan" "$run" "$scale")
  local args=()
  while IFS= read -r s; do args+=(--set "$s"); done <<< "$sets"
  ./scripts/experiment "$file" --run "$run" --jobs 1 --out "$out/$run-$scale" "${args[@]}"
}
export -f one
export plan file out
printf '%s\n' "${points[@]}" | xargs -P 2 -L 1 bash -c 'one $0 $1'
echo "report with the scratch runs: ./target/release/gsc report $out/*/s*-*/*/ runs/experiments/gutenberg_small/s1-*_scratch/*/"
