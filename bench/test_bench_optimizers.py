"""Micro-benchmarks (pytest-benchmark): optimizer x workload x mode.

Modes: fusedoptim, torch.optim for-loop (foreach=False), foreach, fused, and
the same-traffic roofline kernel. Each benchmark is one optimizer step; its
`extra_info` carries the effective GB/s under the minimal traffic model.
Nothing asserts speed. With --benchmark-disable every benchmark runs its step
once (smoke test); FUSEDOPTIM_BENCH_QUICK=1 shrinks the workloads.

For interleaved, paired comparisons (the numbers to quote) use
`python -m fusedoptim.bench`; these are for pytest-benchmark's tooling
(--benchmark-save / --benchmark-compare, histograms, CI smoke runs).
"""
from __future__ import annotations

import gc
import json
import math
import statistics
import time

import pytest

from fusedoptim import bench as fb

WORKLOADS = ("W1", "W2", "W3")
OPTIMIZERS = tuple(fb.OPTIMIZERS)  # adamw, adam, sgd
MODES = ("fusedoptim", "forloop", "foreach", "fused", "roofline")

# workload outermost, so the session keeps one workload's parameters at a time
CASES = [(w, o, m) for w in WORKLOADS for o in OPTIMIZERS for m in MODES]

TARGET_SECONDS = 1.0  # timed rounds per benchmark: about this long, 3..50 rounds


@pytest.mark.parametrize(("workload_key", "optimizer", "mode"), CASES, ids=["-".join(c) for c in CASES])
def test_step(benchmark, workload_base, bench_quick, bench_threads, workload_key, optimizer, mode):
    spec = fb.OPTIMIZERS[optimizer]
    wl = fb.workload(workload_key, bench_quick)
    contender = fb.build_contender(mode, spec, workload_base(workload_key))
    nbytes = spec.bytes_per_element * wl.numel

    benchmark.group = f"{spec.label} {wl.key} {bench_threads} thr"
    benchmark.extra_info.update(
        optimizer=optimizer, workload=wl.key, mode=mode, threads=bench_threads, quick=bench_quick,
        numel=wl.numel, tensors=wl.tensors, bytes_per_element=spec.bytes_per_element, bytes_per_step=nbytes,
    )

    times: list = []

    def step():
        t0 = time.perf_counter()
        contender.step()
        times.append(time.perf_counter() - t0)

    if benchmark.disabled:
        benchmark.pedantic(step, rounds=1, iterations=1)  # runs once: a smoke test
    else:
        step()  # warm-up: lazy state, first-touch page faults, plan building
        step()  # sizes the number of rounds
        rounds = max(3, min(50, math.ceil(TARGET_SECONDS / max(times[-1], 1e-6))))
        times.clear()
        benchmark.pedantic(step, rounds=rounds, warmup_rounds=0, iterations=1)

    stats = getattr(benchmark.stats, "stats", None)
    median = stats.median if stats is not None else statistics.median(times)
    benchmark.extra_info["median_ms"] = median * 1e3
    benchmark.extra_info["gbps"] = nbytes / median / 1e9
    benchmark.extra_info["us_per_tensor"] = median * 1e6 / wl.tensors

    assert len(times) >= 1
    del contender
    if not bench_quick:  # free full-size contenders (optimizers may sit in cycles) now
        gc.collect()


# ---------------------------------------------------------------- bench.py itself --
# Plain tests (no benchmark fixture): the runner's logic works end to end.

def test_workload_shapes_full_size_counts():
    w1, w2, w3 = (fb.workload(k) for k in WORKLOADS)
    assert (w1.numel, w1.tensors) == (16_777_216, 1)
    assert (w2.numel, w2.tensors) == (35_299_328, 75)
    assert (w3.numel, w3.tensors) == (2000 * 512, 2000)


def test_measure_and_format_quick():
    r = fb.measure("sgd", "W3", 1, repeats=2, quick=True, min_sample_s=0.0)
    assert set(r["contenders"]) == set(fb.CONTENDERS)
    assert set(r["speedup"]) == {"forloop", "foreach", "fused"}
    for c in r["contenders"].values():
        assert len(c["samples_ms"]) == 2 and c["median_ms"] > 0 and c["gbps"] > 0
    assert r["contenders"]["roofline"]["roofline_fraction"] == pytest.approx(1.0)
    assert {"speedup_forloop", "speedup_fused", "us_per_tensor"} <= set(r["targets"])
    for markdown in (False, True):
        text = fb.format_table([r], markdown=markdown)
        assert "fusedoptim" in text and "W3" in text


def test_cli_quick_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = fb.main(["--quick", "--workloads", "w1", "--optimizers", "adam", "--threads", "1",
                  "--repeats", "1", "--markdown", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| optimizer |" in printed and "**isa**" in printed
    data = json.loads(out.read_text())
    assert [(r["optimizer"], r["workload"], r["threads"]) for r in data["results"]] == [("adam", "W1", 1)]
    assert data["calibration"][0]["gbps"] > 0


def test_cli_rejects_unknown_names():
    with pytest.raises(SystemExit):
        fb.parse_args(["--workloads", "W4"])
    with pytest.raises(SystemExit):
        fb.parse_args(["--threads", "0"])
