#!/usr/bin/env python3
"""Check built fusedoptim wheels the way a release needs them.

    python scripts/check_wheel.py [--max-glibc 2.28] WHEEL...

For every wheel:
  * Linux: repaired (manylinux tags only) and every tag at most manylinux_<max-glibc>;
  * nothing grafted in: no `*.libs/` / `.dylibs/` directory and no OpenMP runtime
    (libgomp, libomp, libiomp) anywhere in the wheel;
  * exactly one compiled extension, fusedoptim/_C.*, and no generated `_C.c`;
  * one version: the file name, METADATA and fusedoptim/_version.py agree;
  * Linux: the extension needs nothing but the C library (checked with `readelf -d`
    when binutils is installed; said so when it is not).

Used by scripts/release_check.sh and by cibuildwheel's repair step
(pyproject.toml). Prints one line per wheel; exits non-zero naming each problem.
Standard library only: it runs inside the manylinux containers too.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

RUNTIMES = re.compile(r"(^|/)(libgomp|libomp|libiomp\d*|libgfortran|libstdc\+\+)[^/]*$")
ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1"}
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def manylinux_glibc(tag: str) -> tuple[int, int] | None:
    """(major, minor) glibc of a manylinux platform tag, None if not manylinux."""
    for legacy, ver in LEGACY.items():
        if tag.startswith(legacy + "_"):
            return ver
    m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check(path: str, max_glibc: tuple[int, int]) -> tuple[list[str], list[str]]:
    """(problems, facts) for one wheel."""
    problems, facts = [], []
    name = os.path.basename(path)
    parts = name[:-4].split("-")
    if not name.endswith(".whl") or len(parts) not in (5, 6):
        return [f"{name}: not a wheel file name"], facts
    file_version, plats = parts[1], parts[-1].split(".")

    linux = any(p.startswith(("linux", "manylinux", "musllinux")) for p in plats)
    if linux:
        for p in plats:
            g = manylinux_glibc(p)
            if g is None:
                problems.append(f"{name}: platform tag {p!r} is not manylinux (wheel not repaired?)")
            elif g > max_glibc:
                problems.append(
                    f"{name}: tag {p} needs glibc {g[0]}.{g[1]}, newer than {max_glibc[0]}.{max_glibc[1]}"
                )
        facts.append("tags " + ".".join(plats))

    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        grafted = [n for n in names if re.search(r"(^|/)[^/]*\.libs/|(^|/)\.dylibs/", n)]
        if grafted:
            problems.append(f"{name}: libraries grafted into the wheel: {grafted}")
        runtimes = [n for n in names if RUNTIMES.search(n)]
        if runtimes:
            problems.append(f"{name}: a runtime library ships in the wheel: {runtimes}")
        exts = [n for n in names if re.match(r"fusedoptim/_C\.[^/]*\.(so|pyd)$", n) or n in ("fusedoptim/_C.so",)]
        if len(exts) != 1:
            problems.append(f"{name}: expected one extension fusedoptim/_C.*, found {exts}")
        if "fusedoptim/_C.c" in names:
            problems.append(f"{name}: ships Cython's generated fusedoptim/_C.c")
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
            problems.append(f"{name}: no LICENSE in .dist-info/licenses/ (pyproject's license-files)")
        if not any(re.match(r"fusedoptim/bench/__main__\.py$", n) for n in names):
            problems.append(f"{name}: lacks the fusedoptim.bench package (python -m fusedoptim.bench)")

        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        meta_version = None
        if meta_name:
            m = re.search(r"^Version: (\S+)$", zf.read(meta_name).decode(), re.M)
            meta_version = m.group(1) if m else None
        src_version = None
        if "fusedoptim/_version.py" in names:
            m = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", zf.read("fusedoptim/_version.py").decode())
            src_version = m.group(1) if m else None
        if not (file_version == meta_version == src_version):
            problems.append(
                f"{name}: versions disagree: file name {file_version}, METADATA {meta_version}, "
                f"fusedoptim/_version.py {src_version}"
            )
        else:
            facts.append(f"version {file_version}")

        if linux and len(exts) == 1:
            if shutil.which("readelf") is None:
                facts.append("NEEDED not checked (no readelf)")
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    so = zf.extract(exts[0], tmp)
                    out = subprocess.run(["readelf", "-d", so], capture_output=True, text=True, check=True).stdout
                needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
                extra = [n for n in needed if n not in ALLOWED_NEEDED and not n.startswith("ld-linux")]
                if extra:
                    problems.append(f"{name}: the extension needs libraries beyond libc: {extra}")
                facts.append("NEEDED " + (", ".join(needed) or "nothing"))
    return problems, facts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wheels", nargs="+")
    ap.add_argument("--max-glibc", default="2.28", help="newest manylinux glibc allowed (default 2.28)")
    a = ap.parse_args(argv)
    max_glibc = tuple(int(x) for x in a.max_glibc.split("."))
    failed = False
    for w in a.wheels:
        problems, facts = check(w, max_glibc)
        for p in problems:
            print(f"check_wheel: FAIL {p}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"check_wheel: ok {os.path.basename(w)}: " + "; ".join(facts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
