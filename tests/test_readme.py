"""What the README shows is what the code prints (skipped where the README
is not beside the tests, e.g. a wheel's test run)."""
from __future__ import annotations

import os
import re

import pytest

import fusedoptim

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


@pytest.fixture(scope="module")
def readme() -> str:
    if not os.path.exists(README):
        pytest.skip("README.md is not beside the tests (installed-wheel run)")
    with open(README, encoding="utf-8") as f:
        return f.read()


def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def test_benchmark_section_is_the_bench_output(readme):
    """The results between the markers are `python -m fusedoptim.bench
    --markdown` output (scripts/readme_bench.py): their tables have the
    columns the code prints today, so the section cannot silently drift."""
    from fusedoptim import bench as fb

    sec = _section(readme, "Benchmarks")
    body = sec.split("<!-- bench:begin -->", 1)[1].split("<!-- bench:end -->", 1)[0]
    summary_head = fb.format_summary([], markdown=True).splitlines()[0]
    options_head = "| " + " | ".join(["thr", "variant", "B/el", "ms (IQR)", "GB/s", "roofline GB/s", "% roofline",
                                      "time / default", "x torch", "x best"]) + " |"
    assert summary_head in body
    assert options_head in body
    assert fb.LEGEND in body
    assert "timed cases ran" in body and "Run time:" in body
    assert re.search(r"\| AdamW \| W4 \| 1 \|", body), "the bf16 (W4) rows are shown"


def test_show_config_snippet_matches_show_config(readme, capsys):
    fusedoptim.show_config()
    out = capsys.readouterr().out.splitlines()
    sec = _section(readme, "What is accelerated")
    snippet = sec.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    table = snippet[snippet.index(next(l for l in snippet if l.startswith("optimizer "))):]
    for line in table:
        if line != "...":
            assert line in out, line


def test_install_section_does_not_promise_the_index(readme):
    sec = _section(readme, "Installing")
    assert "not on the package index yet" in sec and "pip install ." in sec
