#!/usr/bin/env bash
# Compile-check the CUDA backend; no GPU needed.
#
#   bash scripts/cuda_check.sh               (a) nvcc -c every csrc/cuda/*.cu for sm_80 and sm_90
#   bash scripts/cuda_check.sh --torch VENV  (a), then (b): build the torch extension ahead of
#                                            time into VENV (a venv with a CUDA build of torch,
#                                            e.g. torch==2.14.1, plus setuptools, Cython, ninja)
#                                            and import it: the ops must register
#   bash scripts/cuda_check.sh --torch auto  (b) with the current python if its torch has CUDA
#
# (a) needs only nvcc (CUDA_HOME, PATH or /usr/local/cuda). (b) installs fusedoptim into VENV
# (never into the system Python) with FUSEDOPTIM_CUDA=1 and MAX_JOBS=1; it takes minutes on
# a small machine (nice it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=""
if [ "${1:-}" = "--torch" ]; then
  venv="${2:?--torch needs a venv path or 'auto'}"
fi

nvcc="${NVCC:-}"
if [ -z "$nvcc" ]; then
  for c in "${CUDA_HOME:-}/bin/nvcc" "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
    if [ -n "$c" ] && [ -x "$c" ]; then nvcc=$c; break; fi
  done
fi
if [ -z "$nvcc" ]; then
  echo "cuda_check: nvcc not found (set NVCC or CUDA_HOME)" >&2
  exit 2
fi

# (a) every .cu for each target; sm_80 as C++17, sm_90 as C++20 (torch >= 2.14 builds C++20)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
n=0
for cu in csrc/cuda/*.cu; do
  for target in 80:c++17 90:c++20; do
    sm=${target%%:*}; std=${target##*:}
    "$nvcc" -c -std=$std -O3 --fmad=false -Icsrc -Icsrc/cuda -Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror \
      -gencode "arch=compute_$sm,code=sm_$sm" "$cu" -o "$out/$(basename "$cu" .cu)_${sm}.o"
    n=$((n + 1))
  done
done
echo "== cuda_check (a): $n nvcc compiles ok ($("$nvcc" --version | tail -1))"

[ -z "$venv" ] && exit 0

# (b) build against a CUDA torch and import with no GPU
if [ "$venv" = "auto" ]; then
  py=python
else
  py="$venv/bin/python"
fi
if ! "$py" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)"; then
  echo "cuda_check (b): $py has no CUDA build of torch" >&2
  exit 3
fi
home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
[ -f "$home/include/cuda_runtime_api.h" ] || home=/usr/local/cuda
src=$(mktemp -d)
trap 'rm -rf "$out" "$src"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$src"   # a clean copy: no in-place build products
t0=$(date +%s)
( cd "$src" && FUSEDOPTIM_CUDA=1 CUDA_HOME="$home" MAX_JOBS="${MAX_JOBS:-1}" \
    "$py" -m pip install -q --no-build-isolation --no-deps . )
echo "== cuda_check (b): built and installed in $(( $(date +%s) - t0 )) s"
cd /tmp
"$py" - <<'EOF'
import torch, fusedoptim
from fusedoptim import _cuda
assert _cuda.load(), _cuda.status()
ops = torch.ops.fusedoptim
for name in ("fused_step_", "cuda_table_info"):
    assert hasattr(ops, name), name
info = {(k, a): list(ops.cuda_table_info(k, [0.0, 0.0, 0.0, 0.0, 0.0, 0.9], [0, a, 0, 0, 1])) for k in (0, 1) for a in (0, 1)}
print("== cuda_check (b): torch", torch.__version__, "cuda", torch.version.cuda,
      "| GPU visible:", torch.cuda.is_available())
print("   backend:", _cuda.status())
print("   schema:", ops.fused_step_.default._schema)
print("   (kind, amsgrad) -> [nlists, uses_step, max tensors/launch, chunk] (SGD with momentum):", info)
EOF
