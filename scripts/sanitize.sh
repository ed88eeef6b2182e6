#!/usr/bin/env bash
# Build the C extension with AddressSanitizer + UndefinedBehaviorSanitizer and
# run the test suite (or the pytest arguments given) against that build.
#
#   bash scripts/sanitize.sh                      # whole suite (tests/)
#   bash scripts/sanitize.sh tests/test_parity.py -k AdamW
#   SANITIZE_DIR=/tmp/fo-asan bash scripts/sanitize.sh ...
#
# The sanitized build lives in a copy of the sources ($SANITIZE_DIR, default
# build/sanitize): it never replaces the normal in-place build or an installed
# fusedoptim. The tests are the repository's own, run with that copy first on
# PYTHONPATH.
#
# Python itself is not built with ASan, so libasan is LD_PRELOADed.
# ASAN_OPTIONS has detect_leaks=0: the CPython interpreter and torch keep
# allocations alive until exit by design (interned objects, caches), which
# LeakSanitizer would report as leaks that are not ours. Every other ASan check
# is on and aborts on the first report; UBSan reports are made fatal
# (-fno-sanitize-recover=all and halt_on_error=1), so any report fails the run.
#
# Requires gcc (with libasan/libubsan), Cython, setuptools and torch.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=${SANITIZE_DIR:-$root/build/sanitize}
PY=${PYTHON:-python}

libasan=$(gcc -print-file-name=libasan.so)
if [ ! -e "$libasan" ] || [ "$libasan" = "libasan.so" ]; then
  echo "sanitize.sh: libasan.so not found (gcc -print-file-name=libasan.so); install gcc's sanitizer runtime" >&2
  exit 2
fi

# 1. a private copy of what the build needs; rebuild only what changed
mkdir -p "$dir"
for f in setup.py pyproject.toml README.md; do cp -p "$f" "$dir/"; done
mkdir -p "$dir/src" "$dir/csrc"
cp -rp src/fusedoptim "$dir/src/"
cp -rp csrc/. "$dir/csrc/"
# never pick up the normal build's shared object or generated C from the copy
rm -f "$dir"/src/fusedoptim/_C*.so "$dir"/src/fusedoptim/_C.c

# the build runs setup.py directly (no build isolation): it needs Cython and
# setuptools in this Python (a clean CI venv has neither: pip's isolated
# build of the project had them)
"$PY" -c "import Cython, setuptools" 2>/dev/null || "$PY" -m pip install -q "Cython>=3.0" "setuptools>=64"

echo "== sanitize: building with -fsanitize=address,undefined in $dir"
(
  cd "$dir"
  FUSEDOPTIM_SANITIZE=1 CFLAGS="-fno-sanitize-recover=all" \
    nice -n 10 "$PY" setup.py build_ext --inplace -q -j "${SANITIZE_JOBS:-2}" --build-temp build/temp --build-lib build/lib >build.log 2>&1 \
    || { cat build.log >&2; exit 1; }
)
so=$(ls "$dir"/src/fusedoptim/_C*.so)
if ! nm -D "$so" | grep __asan_ >/dev/null; then  # (grep -q would SIGPIPE nm under pipefail)
  echo "sanitize.sh: $so is not instrumented (no __asan_ symbols)" >&2
  exit 1
fi

# 2. run the tests against it. libstdc++ is preloaded with libasan: torch
# throws C++ exceptions (every Python-visible torch error), and ASan's
# __cxa_throw interceptor aborts if libstdc++ was not loaded before it.
# Reports go to files (pytest captures stderr, an abort would lose them) and
# are printed below.
libstdcxx=$(gcc -print-file-name=libstdc++.so.6)
reports="$dir/reports"
rm -rf "$reports"; mkdir -p "$reports"
export LD_PRELOAD="$libasan:$libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:check_initialization_order=1:log_path=$reports/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$dir/src${PYTHONPATH:+:$PYTHONPATH}"
export FUSEDOPTIM_EXPECT_SANITIZED="$so"

# canary: the same runtime setup must catch a real overflow in a C extension,
# else "no report" below would prove nothing
cat >"$dir/canary.c" <<'CEOF'
#include <stdlib.h>
int canary(int i) { int *a = malloc(4 * sizeof(int)); int v = a[i]; free(a); return v; }
CEOF
gcc -shared -fPIC -g -fsanitize=address,undefined -o "$dir/canary.so" "$dir/canary.c"
if { "$PY" -c "import ctypes, sys; ctypes.CDLL(sys.argv[1]).canary(4)" "$dir/canary.so"; } >/dev/null 2>&1 \
   || ! grep -qs "heap-buffer-overflow" "$reports"/asan.*; then
  echo "sanitize.sh: the canary heap overflow was not reported: ASan is not active" >&2
  exit 1
fi
rm -f "$reports"/*
echo "== sanitize: canary heap overflow caught (ASan active)"

"$PY" - <<'EOF'
import os, fusedoptim
so = fusedoptim._C.__file__
assert os.path.realpath(so) == os.path.realpath(os.environ["FUSEDOPTIM_EXPECT_SANITIZED"]), (
    f"tests would import {so}, not the sanitized build")
print(f"== sanitize: testing {so} (isa {fusedoptim._C.get_isa()})")
EOF

if [ "$#" -eq 0 ]; then
  set -- tests
fi
rc=0
nice -n 10 "$PY" -m pytest -q -p no:cacheprovider "$@" || rc=$?
if compgen -G "$reports/*" >/dev/null; then
  for f in "$reports"/*; do echo "== sanitizer report $f:" >&2; cat "$f" >&2; done
  echo "== sanitize: FAILED: sanitizer reports above (pytest exit $rc)" >&2
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "== sanitize: FAILED: pytest exit $rc (no sanitizer report)" >&2
  exit "$rc"
fi
echo "== sanitize: tests passed, no ASan/UBSan report"
