#!/usr/bin/env bash
# Issue 7's CI step (called from .ci/run): the fast subset of the sanitizer
# run (scripts/sanitize.sh builds the extension with ASan+UBSan in
# build/sanitize, apart from the normal build, and fails on any report).
# The rest of issue 7 (fuzzing, state_dict corruption, threads/fork,
# distributed, NaN/inf/GradScaler) runs in the normal test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/sanitize.sh -q -W ignore::DeprecationWarning \
  tests/test_fuzz.py tests/test_threads.py tests/test_bad_input.py tests/test_no_alloc.py \
  "tests/test_nonfinite.py::test_nonfinite_params_match_torch"
echo "== ci_trust: sanitizer subset finished in $(( $(date +%s) - start )) s"
