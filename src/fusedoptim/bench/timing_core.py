"""Timing statistics: one sample is the median of consecutive steps;
contenders are timed round-robin; ratios are paired within a round."""
from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Callable, Sequence

import torch

DEFAULT_REPEATS = 10
QUICK_REPEATS = 3
DEFAULT_WARMUP = 1
# A timing sample (one per contender per round) is the median of as many
# consecutive steps as fill this long (W3 steps last about a millisecond).
DEFAULT_MIN_SAMPLE_S = 0.010
QUICK_MIN_SAMPLE_S = 0.002


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

