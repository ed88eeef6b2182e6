"""Micro-benchmarks (pytest-benchmark): gradient clipping by total norm.

fusedoptim.clip_grad_norm_ vs torch.nn.utils.clip_grad_norm_ (foreach=True and
foreach=False) on W1 (one fp32 tensor of 16.8 M elements) and W3 (2,000 fp32
tensors of 512), both when the grads get scaled (max_norm=1: after the first
call the norm sits at 1 and the coefficient 1/(1+1e-6) < 1, so every call
reads and writes every grad) and when they do not (max_norm=1e30: the
coefficient is 1; torch still multiplies by it, fusedoptim skips the write).
`extra_info` carries the effective GB/s under the minimal traffic model
(clip: read + read-write = 12 B/element in fp32; no clip: 4 B/element).
Nothing asserts speed. FUSEDOPTIM_BENCH_QUICK=1 shrinks the workloads; with
--benchmark-disable every case runs once (a smoke test).
"""
from __future__ import annotations

import math
import statistics
import time

import pytest
import torch

import fusedoptim
from fusedoptim import bench as fb

WORKLOADS = ("W1", "W3")
MODES = {
    "fusedoptim": lambda ps, m: fusedoptim.clip_grad_norm_(ps, m),
    "torch-foreach": lambda ps, m: torch.nn.utils.clip_grad_norm_(ps, m, foreach=True),
    "torch-forloop": lambda ps, m: torch.nn.utils.clip_grad_norm_(ps, m, foreach=False),
}
MAX_NORMS = {"clip": 1.0, "noclip": 1e30}
CASES = [(w, c, m) for w in WORKLOADS for c in MAX_NORMS for m in MODES]
TARGET_SECONDS = 0.5


@pytest.mark.parametrize(("workload_key", "case", "mode"), CASES, ids=["-".join(c) for c in CASES])
def test_clip(benchmark, workload_base, bench_quick, bench_threads, workload_key, case, mode):
    wl = fb.workload(workload_key, bench_quick)
    params = []
    for b in workload_base(workload_key):   # own copies: clipping is in place
        p = torch.nn.Parameter(b.detach())
        p.grad = b.grad.clone()
        params.append(p)
    max_norm = MAX_NORMS[case]
    fn = MODES[mode]
    nbytes = (12 if case == "clip" else 4) * wl.numel

    benchmark.group = f"clip_grad_norm_ {wl.key} {case} {bench_threads} thr"
    benchmark.extra_info.update(workload=wl.key, case=case, mode=mode, threads=bench_threads,
                                quick=bench_quick, numel=wl.numel, tensors=wl.tensors, bytes=nbytes)
    times: list = []
    totals: list = []

    def run():
        t0 = time.perf_counter()
        totals.append(fn(params, max_norm))
        times.append(time.perf_counter() - t0)

    if benchmark.disabled:
        benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        run()  # warm-up (and the first clip down to max_norm)
        run()
        rounds = max(3, min(50, math.ceil(TARGET_SECONDS / max(times[-1], 1e-6))))
        times.clear()
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=0, iterations=1)

    stats = getattr(benchmark.stats, "stats", None)
    median = stats.median if stats is not None else statistics.median(times)
    benchmark.extra_info["median_ms"] = median * 1e3
    benchmark.extra_info["gbps"] = nbytes / median / 1e9
    # every contender returns a finite norm of the right kind
    assert all(t.dtype == torch.float32 and t.dim() == 0 and math.isfinite(t.item()) for t in totals)
