#!/usr/bin/env bash
# A sweep of one knob: where quick.gs's one late depth expansion happens.
# The `late` schedule trains 1 layer at the final width for a share of its
# 1.94e12 FLOPs, then 2 layers for the rest; the share goes from 50 % to
# 95 %, each point a `--set` of the two stage budgets, and `gsc report`
# puts them in one table beside the from-scratch run. About 5 minutes on
# two cores:
#
#   ./examples/experiments/sweep.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/experiments/sweep}
total=1.94e12
points=(scratch)
for share in 0.5 0.65 0.8 0.9 0.95; do points+=("$share"); done
one() {
  local point=$1
  if [ "$point" = scratch ]; then
    ./scripts/experiment examples/experiments/quick.gs --run scratch --jobs 1 --out "$out/scratch"
  else
    local a b
    a=$(python3 -c "print(f'{$point * $total:.4g}')")
    b=$(python3 -c "print(f'{(1 - $point) * $total:.4g}')")
    ./scripts/experiment examples/experiments/quick.gs --run late --jobs 1 --out "$out/late-$point" \
      --set "grow.late.one_layer=$a flops" --set "grow.late.two_layers=$b flops"
  fi
}
export -f one
export out total
printf '%s\n' "${points[@]}" | xargs -P 2 -I{} bash -c 'one {}'
./target/release/gsc report $(ls -d "$out"/*/s*-*/*/) --out "$out/report" > /dev/null
echo "report: $out/report/report.md"
