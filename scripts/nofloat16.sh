#!/usr/bin/env bash
# fp16 storage on a compiler without _Float16 (GCC <= 11, clang < 15 on x86:
# any sdist build there). The extension is built from a copy of the sources
# ($NOF16_DIR, default build/nofloat16) with `-U__FLT16_MAX__`, the macro by
# which C code detects _Float16 (verified below to be gone for the build's
# compiler and flags), and the fp16 tests run against that copy: fp16 params
# must update, bit-identical to torch's fused kernel where it has one.
#
#   bash scripts/nofloat16.sh                 # the fp16 tests
#   bash scripts/nofloat16.sh tests/test_parity.py -k float16
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${NOF16_DIR:-$root/build/nofloat16}
PY=${PYTHON:-python}
FLAGS="-U__FLT16_MAX__"

# the flag really hides _Float16 from the preprocessor for this compiler
printf '#ifdef __FLT16_MAX__\n#error _Float16 still visible\n#endif\nint fo_probe;\n' >"${TMPDIR:-/tmp}/fo_nof16_probe.c"
gcc $FLAGS -c "${TMPDIR:-/tmp}/fo_nof16_probe.c" -o "${TMPDIR:-/tmp}/fo_nof16_probe.o"

mkdir -p "$dir/src" "$dir/csrc"
for f in setup.py pyproject.toml README.md; do cp -p "$f" "$dir/"; done
cp -rp src/fusedoptim "$dir/src/"
cp -rp csrc/. "$dir/csrc/"
rm -f "$dir"/src/fusedoptim/_C*.so "$dir"/src/fusedoptim/_C.c
"$PY" -c "import Cython, setuptools" 2>/dev/null || "$PY" -m pip install -q "Cython>=3.0" "setuptools>=64"
echo "== nofloat16: building with CFLAGS=$FLAGS in $dir"
(
  cd "$dir"
  CFLAGS="$FLAGS" "$PY" setup.py build_ext --inplace -q --build-temp build/temp --build-lib build/lib >build.log 2>&1 \
    || { cat build.log >&2; exit 1; }
)
if [ $# -eq 0 ]; then
  set -- tests/test_fp16_storage.py tests/test_family_options.py -k "float16 or fp16"
fi
PYTHONPATH="$dir/src" FUSEDOPTIM_EXPECT_SO_DIR="$dir/src/fusedoptim" \
  "$PY" -m pytest -q -p no:cacheprovider "$@"
