#!/usr/bin/env python3
"""CI guard: every update loop of the CPU kernels vectorizes, per function.

    python scripts/check_vectorized.py            # compile csrc/cpu/kernels.c and check
    python scripts/check_vectorized.py --dump F   # check an existing -fdump-tree-vect-optimized-missed dump

Compiles csrc/cpu/kernels.c as CI's compile step does (-O3 -fno-math-errno
-fno-trapping-math -ffp-contract=off, -Wall -Wextra -Werror) with gcc's
vectorizer report written per function (-fdump-tree-vect-optimized-missed), then:

  * every loop that must vectorize carries the marker comment `FO_VEC` on its
    `for` line (the update loop `core`, which every optimizer x storage
    variant inlines into its `dispatch_*` function once per option set; the
    widen / narrow / unscale / sum-of-squares loops; the roofline loop);
  * in every function of the report, no loop at a marked line may be reported
    "couldn't vectorize loop": one de-vectorized option set of one optimizer
    in one storage variant and instruction set fails the check, whatever the
    other loops do;
  * every expected dispatch function exists (native float/double and each
    low-precision storage variant, per instruction set compiled) and
    vectorizes its loops at the core line (at least as many as it has cases).

Exit status 1 with the offending functions and lines listed.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("csrc/cpu/loops_spec.h", "csrc/cpu/convert.h", "csrc/cpu/isa_section.h")
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-std=gnu11",
         "-Wall", "-Wextra", "-Werror", "-Icsrc", "-Icsrc/cpu"]
MSG = re.compile(r"^(\S+?):(\d+):\d+: (optimized: loop vectorized|missed: couldn't vectorize loop)")
FUNC = re.compile(r"^;; Function (\S+)")


def marked_lines():
    """{(file, line): text} for every line of every FO_VEC loop (from its
    `for` to the end of its body): gcc reports a loop it could not vectorize
    at its header, which after an early exit or a call in the body can be a
    line inside the body rather than the `for` line"""
    out = {}
    for rel in SOURCES:
        with open(os.path.join(ROOT, rel)) as f:
            lines = f.read().split("\n")
        for n, line in enumerate(lines, 1):
            if not ("FO_VEC" in line and re.search(r"\bfor\s*\(", line)):
                continue
            head = line.split("/*")[0]
            end = n
            if head.rstrip().endswith("{"):
                depth = 0
                for k in range(n - 1, len(lines)):
                    code = lines[k].split("/*")[0]
                    depth += code.count("{") - code.count("}")
                    if depth == 0:
                        end = k + 1
                        break
            elif ";" not in head[head.index(")") + 1:] if ")" in head else True:
                end = n + 1  # the body is the next line's statement
            for k in range(n, end + 1):
                out[(rel, k)] = line.strip()
    return out


def _always_in_loops(path):
    """per-element code with no loops of its own: whatever gcc fails to
    vectorize there is an update loop that inlined it"""
    return path in ("csrc/fusedoptim/optim_math_spec.h", "csrc/cpu/convert.h")


def core_line(marks):
    core = [k for k, v in marks.items() if k[0].endswith("loops_spec.h") and "core" in v and "for" in v
            and k[1] == min(l for (f, l), t in marks.items() if t == v)]
    if len(core) != 1:
        sys.exit(f"check_vectorized: expected one `for` line marked FO_VEC core in loops_spec.h, got {core}")
    return core[0]


def expected_dispatch(text):
    """dispatch functions the build must contain: per ISA section compiled,
    the native f32/f64 ones and the low-precision storage variants listed in
    loops_spec.h (#define FO_SV _...)."""
    with open(os.path.join(ROOT, "csrc/cpu/loops_spec.h")) as f:
        variants = re.findall(r"#define FO_SV (_\w+)", f.read())
    isas = sorted({m.group(1) for m in re.finditer(r"dispatch_f(?:32|64)_(baseline|avx2|avx512)\b", text)})
    names = set()
    for isa in isas:
        names |= {f"dispatch_f32_{isa}", f"dispatch_f64_{isa}"}
        names |= {f"dispatch_f32_{isa}{v}" for v in variants}
    return names, isas, variants


def cases_per_dispatch():
    """number of option sets (FO_C / FO_C3 expansions) of dispatch's main
    switch, the one every instantiation has (the tail forms come on top):
    a lower bound on the loops vectorized at the core line per dispatch"""
    with open(os.path.join(ROOT, "csrc/cpu/loops_spec.h")) as f:
        src = f.read()
    body = src[src.index("FO_VN(dispatch)("):]
    body = body[:body.index("\n}\n")]
    main = body[body.rindex("switch (key)"):]
    return main.count("FO_C3(") * 3 + len(re.findall(r"\bFO_C\(", main))


def parse(dump):
    per = collections.defaultdict(lambda: collections.Counter())
    fn = None
    with open(dump, errors="replace") as f:
        for line in f:
            m = FUNC.match(line)
            if m:
                fn = m.group(1).split(".")[0]
                continue
            m = MSG.match(line)
            if m and fn:
                path = os.path.relpath(os.path.join(ROOT, m.group(1)), ROOT) if not os.path.isabs(m.group(1)) \
                    else os.path.relpath(m.group(1), ROOT)
                ok = m.group(3).startswith("optimized")
                per[fn][(path, int(m.group(2)), ok)] += 1
    return per


def compile_dump(cc, out_dir):
    dump = os.path.join(out_dir, "kernels.vect")
    cmd = [cc, *FLAGS, "-c", "csrc/cpu/kernels.c", "-o", os.path.join(out_dir, "kernels.o"),
           f"-fdump-tree-vect-optimized-missed={dump}"]
    print("check_vectorized:", " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    return dump


def check(dump):
    marks = marked_lines()
    core = core_line(marks)
    per = parse(dump)
    bad = []
    for fn, c in sorted(per.items()):
        for (path, line, ok), n in sorted(c.items()):
            if not ok and ((path, line) in marks or _always_in_loops(path)):
                what = marks.get((path, line), "inlined per-element code")
                bad.append(f"{fn}: {n} loop(s) at {path}:{line} not vectorized   ({what})")
    text = "\n".join(per)
    names, isas, variants = expected_dispatch(text)
    ncase = cases_per_dispatch()
    for name in sorted(names):
        c = per.get(name)
        if c is None:
            bad.append(f"{name}: missing from the vectorizer report")
            continue
        nvec = sum(n for (p, l, ok), n in c.items() if ok and (p, l) == core)
        if nvec < max(ncase, 1):
            bad.append(f"{name}: {nvec} vectorized loops at the core line, expected >= {ncase}")
    nfun = sum(1 for fn in per if any((p, l) in marks for (p, l, ok) in per[fn]))
    nloops = sum(n for fn in per for (p, l, ok), n in per[fn].items() if ok and (p, l) in marks)
    nmarked = len({t for t in marks.values()})
    print(f"check_vectorized: {nmarked} marked loops ({len(marks)} lines), {nfun} functions contain them, {nloops} vectorized "
          f"loop reports; {len(names)} dispatch functions expected ({', '.join(isas)} x f32/f64 + "
          f"{len(variants)} storage variants), >= {ncase} option sets each")
    if bad:
        print("check_vectorized: FAILED — loops that must vectorize did not:")
        for b in bad:
            print("  " + b)
        return 1
    print("check_vectorized: ok")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", help="an existing dump instead of compiling")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    a = ap.parse_args(argv)
    if a.dump:
        return check(a.dump)
    with tempfile.TemporaryDirectory() as d:
        return check(compile_dump(a.cc, d))


if __name__ == "__main__":
    sys.exit(main())
