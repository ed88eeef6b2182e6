"""GPU benchmark of the CUDA backend (skips without a GPU).

    python bench/test_bench_cuda.py [--quick] [--repeats N]      # table on stdout
    pytest bench/test_bench_cuda.py                               # same, as a test (skips w/o GPU)

For W1/W2/W3 (fusedoptim.bench.workload) and SGD(momentum)/Adam/AdamW in
float32: fusedoptim's step time, its GB/s (bytes the update must move: each
state/param array read and written, the grad read) against the device's
measured copy bandwidth (a device-to-device copy of 256 MiB: read + write), and
the speedup over torch's fused=True and foreach steps. Times: CUDA events
around `inner` steps, median over `repeats` rounds, contenders interleaved.

Targets (issue 5): >= torch fused on W1/W2, >= 85% of copy bandwidth on W1/W2,
>= 3x torch foreach on W3.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import pytest
import torch

import fusedoptim
from fusedoptim import bench as fb

# bytes moved per element per step, in units of the param's element size:
# (arrays read and written) * 2 + grad read once
TRAFFIC = {"SGD": 2 * 2 + 1, "Adam": 3 * 2 + 1, "AdamW": 3 * 2 + 1}
KW = {"SGD": dict(lr=1e-3, momentum=0.9), "Adam": dict(lr=1e-3), "AdamW": dict(lr=1e-3, weight_decay=0.01)}


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 20) -> float:
    """Device-to-device copy GB/s (bytes read + bytes written)."""
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * nbytes / statistics.median(times) / 1e9


def _contender(name, mode, shapes):
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    for p in ps:
        p.grad = torch.randn_like(p)
    if mode == "fusedoptim":
        opt = getattr(fusedoptim, name)(ps, **KW[name])
    else:
        opt = getattr(torch.optim, name)(ps, **KW[name], **({"fused": True} if mode == "fused" else {"foreach": True}))
    return opt


def _time(opt, inner):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(inner):
        opt.step()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / 1e3 / inner


def measure(name: str, wkey: str, quick: bool, repeats: int) -> dict:
    wl = fb.workload(wkey, quick=quick)
    numel = sum(torch.Size(s).numel() for s in wl.shapes)
    opts = {m: _contender(name, m, wl.shapes) for m in ("fusedoptim", "fused", "foreach")}
    inner = 5 if wkey != "W3" else 20
    for o in opts.values():  # warm-up (state, JIT, caches)
        _time(o, 2)
    t = {m: [] for m in opts}
    for _ in range(repeats):
        for m, o in opts.items():
            t[m].append(_time(o, inner))
    med = {m: statistics.median(v) for m, v in t.items()}
    gbs = numel * 4 * TRAFFIC[name] / med["fusedoptim"] / 1e9
    return {"optimizer": name, "workload": wkey, "numel": numel, "tensors": len(wl.shapes),
            "ms": med["fusedoptim"] * 1e3, "GB/s": gbs,
            "x_fused": med["fused"] / med["fusedoptim"], "x_foreach": med["foreach"] / med["fusedoptim"]}


def report(quick: bool = False, repeats: int = 7) -> list:
    bw = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}  copy bandwidth {bw:.0f} GB/s  "
          f"backend: {fusedoptim._cuda.status()}")
    print("| optimizer | workload | ms | GB/s | % copy bw | x torch fused | x torch foreach |")
    print("|:--|:--|--:|--:|--:|--:|--:|")
    rows = []
    for wkey in ("W1", "W2", "W3"):
        for name in ("SGD", "Adam", "AdamW"):
            r = measure(name, wkey, quick, repeats)
            r["pct_copy"] = 100 * r["GB/s"] / bw
            rows.append(r)
            print(f"| {name} | {wkey} | {r['ms']:.3f} | {r['GB/s']:.0f} | {r['pct_copy']:.0f}% | "
                  f"{r['x_fused']:.2f}x | {r['x_foreach']:.2f}x |")
    print("targets: W1/W2 >= 1.0x torch fused and >= 85% copy bandwidth; W3 >= 3x torch foreach")
    return rows


def test_bench_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    if not fusedoptim._cuda.load():
        pytest.skip(f"fusedoptim CUDA backend: {fusedoptim._cuda.status()}")
    import os
    rows = report(quick=os.environ.get("FUSEDOPTIM_BENCH_QUICK", "") not in ("", "0"), repeats=3)
    assert len(rows) == 9 and all(r["ms"] > 0 for r in rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda: skipped (no GPU)")
        sys.exit(0)
    if not fusedoptim._cuda.load():
        print(f"bench_cuda: skipped ({fusedoptim._cuda.status()})")
        sys.exit(0)
    report(a.quick, a.repeats)
