"""Benchmark: fusedoptim vs torch.optim (for-loop, foreach, fused) on CPU.

    python -m fusedoptim.bench                      # default comparison, ~3-6 min on 2 cores
    python -m fusedoptim.bench --quick              # small sizes, seconds (CI smoke run)
    python -m fusedoptim.bench --workloads W3 --optimizers adamw --threads 1 --repeats 5
    python -m fusedoptim.bench --markdown           # tables as markdown, for the README
    python -m fusedoptim.bench --json out.json      # machine-readable results

Contenders, per optimizer (AdamW, Adam, SGD(momentum=0.9, weight_decay=1e-4)):

    roofline    fusedoptim._C.roofline: reads and writes exactly the bytes the
                optimizer must move (minimal traffic model), on the same thread
                pool with the same work split; the speed limit of the machine
    fusedoptim  fusedoptim.<Optimizer>
    forloop     torch.optim.<Optimizer>(foreach=False), torch's CPU default
    foreach     torch.optim.<Optimizer>(foreach=True)
    fused       torch.optim.<Optimizer>(fused=True)

Workloads: W1 one tensor of 16,777,216 fp32 elements; W2 a transformer-like
parameter set (35,299,328 elements in 75 tensors); W3 2,000 tensors of 512
elements (per-tensor overhead).

The machine is assumed noisy: within a round every contender is timed once,
round-robin (roofline, fusedoptim, forloop, foreach, fused); ratios are taken
pair by pair within a round and the median over rounds is reported. Gradients
are set once and reused (step() does not free them). Nothing here asserts speed:
targets are reported, not enforced.

The pieces are importable: `workload()`, `make_base()`, `build_contender()`,
`measure()` (one measurement: optimizer x workload x threads),
`evaluate_targets()`, `format_table()` and `main(argv)`.
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

import fusedoptim
from fusedoptim import _C

# ------------------------------------------------------------------ definitions --

CONTENDERS = ("roofline", "fusedoptim", "forloop", "foreach", "fused")
TORCH_MODES = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

DEFAULT_REPEATS = 10
QUICK_REPEATS = 3
DEFAULT_WARMUP = 1
# A timing sample (one per contender per round) is the median of as many
# consecutive steps as fill this long (W3 steps last about a millisecond).
DEFAULT_MIN_SAMPLE_S = 0.010
QUICK_MIN_SAMPLE_S = 0.002

# Targets (reported, never asserted)
TARGET_ROOFLINE = 0.95        # W1, W2: fraction of the same-traffic roofline
TARGET_W3_VS_FUSED = 10.0     # W3: speedup over torch fused
TARGET_W3_US_PER_TENSOR = 0.5  # W3 at 1 thread: microseconds per tensor


@dataclass(frozen=True)
class OptimizerSpec:
    key: str
    label: str
    torch_cls: type
    fo_cls: type
    kwargs: dict
    bytes_per_element: int  # minimal traffic model
    roof_rw: int            # roofline arrays read and written in place
    roof_ro: int            # roofline arrays only read
    forloop_target: float   # target speedup over torch's for-loop

    @property
    def description(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.label}({args})"


OPTIMIZERS = {
    # Adam/AdamW fp32: read p, g, m, v; write p, m, v -> 7 x 4 B
    "adamw": OptimizerSpec("adamw", "AdamW", torch.optim.AdamW, fusedoptim.AdamW,
                           {"lr": 1e-3}, 28, 3, 1, 5.0),
    "adam": OptimizerSpec("adam", "Adam", torch.optim.Adam, fusedoptim.Adam,
                          {"lr": 1e-3}, 28, 3, 1, 5.0),
    # SGD with momentum: read p, g, b; write p, b -> 5 x 4 B
    "sgd": OptimizerSpec("sgd", "SGD", torch.optim.SGD, fusedoptim.SGD,
                         {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4}, 20, 2, 1, 2.5),
}


@dataclass(frozen=True)
class Workload:
    key: str
    description: str
    shapes: tuple

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)


W1_NUMEL = 16_777_216
W2_NUMEL = 35_299_328
W2_TENSORS = 75
W3_TENSORS, W3_NUMEL_EACH = 2000, 512


def _transformer_shapes(vocab: int, d: int, ff: int, layers: int) -> list:
    shapes = [(vocab, d)]  # embedding
    for _ in range(layers):
        shapes += [
            (3 * d, d), (3 * d,),  # qkv projection + bias
            (d, d), (d,),          # output projection + bias
            (ff, d), (ff,),        # ff1 + bias
            (d, ff), (d,),         # ff2 + bias
            (d,), (d,),            # LayerNorm 1 weight + bias
            (d,), (d,),            # LayerNorm 2 weight + bias
        ]
    shapes += [(d,), (d,)]  # final LayerNorm
    return shapes


def workload(key: str, quick: bool = False) -> Workload:
    """The parameter shapes of workload W1, W2 or W3 (`quick`: small sizes)."""
    key = key.upper()
    if key == "W1":
        n = 1 << 18 if quick else W1_NUMEL
        return Workload("W1", f"1 tensor of {n:,}", ((n,),))
    if key == "W2":
        if quick:
            shapes = _transformer_shapes(1000, 64, 256, 2)
        else:
            shapes = _transformer_shapes(32000, 512, 2048, 6)
        w = Workload("W2", "", tuple(shapes))
        if not quick:
            assert w.numel == W2_NUMEL, w.numel
            assert w.tensors == W2_TENSORS, w.tensors
        return Workload("W2", f"transformer, {w.tensors} tensors, {w.numel / 1e6:.1f} M", w.shapes)
    if key == "W3":
        n = 200 if quick else W3_TENSORS
        return Workload("W3", f"{n:,} tensors of {W3_NUMEL_EACH}", ((W3_NUMEL_EACH,),) * n)
    raise ValueError(f"unknown workload {key!r}; expected W1, W2 or W3")


# ------------------------------------------------------------------ contenders --

def make_base(wl: Workload, seed: int = 0) -> list:
    """Parameters with gradients (`p.grad = randn`), set once and reused."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in wl.shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen))
        p.grad = torch.randn(shape, generator=gen)
        params.append(p)
    return params


def _clone_params(base: list) -> list:
    out = []
    for b in base:
        p = torch.nn.Parameter(b.detach().clone())
        p.grad = b.grad.clone()
        out.append(p)
    return out


class Contender:
    """One thing to time: `step()` runs one optimizer step (or the roofline)."""

    def __init__(self, name: str, step: Callable[[], object], keep: object):
        self.name = name
        self.step = step
        self._keep = keep  # the tensors / optimizer the step works on


def build_contender(name: str, spec: OptimizerSpec, base: list) -> Contender:
    """A contender with its own copy of the parameters and optimizer state."""
    if name == "roofline":
        n = sum(p.numel() for p in base)
        gen = torch.Generator().manual_seed(1)
        rw = [torch.randn(n, generator=gen)] + [torch.zeros(n) for _ in range(spec.roof_rw - 1)]
        ro = [torch.randn(n, generator=gen) for _ in range(spec.roof_ro)]
        return Contender(name, functools.partial(_C.roofline, rw, ro), (rw, ro))
    params = _clone_params(base)
    if name == "fusedoptim":
        opt = spec.fo_cls(params, **spec.kwargs)
    elif name in TORCH_MODES:
        opt = spec.torch_cls(params, **spec.kwargs, **TORCH_MODES[name])
    else:
        raise ValueError(f"unknown contender {name!r}; expected one of {', '.join(CONTENDERS)}")
    return Contender(name, opt.step, (params, opt))


# ------------------------------------------------------------------ measuring --

def _timed(step: Callable, inner: int) -> float:
    """Seconds per step: the median of `inner` consecutive steps, each timed
    on its own (a median, not a mean: on a shared machine a step now and then
    loses a scheduler tick or more, which a mean would smear over the sample)."""
    perf = time.perf_counter
    ts = []
    for _ in range(inner):
        t0 = perf()
        step()
        ts.append(perf() - t0)
    return statistics.median(ts)


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _median(xs):
    return statistics.median(xs) if xs else None


def measure(optimizer: str, workload_key: str, threads: int, *, repeats: int = DEFAULT_REPEATS,
            warmup: int = DEFAULT_WARMUP, quick: bool = False, contenders: Sequence[str] = CONTENDERS,
            min_sample_s: float | None = None, base: list | None = None, seed: int = 0) -> dict:
    """One measurement: every contender on one optimizer x workload x thread
    count, `repeats` interleaved rounds. Returns a JSON-able dict."""
    spec = OPTIMIZERS[optimizer]
    wl = workload(workload_key, quick)
    if min_sample_s is None:
        min_sample_s = QUICK_MIN_SAMPLE_S if quick else DEFAULT_MIN_SAMPLE_S
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender(s) {unknown}; expected some of {CONTENDERS}")
    contenders = [c for c in CONTENDERS if c in contenders]  # canonical round order

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    gc_was_enabled = gc.isenabled()
    built = {}
    try:
        if base is None:
            base = make_base(wl, seed)
        built = {c: build_contender(c, spec, base) for c in contenders}
        # warm-up: lazy state allocation, first-touch page faults, plan building;
        # then a few timed steps (the fastest counts: a preempted one must not
        # shrink the sample) size each contender's sample
        inner = {}
        for c in contenders:
            for _ in range(warmup):
                built[c].step()
            ts = [_timed(built[c].step, 1)]
            while len(ts) < 3 and sum(ts) < 0.2:
                ts.append(_timed(built[c].step, 1))
            inner[c] = max(1, min(1000, math.ceil(min_sample_s / max(min(ts), 1e-9))))
        samples = {c: [] for c in contenders}
        if not quick:  # a full collection costs ~0.1 s with torch loaded
            gc.collect()
        gc.disable()
        for _ in range(repeats):
            for c in contenders:
                samples[c].append(_timed(built[c].step, inner[c]))
    finally:
        if gc_was_enabled:
            gc.enable()
        built.clear()  # optimizers may sit in reference cycles: collect big ones now
        if not quick:
            gc.collect()
        torch.set_num_threads(old_threads)

    nbytes = spec.bytes_per_element * wl.numel
    res = {
        "optimizer": spec.key,
        "optimizer_label": spec.label,
        "optimizer_args": spec.description,
        "workload": wl.key,
        "workload_description": wl.description,
        "quick": quick,
        "threads": threads,
        "numel": wl.numel,
        "tensors": wl.tensors,
        "bytes_per_element": spec.bytes_per_element,
        "bytes_per_step": nbytes,
        "repeats": repeats,
        "contenders": {},
        "speedup": {},
        "roofline_fraction": None,
    }
    roof = samples.get("roofline")
    fo = samples.get("fusedoptim")
    for c in contenders:
        s = samples[c]
        med = statistics.median(s)
        res["contenders"][c] = {
            "inner": inner[c],
            "samples_ms": [x * 1e3 for x in s],
            "median_ms": med * 1e3,
            "p25_ms": _quantile(s, 0.25) * 1e3,
            "p75_ms": _quantile(s, 0.75) * 1e3,
            "min_ms": min(s) * 1e3,
            "max_ms": max(s) * 1e3,
            "gbps": nbytes / med / 1e9,
            "us_per_tensor": med * 1e6 / wl.tensors,
            # paired within a round: roofline time / this contender's time
            "roofline_fraction": _median([r / x for r, x in zip(roof, s)]) if roof else None,
            # paired within a round: this contender's time / fusedoptim's time
            "fusedoptim_speedup": _median([x / f for x, f in zip(s, fo)]) if fo else None,
        }
    if fo:
        res["roofline_fraction"] = res["contenders"]["fusedoptim"]["roofline_fraction"]
        for c in TORCH_MODES:
            if c in samples:
                res["speedup"][c] = res["contenders"][c]["fusedoptim_speedup"]
    res["targets"] = evaluate_targets(res)
    return res


def evaluate_targets(res: dict) -> dict:
    """The issue's targets for one measurement: {name: {value, target, ok}}."""
    out = {}
    spec = OPTIMIZERS[res["optimizer"]]
    fo = res["contenders"].get("fusedoptim")
    if fo is None:
        return out
    if res["workload"] in ("W1", "W2") and res.get("roofline_fraction") is not None:
        v = res["roofline_fraction"]
        out["roofline_fraction"] = {"value": v, "target": f">= {TARGET_ROOFLINE:.0%}", "ok": v >= TARGET_ROOFLINE}
    if "forloop" in res["speedup"]:
        v = res["speedup"]["forloop"]
        out["speedup_forloop"] = {"value": v, "target": f">= {spec.forloop_target:g}x", "ok": v >= spec.forloop_target}
    if res["workload"] == "W3":
        if "fused" in res["speedup"]:
            v = res["speedup"]["fused"]
            out["speedup_fused"] = {"value": v, "target": f">= {TARGET_W3_VS_FUSED:g}x", "ok": v >= TARGET_W3_VS_FUSED}
        if res["threads"] == 1:
            v = fo["us_per_tensor"]
            out["us_per_tensor"] = {"value": v, "target": f"< {TARGET_W3_US_PER_TENSOR:g} us",
                                    "ok": v < TARGET_W3_US_PER_TENSOR}
    return out


def roofline_calibration(threads: int, *, numel: int = W1_NUMEL, rw: int = 3, ro: int = 1,
                         repeats: int = 5) -> dict:
    """Bandwidth at `threads` threads: the roofline kernel with `rw` read-write
    + `ro` read-only float32 arrays, and, as an outside reference, torch's own
    `a.add_(b)` (read a, b, write a: 12 B/element) on arrays of the same size."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(2)
        a_rw = [torch.randn(numel, generator=gen)] + [torch.zeros(numel) for _ in range(rw - 1)]
        a_ro = [torch.randn(numel, generator=gen) for _ in range(ro)]
        roof = functools.partial(_C.roofline, a_rw, a_ro)
        add = functools.partial(a_rw[1].add_, a_ro[0] if a_ro else a_rw[0])
        roof()
        add()
        t_roof, t_add = [], []
        for _ in range(repeats):  # interleaved, like everything else
            t_roof.append(_timed(roof, 1))
            t_add.append(_timed(add, 1))
    finally:
        torch.set_num_threads(old)
    nbytes = 4 * (2 * rw + ro) * numel
    return {"threads": threads, "numel": numel, "rw": rw, "ro": ro,
            "median_ms": statistics.median(t_roof) * 1e3,
            "gbps": nbytes / statistics.median(t_roof) / 1e9, "max_gbps": nbytes / min(t_roof) / 1e9,
            "torch_add_gbps": 12 * numel / statistics.median(t_add) / 1e9,
            "torch_add_max_gbps": 12 * numel / min(t_add) / 1e9}


# ------------------------------------------------------------------ reporting --

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """show_config()-style facts about this run."""
    try:
        cfg = fusedoptim._config.config()
    except Exception:  # pragma: no cover - show_config's internals changed
        cfg = {}
    return {
        "fusedoptim": fusedoptim.__version__,
        "isa": _C.get_isa(),
        "isa_selected_by": cfg.get("isa_selected_by", "?"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "thread_pool": cfg.get("thread_pool", "?"),
        "tensor_metadata": cfg.get("tensor_metadata", "?"),
    }


def format_header(env: dict, calibration: Sequence[dict] = (), *, threads: Sequence[int] = (),
                  repeats: int | None = None, contenders: Sequence[str] = CONTENDERS, quick: bool = False,
                  markdown: bool = False) -> str:
    """show_config()-style lines: versions, instruction set, threads, and the
    bandwidth measured at start-up (roofline kernel; torch add_ for reference)."""
    items = [
        ("fusedoptim", env["fusedoptim"]),
        ("isa", f"{env['isa']} (selected by {env['isa_selected_by']})"),
        ("torch", env["torch"]),
        ("python", env["python"]),
        ("cpu", f"{env['cpu']} ({env['machine']}, {env['cpu_count']} logical CPUs)"),
        ("thread_pool", env["thread_pool"]),
    ]
    if threads:
        items.append(("threads", f"{', '.join(map(str, threads))} (torch.set_num_threads; "
                                 f"torch default here: {env['torch_threads_default']})"))
    if repeats:
        items.append(("rounds", f"{repeats}, round-robin: {', '.join(contenders)}"))
    if quick:
        items.append(("sizes", "QUICK (small workloads: smoke run, not a measurement)"))
    items.append(("traffic model", "Adam/AdamW fp32 28 B/element (read p,g,m,v; write p,m,v), "
                                   "SGD momentum 20 B/element (read p,g,b; write p,b)"))
    for c in calibration:
        t = f"{c['threads']} thread{'s' if c['threads'] != 1 else ''}"
        items.append((f"roofline {t}", f"{c['gbps']:.1f} GB/s median, {c['max_gbps']:.1f} best "
                                       f"({c['rw']} rw + {c['ro']} ro arrays of {c['numel'] / 1e6:.1f} M)"))
        items.append((f"torch add_ {t}", f"{c['torch_add_gbps']:.1f} GB/s median, "
                                         f"{c['torch_add_max_gbps']:.1f} best (12 B/element, reference)"))
    if markdown:
        return "\n".join(f"- **{k}**: {v}" for k, v in items)
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in items)


def _fmt_ms(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else (f"{x:.1f}x" if x < 100 else f"{x:.0f}x")


def _mark(res: dict, target: str) -> str:
    t = res.get("targets", {}).get(target)
    if t is None:
        return ""
    return " ✓" if t["ok"] else " ✗"


def _render(headers: list, rows: list, markdown: bool, align: str) -> str:
    if markdown:
        seps = ["---:" if a == "r" else ":---" for a in align]
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join(seps) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def format_summary(results: Sequence[dict], markdown: bool = False) -> str:
    """One row per optimizer x workload x threads: fusedoptim against the
    roofline and each torch mode (✓/✗: the issue's target met or not)."""
    headers = ["optimizer", "workload", "thr", "fusedoptim ms (IQR)", "GB/s", "roofline GB/s",
               "% roofline", "x forloop", "x foreach", "x fused", "us/tensor"]
    align = "llrlrrrrrrr"
    rows = []
    for r in results:
        fo = r["contenders"].get("fusedoptim")
        roof = r["contenders"].get("roofline")
        frac = r.get("roofline_fraction")
        rows.append([
            r["optimizer_label"], r["workload"], str(r["threads"]),
            (f"{_fmt_ms(fo['median_ms'])} ({_fmt_ms(fo['p25_ms'])}-{_fmt_ms(fo['p75_ms'])})" if fo else "-"),
            f"{fo['gbps']:.1f}" if fo else "-",
            f"{roof['gbps']:.1f}" if roof else "-",
            (f"{frac:.1%}" + _mark(r, "roofline_fraction")) if frac is not None else "-",
            _fmt_x(r["speedup"].get("forloop")) + _mark(r, "speedup_forloop"),
            _fmt_x(r["speedup"].get("foreach")),
            _fmt_x(r["speedup"].get("fused")) + _mark(r, "speedup_fused"),
            (f"{fo['us_per_tensor']:.3f}" + _mark(r, "us_per_tensor")) if fo and r["workload"] == "W3" else "-",
        ])
    return _render(headers, rows, markdown, align)


def format_details(results: Sequence[dict], markdown: bool = False) -> str:
    """One row per contender: ms/step median, IQR and min-max over rounds,
    GB/s under the traffic model, fraction of the roofline and fusedoptim's
    speedup over it (both medians of ratios paired within a round)."""
    headers = ["optimizer", "workload", "thr", "contender", "ms/step", "IQR (p25-p75)", "min-max",
               "GB/s", "% roofline", "fusedoptim x", "us/tensor"]
    align = "llrlrrrrrrr"
    rows = []
    for r in results:
        for name, c in r["contenders"].items():
            frac = c["roofline_fraction"]
            rows.append([
                r["optimizer_label"], r["workload"], str(r["threads"]), name,
                _fmt_ms(c["median_ms"]),
                f"{_fmt_ms(c['p25_ms'])}-{_fmt_ms(c['p75_ms'])}",
                f"{_fmt_ms(c['min_ms'])}-{_fmt_ms(c['max_ms'])}",
                f"{c['gbps']:.1f}",
                f"{frac:.1%}" if frac is not None else "-",
                _fmt_x(c["fusedoptim_speedup"]) if name not in ("fusedoptim", "roofline") else "-",
                f"{c['us_per_tensor']:.3f}" if r["workload"] == "W3" else "-",
            ])
    return _render(headers, rows, markdown, align)


def format_table(results: Sequence[dict], markdown: bool = False) -> str:
    """The printed report: summary table, then per-contender details."""
    legend = ("x <mode>: fusedoptim speedup over torch.optim in that mode (median of per-round ratios); "
              "% roofline: roofline time / fusedoptim time (same-traffic kernel, same run); "
              "targets: W1/W2 >= 95% roofline, x forloop >= 5 (Adam/AdamW) / 2.5 (SGD), "
              "W3 x fused >= 10 and < 0.5 us/tensor at 1 thread (✓ met, ✗ missed)")
    notes = _notes(results)
    if markdown:
        return ("**Summary** (fusedoptim)\n\n" + format_summary(results, True) + "\n\n" + legend
                + "".join("\n\n" + n for n in notes)
                + "\n\n**Details** (every contender)\n\n" + format_details(results, True))
    return ("Summary (fusedoptim)\n" + format_summary(results) + "\n" + legend
            + "".join("\n" + n for n in notes)
            + "\n\nDetails (every contender)\n" + format_details(results))


def _notes(results: Sequence[dict]) -> list:
    """Things a reader must not miss: a roofline that is beaten (then it is
    not measuring the memory bound) and torch modes faster than fusedoptim."""
    notes = []
    beaten = [r for r in results if (r.get("roofline_fraction") or 0) > 1.05]
    if beaten:
        worst = max(beaten, key=lambda r: r["roofline_fraction"])
        notes.append(
            f"NOTE: fusedoptim ran faster than the same-traffic roofline kernel in {len(beaten)} of "
            f"{len(results)} rows (up to {worst['roofline_fraction']:.0%}: {worst['optimizer_label']} "
            f"{worst['workload']} {worst['threads']} thr): there the roofline is not at the memory "
            f"bound and '% roofline' overstates; compare the torch add_ reference in the header.")
    slower = [(r, m, x) for r in results for m, x in r["speedup"].items() if x is not None and x < 1.0]
    if slower:
        items = ", ".join(f"{r['optimizer_label']} {r['workload']} {r['threads']} thr vs {m} ({x:.2f}x)"
                          for r, m, x in slower)
        notes.append(f"NOTE: fusedoptim slower than torch (median paired ratio < 1) in: {items}.")
    return notes


# ------------------------------------------------------------------ CLI --

def _csv(kind: str, valid: Sequence[str], norm: Callable[[str], str]):
    def parse(s: str) -> list:
        items = [norm(x.strip()) for x in s.split(",") if x.strip()]
        bad = [x for x in items if x not in valid]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{kind}: expected a comma list of {', '.join(valid)}; got {s!r}")
        return list(dict.fromkeys(items))
    return parse


def _threads(s: str) -> list:
    try:
        items = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        items = []
    if not items or any(n < 1 for n in items):
        raise argparse.ArgumentTypeError(f"threads: expected a comma list of positive integers; got {s!r}")
    return list(dict.fromkeys(items))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m fusedoptim.bench",
        description="fusedoptim vs torch.optim (for-loop, foreach, fused) and a same-traffic roofline.")
    ap.add_argument("--workloads", type=_csv("workloads", ("W1", "W2", "W3"), str.upper),
                    default=["W1", "W2", "W3"], help="comma list of W1,W2,W3 (default: all)")
    ap.add_argument("--optimizers", type=_csv("optimizers", tuple(OPTIMIZERS), str.lower),
                    default=list(OPTIMIZERS), help="comma list of adamw,adam,sgd (default: all)")
    ap.add_argument("--threads", type=_threads, default=[1, 2], help="comma list of thread counts (default: 1,2)")
    ap.add_argument("--contenders", type=_csv("contenders", CONTENDERS, str.lower), default=list(CONTENDERS),
                    help=f"comma list of {','.join(CONTENDERS)} (default: all)")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"interleaved rounds per measurement (default: {DEFAULT_REPEATS}, --quick: {QUICK_REPEATS})")
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed steps per contender first")
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds: CI smoke runs")
    ap.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for the README)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    return args


def _print(text: str = "", file=None) -> None:
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
    except UnicodeEncodeError:
        print(text.replace("✓", "+").replace("✗", "-").encode("ascii", "replace").decode(), file=file, flush=True)


def run(args: argparse.Namespace, log=sys.stderr) -> dict:
    """Every requested measurement (prints the header first, progress on
    `log`); returns {environment, calibration, args, results}."""
    env = environment()
    calib_n = 1 << 18 if args.quick else W1_NUMEL
    calibration = [roofline_calibration(t, numel=calib_n, repeats=3 if args.quick else 5) for t in args.threads]
    _print(format_header(env, calibration, threads=args.threads, repeats=args.repeats,
                         contenders=args.contenders, quick=args.quick, markdown=args.markdown))
    _print()
    n_cases = len(args.workloads) * len(args.optimizers) * len(args.threads)
    results = []
    i = 0
    t_start = time.perf_counter()
    for w in args.workloads:
        base = make_base(workload(w, args.quick))  # copied by every contender, never stepped
        for o in args.optimizers:
            for t in args.threads:
                i += 1
                t0 = time.perf_counter()
                r = measure(o, w, t, repeats=args.repeats, warmup=args.warmup, quick=args.quick,
                            contenders=args.contenders, base=base)
                results.append(r)
                _print(f"[{i:2d}/{n_cases}] {OPTIMIZERS[o].label:5s} {w} {t} thr  "
                       f"{time.perf_counter() - t0:5.1f} s  {_progress_note(r)}", file=log)
        del base
        gc.collect()
    _print(f"total {time.perf_counter() - t_start:.0f} s", file=log)
    return {"environment": env, "calibration": calibration,
            "args": {k: getattr(args, k) for k in
                     ("workloads", "optimizers", "threads", "contenders", "repeats", "warmup", "quick")},
            "results": results}


def _progress_note(r: dict) -> str:
    fo = r["contenders"].get("fusedoptim")
    if not fo:
        return ""
    note = f"fusedoptim {_fmt_ms(fo['median_ms'])} ms"
    if r["roofline_fraction"] is not None:
        note += f", {r['roofline_fraction']:.0%} of roofline"
    for mode, x in r["speedup"].items():
        note += f", {x:.1f}x {mode}"
    return note


def main(argv=None) -> int:
    args = parse_args(argv)
    out = run(args)
    _print(format_table(out["results"], markdown=args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        _print(f"\nresults written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
