"""Fixtures for the pytest-benchmark micro-benchmarks in bench/.

    pytest bench                                        # measure (full sizes: minutes)
    FUSEDOPTIM_BENCH_QUICK=1 pytest bench --benchmark-disable   # CI smoke run: seconds

Environment:
    FUSEDOPTIM_BENCH_QUICK=1     small workloads (see `fusedoptim.bench.workload(quick=True)`)
    FUSEDOPTIM_BENCH_THREADS=N   torch.set_num_threads(N) for the session (default: torch's)
"""
from __future__ import annotations

import gc
import os

import pytest
import torch

from fusedoptim import _C
from fusedoptim import bench as fb


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


QUICK = _env_flag("FUSEDOPTIM_BENCH_QUICK")


def _threads() -> int:
    raw = os.environ.get("FUSEDOPTIM_BENCH_THREADS", "").strip()
    if not raw:
        return torch.get_num_threads()
    n = int(raw)
    if n < 1:
        raise ValueError(f"FUSEDOPTIM_BENCH_THREADS={raw!r}: expected a positive integer")
    return n


def pytest_report_header(config):
    return (f"fusedoptim bench: quick={QUICK} threads={_threads()} isa={_C.get_isa()} "
            f"torch={torch.__version__}")


@pytest.fixture(scope="session")
def bench_quick() -> bool:
    return QUICK


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    old = torch.get_num_threads()
    n = _threads()
    torch.set_num_threads(n)
    yield n
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def workload_base(bench_quick):
    """get(key) -> the workload's parameters with grads, built once and kept
    while consecutive tests use the same workload (they are never stepped:
    every contender works on its own copy)."""
    cache: dict = {}

    def get(key: str) -> list:
        if key not in cache:
            cache.clear()
            if not bench_quick:
                gc.collect()
            cache[key] = fb.make_base(fb.workload(key, bench_quick))
        return cache[key]

    yield get
    cache.clear()
