#!/usr/bin/env bash
# Valgrind memcheck on a short optimizer run (every registry optimizer, a few
# steps, float32 and float64, several shapes incl. 0-d, empty, transposed),
# once per kernel variant valgrind can execute (it has no AVX-512: avx2 and
# baseline). Uses the in-place build (python setup.py build_ext --inplace).
#
#   bash scripts/valgrind.sh            # prints a summary; exit 1 if any error
#                                        # has a frame in fusedoptim's _C .so
# torch's own libraries produce memcheck reports of their own (uninitialised
# reads inside libgomp/oneDNN/CPU-feature probing); those are counted and
# listed separately, not judged. PYTHONMALLOC=malloc lets memcheck see Python's
# allocations.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${VALGRIND_OUT:-build/valgrind}
mkdir -p "$out"
PY=$("${PYTHON:-python}" -c "import sys; print(sys.executable)")  # the real binary, not a wrapper script
status=0
for isa in avx2 baseline; do
  log="$out/memcheck-$isa.log"
  # OMP_WAIT_POLICY=passive: spinning pool threads crawl under valgrind's
  # serialized scheduler
  OMP_WAIT_POLICY=passive PYTHONMALLOC=malloc FUSEDOPTIM_ISA=$isa PYTHONPATH="$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" \
    valgrind --tool=memcheck --error-limit=no --num-callers=40 --track-origins=no \
      --log-file="$log" "$PY" - <<'PYEOF'
import torch
import registry as R
import fusedoptim
assert fusedoptim._C.get_isa() in ("avx2", "baseline"), fusedoptim._C.get_isa()
torch.set_num_threads(2)
n = 0
for info in R.OPTIMS:
    for config in (info.configs[0], info.configs[-1]):
        for dtype in (torch.float32, torch.float64):
            shapes = [R.ShapeCase("0d", ()), R.ShapeCase("45", (45,)), R.ShapeCase("empty", (0,)),
                      R.ShapeCase("T33x7_gradC", (33, 7), param_layout="T", grad_layout="C")]
            if config is info.configs[0]:  # split across the 2 threads (grain 32768)
                shapes.append(R.ShapeCase("70001", (70001,)))
            for shape in shapes:
                R.run_trajectory(info.fo_cls, config.kwargs, shape, dtype, steps=3, grad_fn=R.special_grad,
                                 override=info.group1_override(config.kwargs))
                n += 1
print(f"valgrind run: {n} trajectories x 3 steps, isa {fusedoptim._C.get_isa()}")
PYEOF
  ours=$("$PY" - "$log" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n==\d+== \n", text)
errs = [b for b in blocks if re.search(r"==\d+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and destination|Argument)", b)]
ours = [b for b in errs if re.search(r"fusedoptim/_C|kernels\.c|_spec\.h|isa_section\.h|_C\.pyx|_C\.c:", b)]
print(len(ours), len(errs))
for b in ours:
    sys.stderr.write(b + "\n\n")
PYEOF
)
  summary=$(grep -E "ERROR SUMMARY|definitely lost|indirectly lost" "$log" | sed 's/^==[0-9]*== //' | tr '\n' ';')
  echo "== valgrind ($isa): errors with a fusedoptim frame / all errors: $ours; $summary (log: $log)"
  if [ "${ours%% *}" != "0" ]; then status=1; fi
done
exit $status
