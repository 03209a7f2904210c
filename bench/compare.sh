#!/usr/bin/env bash
# PyTorch as installed, then with MKL's Intel-only fast paths forced on by
# LD_PRELOAD of mkl_shim.c (MKL checks the CPU vendor and takes a slow path
# on AMD). Both runs in one invocation: compare them with each other, never
# with numbers from another day. Arguments go to torch_bench.py.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
gcc -shared -fPIC -O2 -o "$build/libmkl_shim.so" "$here/mkl_shim.c"

echo "# as installed"
python3 "$here/torch_bench.py" "$@"
echo "# LD_PRELOAD=mkl_shim (MKL fast path forced)"
LD_PRELOAD="$build/libmkl_shim.so" python3 "$here/torch_bench.py" "$@"
