#!/usr/bin/env python
"""Regenerate the README's benchmark results from `python -m fusedoptim.bench --markdown`.

    python scripts/readme_bench.py                 # runs the default benchmark (minutes), rewrites README.md
    python scripts/readme_bench.py report.md       # uses a saved `--markdown` report instead

Only the text between the markers `<!-- bench:begin -->` and
`<!-- bench:end -->` in README.md is replaced: the report verbatim, with the
per-contender details folded into a <details> block. Nothing is typed by hand,
so the section cannot drift from what the command prints
(tests/test_readme.py checks the tables' columns against the code).
"""
from __future__ import annotations

import os
import subprocess
import sys

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
DETAILS = "**Details** (every contender)"
AFTER_DETAILS = "**Cost of the options"


def fold_details(report: str) -> str:
    i = report.find(DETAILS)
    if i < 0:
        return report
    j = report.find(AFTER_DETAILS, i)
    j = len(report) if j < 0 else j
    body = report[i + len(DETAILS):j].strip()
    return (report[:i] + "<details><summary>Details (every contender)</summary>\n\n" + body
            + "\n\n</details>\n\n" + report[j:])


def splice(readme: str, report: str) -> str:
    a, b = readme.find(BEGIN), readme.find(END)
    if a < 0 or b < a:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} section")
    return readme[:a + len(BEGIN)] + "\n" + fold_details(report).strip() + "\n" + readme[b:]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if argv:
        with open(argv[0]) as f:
            report = f.read()
    else:
        report = subprocess.run([sys.executable, "-m", "fusedoptim.bench", "--markdown"], check=True,
                                stdout=subprocess.PIPE, text=True).stdout
    path = os.path.join(root, "README.md")
    with open(path) as f:
        readme = f.read()
    with open(path, "w") as f:
        f.write(splice(readme, report))
    print(f"README.md: benchmark section rewritten ({len(report.splitlines())} report lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
