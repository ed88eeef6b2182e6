"""The traffic model (bytes per element one step must move) and the
same-traffic roofline kernel built from it; the bandwidth calibration."""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

import torch

from fusedoptim import _C

from .timing_core import _timed
from .workloads import W1_NUMEL, OptimizerSpec


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
    stream used in several passes (LAMB) is the same arrays in each pass.
    The kernel has one fused loop for up to ROOF_RW read-write and ROOF_RO
    read-only arrays; beyond that it falls back to one pass per read-write
    array, re-reading the read-only ones each time (more bytes than the
    model, and slow: bf16 AdamW with state_dtype=float32 is 5 rw + 1 ro
    half-length arrays). Such a pass is cut into calls that each fit the
    fused loop (every array still read and written once: the same bytes)."""
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
        calls.extend(_fit_fused_loop(rw, ro))
    if len(calls) == 1:
        return functools.partial(_C.roofline, *calls[0]), arrays

    def step():
        for rw, ro in calls:
            _C.roofline(rw, ro)
    return step, arrays



ROOF_RW, ROOF_RO = 4, 2  # the roofline kernel's fused loop (csrc/cpu/isa_section.h roofline_*)


def _fit_fused_loop(rw: list, ro: list) -> list:
    """[(rw, ro)] calls moving the same arrays, each within the fused loop's
    limits when possible (each call needs a read-write array)."""
    k = max(math.ceil(len(rw) / ROOF_RW), math.ceil(len(ro) / ROOF_RO))
    if k <= 1 or len(rw) < k:
        return [(rw, ro)]
    return [(rw[i::k], ro[i::k]) for i in range(k)]


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

