"""Benchmark: fusedoptim vs torch.optim (for-loop, foreach, fused) on CPU.

    python -m fusedoptim.bench                      # default comparison (core optimizers, W1-W4,
                                                    # options table, convergence demo)
    python -m fusedoptim.bench --family             # every optimizer (= --optimizers all): long
    python -m fusedoptim.bench --family --workloads all   # everything the issues target
    python -m fusedoptim.bench --quick              # small sizes, every optimizer once (CI smoke run)
    python -m fusedoptim.bench --convergence        # only the bf16 convergence demonstration
    python -m fusedoptim.bench --workloads W3 --optimizers adamw --threads 1 --repeats 5
    python -m fusedoptim.bench --markdown           # tables as markdown, for the README
    python -m fusedoptim.bench --json out.json      # machine-readable results

Contenders, per optimizer (see OPTIMIZERS for the hyper-parameters):

    roofline    fusedoptim._C.roofline: reads and writes exactly the bytes the
                optimizer must move (its traffic model, below), on the same
                thread pool with the same work split; the speed limit
    fusedoptim  fusedoptim.<Optimizer>
    forloop     torch.optim.<Optimizer>(foreach=False), torch's CPU default
                (Lion, LAMB: fusedoptim._reference.LionTorch / LAMBTorch, the
                plain-torch for-loop: torch has neither)
    foreach     torch.optim.<Optimizer>(foreach=True)   (where torch has it)
    fused       torch.optim.<Optimizer>(fused=True)     (SGD, Adam, AdamW, Adagrad)

Workloads: W1 one tensor of 16,777,216 fp32 elements; W2 a transformer-like
parameter set (35,299,328 elements in 75 tensors); W3 2,000 tensors of 512
elements (per-tensor overhead); W4 = W1 in bf16; W2bf16 = W2 in bf16.

Traffic model (bytes per element per step): derived from the optimizer's
own state, not a table: a probe step on a small param of the workload's dtype
lists the state arrays fusedoptim keeps (their dtypes follow state_dtype /
master_weights); then the param (or its fp32 master copy) and every state
array are read and written once, the grad read once, and with master weights
the low-precision param written once. LAMB makes two passes (moments and
norms, then the trust-ratio update), which re-read the param and both moments.

The machine is assumed noisy: within a round every contender is timed once,
round-robin; ratios are taken pair by pair within a round and the median over
rounds is reported. Gradients are set once and reused (step() does not free
them). Nothing here asserts speed: targets are reported, not enforced.

The pieces are importable: `workload()`, `make_base()`, `traffic_model()`,
`build_contender()`, `measure()` (one measurement: optimizer x workload x
threads), `measure_options()`, `convergence()`, `evaluate_targets()`,
`format_table()` and `main(argv)`.
"""
from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

import fusedoptim
from fusedoptim import _C
from fusedoptim._reference import LAMBTorch, LionTorch

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
TARGET_ROOFLINE = 0.95        # W1, W2 fp32 (core): fraction of the same-traffic roofline
TARGET_W3_VS_FUSED = 10.0     # W3: speedup over torch fused
TARGET_W3_US_PER_TENSOR = 0.5  # W3 at 1 thread: microseconds per tensor
TARGET_UNFUSED_VS_BEST = 5.0  # optimizers torch does not fuse on CPU: speedup over torch's best mode
TARGET_BF16_VS_FUSED = 2.0    # bf16 workloads: speedup over torch's fused bf16 step
TARGET_BF16_ROOFLINE = 0.85   # bf16 workloads: fraction of the same-traffic roofline


@dataclass(frozen=True)
class OptimizerSpec:
    key: str
    label: str
    torch_cls: type         # what the torch modes run (LionTorch / LAMBTorch for Lion, LAMB)
    fo_cls: type
    kwargs: dict
    modes: tuple            # torch modes that exist for it
    group: str              # "core" (the default run) or "family"
    forloop_target: float | None = None  # core target: speedup over torch's for-loop
    passes: int = 1         # passes over memory per step (LAMB: 2)

    @property
    def description(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.label}({args})"

    @property
    def torch_fuses(self) -> bool:
        return "fused" in self.modes


_ALL_MODES = ("forloop", "foreach", "fused")
_UNFUSED = ("forloop", "foreach")
_REFERENCE = ("forloop",)  # Lion, LAMB: the plain-torch reference, a for-loop only

OPTIMIZERS = {
    "adamw": OptimizerSpec("adamw", "AdamW", torch.optim.AdamW, fusedoptim.AdamW, {"lr": 1e-3},
                           _ALL_MODES, "core", 5.0),
    "adam": OptimizerSpec("adam", "Adam", torch.optim.Adam, fusedoptim.Adam, {"lr": 1e-3},
                          _ALL_MODES, "core", 5.0),
    "sgd": OptimizerSpec("sgd", "SGD", torch.optim.SGD, fusedoptim.SGD,
                         {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4}, _ALL_MODES, "core", 2.5),
    # Adagrad moves what SGD-momentum moves (p, g, one state array): its
    # for-loop target is SGD's
    "adagrad": OptimizerSpec("adagrad", "Adagrad", torch.optim.Adagrad, fusedoptim.Adagrad, {"lr": 1e-2},
                             _ALL_MODES, "family", 2.5),
    "rmsprop": OptimizerSpec("rmsprop", "RMSprop", torch.optim.RMSprop, fusedoptim.RMSprop,
                             {"lr": 1e-2, "momentum": 0.9}, _UNFUSED, "family"),
    "adamax": OptimizerSpec("adamax", "Adamax", torch.optim.Adamax, fusedoptim.Adamax, {"lr": 2e-3},
                            _UNFUSED, "family"),
    "nadam": OptimizerSpec("nadam", "NAdam", torch.optim.NAdam, fusedoptim.NAdam, {"lr": 2e-3},
                           _UNFUSED, "family"),
    "radam": OptimizerSpec("radam", "RAdam", torch.optim.RAdam, fusedoptim.RAdam, {"lr": 1e-3},
                           _UNFUSED, "family"),
    "adadelta": OptimizerSpec("adadelta", "Adadelta", torch.optim.Adadelta, fusedoptim.Adadelta,
                              {"lr": 1.0}, _UNFUSED, "family"),
    "lion": OptimizerSpec("lion", "Lion", LionTorch, fusedoptim.Lion, {"lr": 1e-4, "weight_decay": 0.1},
                          _REFERENCE, "family"),
    "lamb": OptimizerSpec("lamb", "LAMB", LAMBTorch, fusedoptim.LAMB, {"lr": 1e-3, "weight_decay": 0.01},
                          _REFERENCE, "family", passes=2),
}
OPTIMIZER_GROUPS = {
    "core": [k for k, s in OPTIMIZERS.items() if s.group == "core"],
    "family": [k for k, s in OPTIMIZERS.items() if s.group == "family"],
    "all": list(OPTIMIZERS),
}


@dataclass(frozen=True)
class Workload:
    key: str
    description: str
    shapes: tuple
    dtype: torch.dtype = torch.float32

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).replace("torch.", "")


W1_NUMEL = 16_777_216
W2_NUMEL = 35_299_328
W2_TENSORS = 75
W3_TENSORS, W3_NUMEL_EACH = 2000, 512
WORKLOADS = ("W1", "W2", "W3", "W4", "W2bf16")
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W4")
LARGE_WORKLOADS = ("W1", "W2", "W4", "W2bf16")  # bandwidth-bound: roofline targets apply


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


def _canonical_workload(key: str) -> str:
    for k in WORKLOADS:
        if k.upper() == key.strip().upper():
            return k
    raise ValueError(f"unknown workload {key!r}; expected one of {', '.join(WORKLOADS)}")


def workload(key: str, quick: bool = False) -> Workload:
    """The parameter shapes and dtype of workload W1, W2, W3, W4 (W1 in
    bf16) or W2bf16 (W2 in bf16); `quick`: small sizes."""
    key = _canonical_workload(key)
    if key in ("W4", "W2bf16"):
        base = workload("W1" if key == "W4" else "W2", quick)
        return Workload(key, f"{base.key} in bf16: {base.description}", base.shapes, torch.bfloat16)
    if key == "W1":
        n = 1 << 18 if quick else W1_NUMEL
        return Workload("W1", f"1 tensor of {n:,}", ((n,),))
    if key == "W2":
        if quick:
            shapes = _transformer_shapes(1000, 64, 256, 2)
        else:
            shapes = _transformer_shapes(32000, 512, 2048, 6)
        w = Workload("W2", "", tuple(shapes))
        if not quick and (w.numel, w.tensors) != (W2_NUMEL, W2_TENSORS):
            raise AssertionError(f"W2 has {w.numel} elements in {w.tensors} tensors")
        return Workload("W2", f"transformer, {w.tensors} tensors, {w.numel / 1e6:.1f} M", w.shapes)
    n = 200 if quick else W3_TENSORS
    return Workload("W3", f"{n:,} tensors of {W3_NUMEL_EACH}", ((W3_NUMEL_EACH,),) * n)


# ------------------------------------------------------------------ traffic --

@dataclass(frozen=True)
class Stream:
    """One array a pass moves: `nbytes` per element, read ('r'), written
    ('w') or both ('rw')."""
    name: str
    nbytes: int
    mode: str

    @property
    def bytes_moved(self) -> int:
        return self.nbytes * (2 if self.mode == "rw" else 1)


@dataclass(frozen=True)
class Traffic:
    """The minimal traffic of one step: passes over memory, each a tuple of streams."""
    passes: tuple

    @property
    def bytes_per_element(self) -> int:
        return sum(s.bytes_moved for p in self.passes for s in p)

    def describe(self) -> str:
        def one(p):
            return ", ".join(f"{s.name} {s.nbytes}B {s.mode}" for s in p)
        if len(self.passes) == 1:
            return one(self.passes[0])
        return " | ".join(f"pass {i + 1}: {one(p)}" for i, p in enumerate(self.passes))


_DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2, torch.float64: 8}


def traffic_model(spec: OptimizerSpec, dtype: torch.dtype = torch.float32, options: dict | None = None) -> Traffic:
    """Bytes per element one step must move, from the state fusedoptim keeps:
    a probe step on a 64-element param of `dtype` (with `options`, e.g.
    state_dtype / master_weights / stochastic_rounding) lists the per-element
    state arrays and their dtypes. One pass: param (or fp32 master copy) rw,
    grad r, each state array rw, and with master weights the param w.
    LAMB (spec.passes == 2): pass 1 reads param and grad and updates the
    moments (plus the norms), pass 2 re-reads param and moments and writes
    the param."""
    options = dict(options or {})
    if options.get("max_grad_norm") is not None:
        raise ValueError("traffic_model: max_grad_norm (an extra read of the grads) is not modelled")
    p = torch.nn.Parameter(torch.zeros(64, dtype=dtype))
    p.grad = torch.full((64,), 0.5, dtype=dtype)
    opt = spec.fo_cls([p], **spec.kwargs, **options)
    opt.step()
    opt.step()  # steady state (SGD's momentum buffer exists after the first step)
    state = opt.state[p]
    master = state.get("master_param")
    arrays = [(k, t) for k, t in state.items()
              if torch.is_tensor(t) and k != "master_param" and tuple(t.shape) == tuple(p.shape)]
    es = _DTYPE_BYTES[dtype]
    src = "master_param" if torch.is_tensor(master) else "param"
    src_b = _DTYPE_BYTES[master.dtype] if torch.is_tensor(master) else es
    img = (Stream("param", es, "w"),) if torch.is_tensor(master) else ()
    states = [(k, _DTYPE_BYTES[t.dtype]) for k, t in arrays]
    if spec.passes == 1:
        main = (Stream(src, src_b, "rw"),) + img + (Stream("grad", es, "r"),) + \
            tuple(Stream(k, b, "rw") for k, b in states)
        return Traffic((main,))
    if spec.passes == 2:
        a = (Stream(src, src_b, "r"), Stream("grad", es, "r")) + tuple(Stream(k, b, "rw") for k, b in states)
        b_ = (Stream(src, src_b, "rw"),) + img + tuple(Stream(k, b, "r") for k, b in states)
        return Traffic((a, b_))
    raise ValueError(f"{spec.label}: passes={spec.passes} is not modelled")


def roofline_step(traffic: Traffic, numel: int, seed: int = 1) -> tuple:
    """(step, arrays): the roofline kernel moving `traffic` for `numel`
    elements. _C.roofline takes float32 arrays of one length, so the traffic
    is cut in units of the smallest stream (2 B for bf16/fp16, else 4 B):
    every array has ceil(numel * unit / 4) float32 elements and a stream of
    k bytes per element is k / unit such arrays. 'rw' streams are read-write
    arrays; 'r' and 'w' (write-only: the bf16 image of a master copy) are
    read-only arrays, so the bytes match the model (direction aside). A
    stream used in several passes (LAMB) is the same arrays in each pass."""
    unit = functools.reduce(math.gcd, (s.nbytes for p in traffic.passes for s in p))
    if 4 % unit:
        raise ValueError(f"roofline: stream sizes {traffic.describe()} are not multiples of a 4/unit split")
    length = math.ceil(numel * unit / 4)
    gen = torch.Generator().manual_seed(seed)
    arrays: dict = {}
    calls = []
    for p in traffic.passes:
        rw, ro = [], []
        for s in p:
            if s.name not in arrays:
                arrays[s.name] = [torch.randn(length, generator=gen) for _ in range(s.nbytes // unit)]
            (rw if s.mode == "rw" else ro).extend(arrays[s.name])
        if not 1 <= len(rw) <= 8 or len(ro) > 8:
            raise ValueError(f"roofline: a pass needs 1..8 read-write and <= 8 read-only arrays: "
                             f"{traffic.describe()}")
        calls.append((rw, ro))
    if len(calls) == 1:
        return functools.partial(_C.roofline, *calls[0]), arrays

    def step():
        for rw, ro in calls:
            _C.roofline(rw, ro)
    return step, arrays


# ------------------------------------------------------------------ contenders --

def make_base(wl: Workload, seed: int = 0) -> list:
    """Parameters with gradients (`p.grad = randn`), set once and reused
    (bf16 workloads: the same fp32 draws, rounded)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in wl.shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to(wl.dtype))
        p.grad = torch.randn(shape, generator=gen).to(wl.dtype)
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


def build_contender(name: str, spec: OptimizerSpec, base: list, *, options: dict | None = None,
                    traffic: Traffic | None = None) -> Contender:
    """A contender with its own copy of the parameters and optimizer state
    (`options`: fusedoptim's extra keyword options, for fusedoptim and the
    roofline's traffic)."""
    options = options or {}
    if name == "roofline":
        if traffic is None:
            traffic = traffic_model(spec, base[0].dtype, options)
        step, arrays = roofline_step(traffic, sum(p.numel() for p in base))
        return Contender(name, step, arrays)
    params = _clone_params(base)
    if name == "fusedoptim":
        opt = spec.fo_cls(params, **spec.kwargs, **options)
    elif name in TORCH_MODES:
        if name not in spec.modes:
            raise ValueError(f"torch has no {name} mode for {spec.label}")
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


def _paired(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num[i] / den[i]."""
    return statistics.median([a / b for a, b in zip(num, den)])


def _run_rounds(build: dict, threads: int, *, repeats: int, warmup: int, quick: bool,
                min_sample_s: float) -> tuple:
    """Builds every contender (name -> zero-argument builder, in round
    order), warms them up, sizes their samples and times `repeats`
    round-robin rounds at `threads` threads. -> (samples {name: [s]}, inner)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    gc_was_enabled = gc.isenabled()
    built = {}
    try:
        built = {c: b() for c, b in build.items()}
        # warm-up: lazy state allocation, first-touch page faults, plan building;
        # then a few timed steps (the fastest counts: a preempted one must not
        # shrink the sample) size each contender's sample
        inner = {}
        for c, ct in built.items():
            for _ in range(warmup):
                ct.step()
            ts = [_timed(ct.step, 1)]
            while len(ts) < 3 and sum(ts) < 0.2:
                ts.append(_timed(ct.step, 1))
            inner[c] = max(1, min(1000, math.ceil(min_sample_s / max(min(ts), 1e-9))))
        samples = {c: [] for c in built}
        if not quick:  # a full collection costs ~0.1 s with torch loaded
            gc.collect()
        gc.disable()
        for _ in range(repeats):
            for c, ct in built.items():
                samples[c].append(_timed(ct.step, inner[c]))
    finally:
        if gc_was_enabled:
            gc.enable()
        built.clear()  # optimizers may sit in reference cycles: collect big ones now
        if not quick:
            gc.collect()
        torch.set_num_threads(old_threads)
    return samples, inner


def _stats(s: Sequence[float], inner: int, nbytes: int, tensors: int) -> dict:
    med = statistics.median(s)
    return {
        "inner": inner,
        "samples_ms": [x * 1e3 for x in s],
        "median_ms": med * 1e3,
        "p25_ms": _quantile(s, 0.25) * 1e3,
        "p75_ms": _quantile(s, 0.75) * 1e3,
        "min_ms": min(s) * 1e3,
        "max_ms": max(s) * 1e3,
        "gbps": nbytes / med / 1e9,
        "us_per_tensor": med * 1e6 / tensors,
    }


def measure(optimizer: str, workload_key: str, threads: int, *, repeats: int = DEFAULT_REPEATS,
            warmup: int = DEFAULT_WARMUP, quick: bool = False, contenders: Sequence[str] = CONTENDERS,
            min_sample_s: float | None = None, base: list | None = None, seed: int = 0) -> dict:
    """One measurement: every contender on one optimizer x workload x thread
    count, `repeats` interleaved rounds. Torch modes that do not exist for
    the optimizer (fused for RMSprop, foreach/fused for Lion/LAMB) are
    skipped. Returns a JSON-able dict."""
    spec = OPTIMIZERS[optimizer]
    wl = workload(workload_key, quick)
    if min_sample_s is None:
        min_sample_s = QUICK_MIN_SAMPLE_S if quick else DEFAULT_MIN_SAMPLE_S
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender(s) {unknown}; expected some of {CONTENDERS}")
    # canonical round order, only what exists for this optimizer
    contenders = [c for c in CONTENDERS if c in contenders and (c not in TORCH_MODES or c in spec.modes)]
    traffic = traffic_model(spec, wl.dtype)
    if base is None:
        base = make_base(wl, seed)
    build = {c: functools.partial(build_contender, c, spec, base, traffic=traffic) for c in contenders}
    samples, inner = _run_rounds(build, threads, repeats=repeats, warmup=warmup, quick=quick,
                                 min_sample_s=min_sample_s)

    nbytes = traffic.bytes_per_element * wl.numel
    res = {
        "optimizer": spec.key,
        "optimizer_label": spec.label,
        "optimizer_args": spec.description,
        "torch_class": f"{spec.torch_cls.__module__}.{spec.torch_cls.__name__}",
        "workload": wl.key,
        "workload_description": wl.description,
        "dtype": wl.dtype_name,
        "quick": quick,
        "threads": threads,
        "numel": wl.numel,
        "tensors": wl.tensors,
        "traffic": traffic.describe(),
        "bytes_per_element": traffic.bytes_per_element,
        "bytes_per_step": nbytes,
        "repeats": repeats,
        "contenders": {},
        "speedup": {},
        "best_torch_mode": None,
        "roofline_fraction": None,
    }
    roof = samples.get("roofline")
    fo = samples.get("fusedoptim")
    for c in contenders:
        s = samples[c]
        st = _stats(s, inner[c], nbytes, wl.tensors)
        # paired within a round: roofline time / this contender's time
        st["roofline_fraction"] = _paired(roof, s) if roof else None
        # paired within a round: this contender's time / fusedoptim's time
        st["fusedoptim_speedup"] = _paired(s, fo) if fo else None
        res["contenders"][c] = st
    modes = [c for c in TORCH_MODES if c in samples]
    if modes:
        res["best_torch_mode"] = min(modes, key=lambda m: res["contenders"][m]["median_ms"])
    if fo:
        res["roofline_fraction"] = res["contenders"]["fusedoptim"]["roofline_fraction"]
        for c in modes:
            res["speedup"][c] = res["contenders"][c]["fusedoptim_speedup"]
        if modes:
            # per round, torch's fastest mode in that round against fusedoptim
            best = [min(samples[m][i] for m in modes) for i in range(len(fo))]
            res["speedup"]["best"] = _paired(best, fo)
    res["targets"] = evaluate_targets(res)
    return res


def _target(value, ok_if_ge: float | None = None, lt: float | None = None, fmt: str = "x") -> dict:
    if ok_if_ge is not None:
        t = f">= {ok_if_ge:.0%}" if fmt == "%" else f">= {ok_if_ge:g}x"
        return {"value": value, "target": t, "ok": value >= ok_if_ge}
    return {"value": value, "target": f"< {lt:g} us", "ok": value < lt}


def evaluate_targets(res: dict) -> dict:
    """The issues' targets for one measurement: {name: {value, target, ok}}.

    fp32 (W1-W3), optimizers torch fuses (SGD, Adam, AdamW, Adagrad): the
    core targets (W1/W2 >= 95% roofline; x forloop >= the spec's target;
    W3 x fused >= 10 and < 0.5 us/tensor at 1 thread).
    Optimizers torch does not fuse (RMSprop, Adamax, NAdam, RAdam, Adadelta,
    Lion, LAMB), every workload: >= 5x torch's best mode (paired per round).
    bf16 (W4, W2bf16): >= 85% roofline; >= 2x torch fused where it exists."""
    out = {}
    spec = OPTIMIZERS[res["optimizer"]]
    fo = res["contenders"].get("fusedoptim")
    if fo is None:
        return out
    sp = res["speedup"]
    frac = res.get("roofline_fraction")
    bf16 = res["dtype"] != "float32"
    if bf16:
        if frac is not None:
            out["roofline_fraction"] = _target(frac, TARGET_BF16_ROOFLINE, fmt="%")
        if "fused" in sp:
            out["speedup_fused"] = _target(sp["fused"], TARGET_BF16_VS_FUSED)
    elif spec.torch_fuses:
        if res["workload"] in LARGE_WORKLOADS and frac is not None:
            out["roofline_fraction"] = _target(frac, TARGET_ROOFLINE, fmt="%")
        if "forloop" in sp and spec.forloop_target is not None:
            out["speedup_forloop"] = _target(sp["forloop"], spec.forloop_target)
        if res["workload"] == "W3":
            if "fused" in sp:
                out["speedup_fused"] = _target(sp["fused"], TARGET_W3_VS_FUSED)
            if res["threads"] == 1:
                out["us_per_tensor"] = _target(fo["us_per_tensor"], lt=TARGET_W3_US_PER_TENSOR)
    if not spec.torch_fuses and "best" in sp:
        out["speedup_best"] = _target(sp["best"], TARGET_UNFUSED_VS_BEST)
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


# ------------------------------------------------------------------ cost of the options --

OPTION_VARIANTS = {
    "default (bf16 state)": {},
    "state_dtype=float32": {"state_dtype": torch.float32},
    "master_weights=True": {"master_weights": True},
    "stochastic_rounding=True": {"stochastic_rounding": True},
}


def measure_options(threads: int, *, optimizer: str = "adamw", workload_key: str = "W4",
                    variants: dict | None = None, repeats: int = DEFAULT_REPEATS, warmup: int = DEFAULT_WARMUP,
                    quick: bool = False, min_sample_s: float | None = None, base: list | None = None,
                    seed: int = 0) -> dict:
    """What the low-precision options cost: fusedoptim `optimizer` on a bf16
    workload with each variant's options, each next to a roofline moving that
    variant's own traffic, and torch's fused step (default options) for
    reference; all round-robin in one set of rounds."""
    spec = OPTIMIZERS[optimizer]
    wl = workload(workload_key, quick)
    variants = OPTION_VARIANTS if variants is None else variants
    if min_sample_s is None:
        min_sample_s = QUICK_MIN_SAMPLE_S if quick else DEFAULT_MIN_SAMPLE_S
    if base is None:
        base = make_base(wl, seed)
    traffic = {v: traffic_model(spec, wl.dtype, o) for v, o in variants.items()}
    build = {}
    for v, o in variants.items():
        build[("roofline", v)] = functools.partial(build_contender, "roofline", spec, base, traffic=traffic[v])
        build[("fusedoptim", v)] = functools.partial(build_contender, "fusedoptim", spec, base, options=o)
    ref_mode = "fused" if "fused" in spec.modes else spec.modes[0]
    build[(ref_mode, None)] = functools.partial(build_contender, ref_mode, spec, base)
    samples, inner = _run_rounds(build, threads, repeats=repeats, warmup=warmup, quick=quick,
                                 min_sample_s=min_sample_s)
    ref = samples[(ref_mode, None)]
    first = next(iter(variants))
    rows = []
    for v, o in variants.items():
        s, roof = samples[("fusedoptim", v)], samples[("roofline", v)]
        nbytes = traffic[v].bytes_per_element * wl.numel
        row = {"variant": v, "options": {k: str(x) for k, x in o.items()},
               "traffic": traffic[v].describe(), "bytes_per_element": traffic[v].bytes_per_element,
               "roofline_gbps": nbytes / statistics.median(roof) / 1e9,
               "roofline_fraction": _paired(roof, s),
               "time_vs_first": _paired(s, samples[("fusedoptim", first)]),
               f"speedup_{ref_mode}": _paired(ref, s)}
        row.update(_stats(s, inner[("fusedoptim", v)], nbytes, wl.tensors))
        rows.append(row)
    return {"optimizer": spec.key, "optimizer_label": spec.label, "optimizer_args": spec.description,
            "workload": wl.key, "workload_description": wl.description, "threads": threads,
            "quick": quick, "repeats": repeats, "reference_mode": ref_mode,
            "reference": _stats(ref, inner[(ref_mode, None)], 1, wl.tensors), "variants": rows}


# ------------------------------------------------------------------ convergence --

CONV_MODES = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "bf16 state fp32": (torch.bfloat16, {"state_dtype": torch.float32}),
    "bf16 master": (torch.bfloat16, {"master_weights": True}),
    "bf16 SR": (torch.bfloat16, {"stochastic_rounding": True}),
}
CONV_STEPS, CONV_EVERY, CONV_LR, CONV_WIDTH = 400, 25, 1e-4, 64
QUICK_CONV_STEPS, QUICK_CONV_EVERY = 40, 10


def _conv_task(seed: int, n: int = 512, d_in: int = 32, d_hidden: int = 64) -> tuple:
    """A fixed synthetic regression task: inputs x ~ N(0, 1), targets from a
    random teacher MLP (tanh), all drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=gen)
    w1 = torch.randn(d_in, d_hidden, generator=gen) / math.sqrt(d_in)
    w2 = torch.randn(d_hidden, 1, generator=gen) / math.sqrt(d_hidden)
    y = torch.tanh(x @ w1) @ w2
    return x, y


def _conv_model(seed: int, d_in: int = 32, width: int = CONV_WIDTH) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d_in, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, width), torch.nn.Tanh(), torch.nn.Linear(width, 1))


def convergence(steps: int = CONV_STEPS, every: int = CONV_EVERY, lr: float = CONV_LR, *, seed: int = 0,
                threads: int = 1, modes: dict | None = None, optimizer: str = "adamw") -> dict:
    """Trains the same MLP (same init, same data: a fixed teacher-student
    regression drawn from `seed`, full batch) with fusedoptim `optimizer`
    (weight_decay=0) in fp32 and in bf16 with each option, and records the
    training MSE (fp32 loss of the model's own-dtype output) every `every`
    steps, plus the fraction of parameter elements that did not change over
    the last `every` steps (a stalled bf16 param cannot take updates smaller
    than half its spacing). Deterministic: seeded, run at `threads` threads
    (torch's matmul results can depend on the thread count)."""
    modes = CONV_MODES if modes is None else modes
    if steps < 1 or every < 1:
        raise ValueError("steps and every must be >= 1")
    spec = OPTIMIZERS[optimizer]
    x, y = _conv_task(seed)
    init = _conv_model(seed + 1)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    t_all = time.perf_counter()
    out = {"optimizer": spec.label, "lr": lr, "steps": steps, "every": every, "seed": seed, "threads": threads,
           "task": f"MLP {x.shape[1]}-{CONV_WIDTH}-{CONV_WIDTH}-1 (tanh) regressing a random teacher MLP, {x.shape[0]} samples, "
                   f"full batch, MSE", "modes": {}}
    try:
        for name, (dtype, options) in modes.items():
            t0 = time.perf_counter()
            model = copy.deepcopy(init).to(dtype)
            opt = spec.fo_cls(model.parameters(), lr=lr, weight_decay=0.0, **options)
            torch.manual_seed(seed + 2)  # stochastic rounding draws from torch's generator
            xd = x.to(dtype)
            record, losses, snap, unchanged = [], [], None, None
            for step in range(steps + 1):
                if step == steps - every:
                    snap = [p.detach().clone() for p in model.parameters()]
                loss = torch.nn.functional.mse_loss(model(xd).float(), y)
                if step % every == 0 or step == steps:
                    record.append(step)
                    losses.append(loss.item())
                if step == steps:
                    break
                opt.zero_grad()
                loss.backward()
                opt.step()
            if snap is not None:
                same = sum(int((a == p.detach()).sum()) for a, p in zip(snap, model.parameters()))
                unchanged = same / sum(p.numel() for p in model.parameters())
            out["modes"][name] = {"dtype": str(dtype).replace("torch.", ""),
                                  "options": {k: str(v) for k, v in options.items()},
                                  "steps": record, "loss": losses, "unchanged_last": unchanged,
                                  "seconds": time.perf_counter() - t0}
    finally:
        torch.set_num_threads(old)
    out["seconds"] = time.perf_counter() - t_all
    return out


def format_convergence(conv: dict, markdown: bool = False) -> str:
    names = list(conv["modes"])
    headers = ["step"] + names
    rows = []
    steps = conv["modes"][names[0]]["steps"]
    for i, s in enumerate(steps):
        rows.append([str(s)] + [f"{conv['modes'][n]['loss'][i]:.4g}" for n in names])
    fp32 = conv["modes"].get("fp32")
    if fp32:
        rows.append(["final / fp32"] + [f"{conv['modes'][n]['loss'][-1] / fp32['loss'][-1]:.2f}x"
                                        if fp32["loss"][-1] > 0 else "-" for n in names])
    rows.append([f"unchanged, last {conv['every']}"] +
                [f"{conv['modes'][n]['unchanged_last']:.1%}" if conv["modes"][n]["unchanged_last"] is not None
                 else "-" for n in names])
    title = (f"Convergence: {conv['optimizer']}(lr={conv['lr']:g}, weight_decay=0), {conv['task']}; "
             f"training loss every {conv['every']} steps, seed {conv['seed']}, {conv['threads']} thread(s), "
             f"{conv['seconds']:.1f} s. 'bf16': bf16 params and state (torch's default); 'state fp32': "
             f"state_dtype=float32; 'master': master_weights=True; 'SR': stochastic_rounding=True; "
             f"'unchanged': parameter elements that did not move over the last {conv['every']} steps.")
    table = _render(headers, rows, markdown, "l" + "r" * len(names))
    return (f"**{title}**\n\n{table}" if markdown else f"{title}\n{table}")


def plot_convergence(conv: dict, path: str) -> str | None:
    """Saves the loss curves as a PNG; returns None, or why it could not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib not available ({e}): no plot written"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ("-", "--", ":", "-.")
    for i, (name, m) in enumerate(conv["modes"].items()):  # curves overlap: vary the line style
        ax.plot(m["steps"], m["loss"], label=name, marker=".", linestyle=styles[i % len(styles)])
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE")
    ax.set_title(f"{conv['optimizer']} lr={conv['lr']:g}: fp32 vs bf16 modes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


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
        items.append(("rounds", f"{repeats}, round-robin: {', '.join(contenders)} "
                                f"(torch modes that exist for the optimizer)"))
    if quick:
        items.append(("sizes", "QUICK (small workloads: smoke run, not a measurement)"))
    items.append(("traffic model", "bytes per element per step (B/el column) from each optimizer's state "
                                   "arrays and dtypes: param (or fp32 master) read+write, grad read, each "
                                   "state array read+write, bf16 image of a master copy written; LAMB: "
                                   "2 passes (re-reads param and moments); e.g. AdamW fp32 28 B, bf16 14 B"))
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
    headers = ["optimizer", "workload", "thr", "B/el", "fusedoptim ms (IQR)", "GB/s", "roofline GB/s",
               "% roofline", "x forloop", "x foreach", "x fused", "x best", "us/tensor"]
    align = "llrrlrrrrrrrr"
    rows = []
    for r in results:
        fo = r["contenders"].get("fusedoptim")
        roof = r["contenders"].get("roofline")
        frac = r.get("roofline_fraction")
        ref = "" if r["optimizer"] not in ("lion", "lamb") else " (ref)"
        rows.append([
            r["optimizer_label"], r["workload"], str(r["threads"]), str(r["bytes_per_element"]),
            (f"{_fmt_ms(fo['median_ms'])} ({_fmt_ms(fo['p25_ms'])}-{_fmt_ms(fo['p75_ms'])})" if fo else "-"),
            f"{fo['gbps']:.1f}" if fo else "-",
            f"{roof['gbps']:.1f}" if roof else "-",
            (f"{frac:.1%}" + _mark(r, "roofline_fraction")) if frac is not None else "-",
            (_fmt_x(r["speedup"].get("forloop")) + ref if "forloop" in r["speedup"] else "-")
            + _mark(r, "speedup_forloop"),
            _fmt_x(r["speedup"].get("foreach")),
            _fmt_x(r["speedup"].get("fused")) + _mark(r, "speedup_fused"),
            _fmt_x(r["speedup"].get("best")) + _mark(r, "speedup_best"),
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


def format_traffic(results: Sequence[dict], markdown: bool = False) -> str:
    """The traffic model of each optimizer x dtype in the results."""
    seen = {}
    for r in results:
        seen.setdefault((r["optimizer_label"], r["dtype"]), (r["bytes_per_element"], r["traffic"]))
    rows = [[o, d, str(b), t] for (o, d), (b, t) in seen.items()]
    return _render(["optimizer", "dtype", "B/el", "streams (bytes per element, read/write)"], rows, markdown, "llrl")


LEGEND = ("x <mode>: fusedoptim speedup over torch in that mode (median of per-round ratios; Lion/LAMB "
          "'(ref)': the plain-torch reference for-loop); x best: over torch's fastest mode in each round; "
          "% roofline: roofline time / fusedoptim time (same-traffic kernel, same run); B/el: traffic model. "
          "Targets (✓ met, ✗ missed): fp32 SGD/Adam/AdamW/Adagrad: W1/W2 >= 95% roofline, x forloop >= 5 "
          "(Adam/AdamW) / 2.5 (SGD, Adagrad), W3 x fused >= 10 and < 0.5 us/tensor at 1 thread; optimizers "
          "torch does not fuse: x best >= 5; bf16 (W4, W2bf16): >= 85% roofline, x fused >= 2")


def format_options(opts: Sequence[dict], markdown: bool = False) -> str:
    """The cost-of-the-options table."""
    headers = ["thr", "variant", "B/el", "ms (IQR)", "GB/s", "roofline GB/s", "% roofline",
               "time / default", "x torch"]
    rows = []
    for o in opts:
        ref = o["reference_mode"]
        for v in o["variants"]:
            rows.append([str(o["threads"]), v["variant"], str(v["bytes_per_element"]),
                         f"{_fmt_ms(v['median_ms'])} ({_fmt_ms(v['p25_ms'])}-{_fmt_ms(v['p75_ms'])})",
                         f"{v['gbps']:.1f}", f"{v['roofline_gbps']:.1f}", f"{v['roofline_fraction']:.1%}",
                         f"{v['time_vs_first']:.2f}", _fmt_x(v[f"speedup_{ref}"])])
    if not opts:
        return ""
    o = opts[0]
    title = (f"Cost of the options: fusedoptim {o['optimizer_args']} on {o['workload']} "
             f"({o['workload_description']}); each variant next to a roofline moving its own traffic; "
             f"x torch: speedup over torch {o['reference_mode']} (its default: bf16 state), "
             + ", ".join(f"{x['threads']} thr {_fmt_ms(x['reference']['median_ms'])} ms" for x in opts))
    traffic = "; ".join(f"{v['variant']}: {v['traffic']}" for v in o["variants"])
    table = _render(headers, rows, markdown, "rlrlrrrrr")
    if markdown:
        return f"**{title}**\n\n{table}\n\nTraffic: {traffic}"
    return f"{title}\n{table}\nTraffic: {traffic}"


def format_table(results: Sequence[dict], markdown: bool = False) -> str:
    """The printed report: summary table, then per-contender details."""
    notes = _notes(results)
    if markdown:
        return ("**Summary** (fusedoptim)\n\n" + format_summary(results, True) + "\n\n" + LEGEND
                + "".join("\n\n" + n for n in notes)
                + "\n\n**Traffic model**\n\n" + format_traffic(results, True)
                + "\n\n**Details** (every contender)\n\n" + format_details(results, True))
    return ("Summary (fusedoptim)\n" + format_summary(results) + "\n" + LEGEND
            + "".join("\n" + n for n in notes)
            + "\n\nTraffic model\n" + format_traffic(results)
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
    slower = [(r, m, x) for r in results for m, x in r["speedup"].items()
              if m != "best" and x is not None and x < 1.0]
    if slower:
        items = ", ".join(f"{r['optimizer_label']} {r['workload']} {r['threads']} thr vs {m} ({x:.2f}x)"
                          for r, m, x in slower)
        notes.append(f"NOTE: fusedoptim slower than torch (median paired ratio < 1) in: {items}.")
    return notes


# ------------------------------------------------------------------ CLI --

def _csv(kind: str, valid: Sequence[str], norm: Callable[[str], str], groups: dict | None = None):
    groups = groups or {}

    def parse(s: str) -> list:
        items = []
        for x in (x.strip() for x in s.split(",")):
            if not x:
                continue
            if x.lower() in groups:
                items += groups[x.lower()]
                continue
            try:
                items.append(norm(x))
            except ValueError:
                items.append(x)
        bad = [x for x in items if x not in valid]
        if bad or not items:
            names = ", ".join(list(valid) + list(groups))
            raise argparse.ArgumentTypeError(f"{kind}: expected a comma list of {names}; got {s!r}")
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
        description="fusedoptim vs torch.optim (for-loop, foreach, fused) and a same-traffic roofline; "
                    "the cost of the bf16 options; a bf16 convergence demonstration.")
    ap.add_argument("--workloads", type=_csv("workloads", WORKLOADS, _canonical_workload, {"all": list(WORKLOADS)}),
                    default=None, help=f"comma list of {','.join(WORKLOADS)} or 'all' "
                                       f"(default: {','.join(DEFAULT_WORKLOADS)})")
    ap.add_argument("--optimizers", type=_csv("optimizers", tuple(OPTIMIZERS), str.lower, OPTIMIZER_GROUPS),
                    default=None, help=f"comma list of {','.join(OPTIMIZERS)} or the groups core "
                                       f"({','.join(OPTIMIZER_GROUPS['core'])}), family (the others), all "
                                       f"(default: core; --quick: core on every workload and "
                                       f"thread count, the others once on {QUICK_FAMILY_WORKLOAD} at the first)")
    ap.add_argument("--family", action="store_true", help="every optimizer: the same as --optimizers all")
    ap.add_argument("--threads", type=_threads, default=[1, 2], help="comma list of thread counts (default: 1,2)")
    ap.add_argument("--contenders", type=_csv("contenders", CONTENDERS, str.lower), default=list(CONTENDERS),
                    help=f"comma list of {','.join(CONTENDERS)} (default: all that exist per optimizer)")
    ap.add_argument("--repeats", type=int, default=None,
                    help=f"interleaved rounds per measurement (default: {DEFAULT_REPEATS}, --quick: {QUICK_REPEATS})")
    ap.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed steps per contender first")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, 3 rounds, every optimizer at least once: CI smoke runs")
    ap.add_argument("--no-options", action="store_true", help="skip the cost-of-the-options table (bf16 W4 AdamW)")
    ap.add_argument("--convergence", action="store_true",
                    help="run only the bf16 convergence demonstration (part of the default run otherwise)")
    ap.add_argument("--no-convergence", action="store_true", help="skip the convergence demonstration")
    ap.add_argument("--convergence-steps", type=int, default=None,
                    help=f"training steps per mode (default: {CONV_STEPS}, --quick: {QUICK_CONV_STEPS})")
    ap.add_argument("--plot", metavar="PNG", help="save the convergence curves here (needs matplotlib)")
    ap.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables (for the README)")
    args = ap.parse_args(argv)
    if args.family:
        if args.optimizers is not None and args.optimizers != OPTIMIZER_GROUPS["all"]:
            ap.error("--family means --optimizers all: give one or the other")
        args.optimizers = list(OPTIMIZER_GROUPS["all"])
    args.default_plan = args.optimizers is None and args.workloads is None
    if args.optimizers is None:
        args.optimizers = list(OPTIMIZER_GROUPS["all" if args.quick else "core"])
    if args.workloads is None:
        args.workloads = list(DEFAULT_WORKLOADS)
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    if args.convergence_steps is None:
        args.convergence_steps = QUICK_CONV_STEPS if args.quick else CONV_STEPS
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.convergence_steps < 2:
        ap.error("--convergence-steps must be >= 2")
    if args.convergence and args.no_convergence:
        ap.error("--convergence and --no-convergence exclude each other")
    return args


def _print(text: str = "", file=None) -> None:
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
    except UnicodeEncodeError:
        print(text.replace("✓", "+").replace("✗", "-").encode("ascii", "replace").decode(), file=file, flush=True)


QUICK_FAMILY_WORKLOAD = "W4"


def _cases(args) -> list:
    """(workload, optimizer, threads) to measure: the cross product, except
    for a default --quick run (no --optimizers / --workloads / --family):
    the core optimizers on W1-W4 at every thread count and every other
    optimizer once, on W4 (bf16) at the first thread count."""
    if args.quick and args.default_plan:
        cases = [(w, o, t) for w in DEFAULT_WORKLOADS for o in OPTIMIZER_GROUPS["core"] for t in args.threads]
        cases += [(QUICK_FAMILY_WORKLOAD, o, args.threads[0]) for o in OPTIMIZER_GROUPS["family"]]
        return cases
    return [(w, o, t) for w in args.workloads for o in args.optimizers for t in args.threads]


def _conv_every(steps: int, quick: bool) -> int:
    every = QUICK_CONV_EVERY if quick else CONV_EVERY
    return max(1, min(every, steps // 2))


def run(args: argparse.Namespace, log=sys.stderr) -> dict:
    """Every requested measurement (prints the header first, progress on
    `log`); returns {environment, calibration, args, results, options,
    convergence}."""
    env = environment()
    out = {"environment": env, "calibration": [],
           "args": {k: getattr(args, k) for k in
                    ("workloads", "optimizers", "threads", "contenders", "repeats", "warmup", "quick",
                     "no_options", "convergence", "no_convergence", "convergence_steps", "default_plan")},
           "results": [], "options": [], "convergence": None}
    t_start = time.perf_counter()
    if not args.convergence:
        calib_n = 1 << 18 if args.quick else W1_NUMEL
        out["calibration"] = [roofline_calibration(t, numel=calib_n, repeats=3 if args.quick else 5)
                              for t in args.threads]
        _print(format_header(env, out["calibration"], threads=args.threads, repeats=args.repeats,
                             contenders=args.contenders, quick=args.quick, markdown=args.markdown))
        _print()
        cases = _cases(args)
        base_key, base = None, None
        for i, (w, o, t) in enumerate(cases, 1):
            if w != base_key:
                base = None
                gc.collect()
                base_key, base = w, make_base(workload(w, args.quick))  # copied by every contender
            t0 = time.perf_counter()
            r = measure(o, w, t, repeats=args.repeats, warmup=args.warmup, quick=args.quick,
                        contenders=args.contenders, base=base)
            out["results"].append(r)
            _print(f"[{i:3d}/{len(cases)}] {OPTIMIZERS[o].label:8s} {w:6s} {t} thr  "
                   f"{time.perf_counter() - t0:5.1f} s  {_progress_note(r)}", file=log)
        base = None
        gc.collect()
        if not args.no_options:
            base = make_base(workload("W4", args.quick))
            for t in args.threads[:1] if args.quick else args.threads:
                t0 = time.perf_counter()
                out["options"].append(measure_options(t, repeats=args.repeats, warmup=args.warmup,
                                                      quick=args.quick, base=base))
                _print(f"[options] AdamW W4 {t} thr  {time.perf_counter() - t0:5.1f} s", file=log)
            base = None
            gc.collect()
    if args.convergence or not args.no_convergence:
        steps = args.convergence_steps
        out["convergence"] = convergence(steps, _conv_every(steps, args.quick))
        _print(f"[convergence] {out['convergence']['seconds']:.1f} s", file=log)
    _print(f"total {time.perf_counter() - t_start:.0f} s", file=log)
    return out


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


def format_report(out: dict, markdown: bool = False) -> str:
    parts = []
    if out["results"]:
        parts.append(format_table(out["results"], markdown=markdown))
    if out["options"]:
        parts.append(format_options(out["options"], markdown=markdown))
    if out["convergence"]:
        parts.append(format_convergence(out["convergence"], markdown=markdown))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = run(args)
    _print(format_report(out, markdown=args.markdown))
    if args.plot:
        if out["convergence"] is None:
            _print(f"\n--plot {args.plot}: no convergence run (--no-convergence): nothing plotted", file=sys.stderr)
        else:
            why = plot_convergence(out["convergence"], args.plot)
            _print(f"\n{why}" if why else f"\nconvergence plot written to {args.plot}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
        _print(f"\nresults written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
