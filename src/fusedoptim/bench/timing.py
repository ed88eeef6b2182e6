"""Measurements: the contenders (fusedoptim, torch's modes, the roofline)
built on one workload and timed side by side; the cost of the low-precision
options."""
from __future__ import annotations

import functools
import statistics
from typing import Callable, Sequence

import torch

from .targets import evaluate_targets
from .timing_core import (DEFAULT_MIN_SAMPLE_S, DEFAULT_REPEATS, DEFAULT_WARMUP, QUICK_MIN_SAMPLE_S,
                          _paired, _run_rounds, _stats)
from .traffic import Traffic, roofline_step, traffic_model
from .workloads import OPTIMIZERS, OptimizerSpec, _clone_params, make_base, workload

CONTENDERS = ("roofline", "fusedoptim", "forloop", "foreach", "fused")
TORCH_MODES = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


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
    variant's own traffic, and torch's step in every mode it has (default
    options: bf16 state) for reference; all round-robin in one set of rounds."""
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
    modes = [m for m in TORCH_MODES if m in spec.modes]  # ref_mode among them
    for m in modes:
        build[(m, None)] = functools.partial(build_contender, m, spec, base)
    samples, inner = _run_rounds(build, threads, repeats=repeats, warmup=warmup, quick=quick,
                                 min_sample_s=min_sample_s)
    ref = samples[(ref_mode, None)]
    # per round, torch's fastest mode in that round
    best = [min(samples[(m, None)][i] for m in modes) for i in range(len(ref))]
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
               f"speedup_{ref_mode}": _paired(ref, s), "speedup_best": _paired(best, s)}
        row.update(_stats(s, inner[("fusedoptim", v)], nbytes, wl.tensors))
        rows.append(row)
    return {"optimizer": spec.key, "optimizer_label": spec.label, "optimizer_args": spec.description,
            "workload": wl.key, "workload_description": wl.description, "threads": threads,
            "quick": quick, "repeats": repeats, "reference_mode": ref_mode, "torch_modes": modes,
            "torch": {m: _stats(samples[(m, None)], inner[(m, None)], 1, wl.tensors) for m in modes},
            "reference": _stats(ref, inner[(ref_mode, None)], 1, wl.tensors), "variants": rows}

