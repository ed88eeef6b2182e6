"""Load the C extension and wire it to torch: thread pool, tensor accessors,
instruction set. Runs once, at `import fusedoptim`."""
from __future__ import annotations

import ctypes
import os

import torch

from . import _C

_ISA_ENV = "FUSEDOPTIM_ISA"
_state = {"pool": "serial (torch_parallel_for not found)", "fast_meta": False, "isa_source": "auto"}


def _libtorch_cpu() -> ctypes.CDLL | None:
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        path = os.path.join(libdir, name)
        if os.path.exists(path):
            try:
                return ctypes.CDLL(path)  # already loaded by `import torch`: no second copy
            except OSError:
                return None
    return None


def _addr(lib, name: str) -> int | None:
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError:
        return None


def _wire_pool(lib) -> None:
    addr = _addr(lib, "torch_parallel_for") if lib is not None else None
    if addr:
        _C.set_parallel_for(addr)
        _state["pool"] = "torch intra-op pool (torch_parallel_for)"


def _self_test_fast_meta() -> bool:
    """The fast metadata path must agree with torch's public accessors."""
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    samples = [
        base,
        base.transpose(0, 2),
        base[1:, 1:3],
        torch.nn.Parameter(torch.zeros(7, dtype=torch.float64)),
        torch.zeros((), dtype=torch.bfloat16),
        torch.empty(0, 3),
    ]
    codes = {torch.float32: 6, torch.float64: 7, torch.bfloat16: 15}
    for t in samples:
        got = _C.fast_meta_probe(t)
        want = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), codes[t.dtype], 0)
        if got != want:
            return False
    return True


def _wire_fast_meta(lib) -> None:
    names = [
        "aoti_torch_get_data_ptr", "aoti_torch_get_dim", "aoti_torch_get_sizes",
        "aoti_torch_get_strides", "aoti_torch_get_dtype", "aoti_torch_get_device_type",
    ]
    addrs = [_addr(lib, n) for n in names] if lib is not None else [None]
    if not all(addrs) or os.environ.get("FUSEDOPTIM_SLOW_META"):
        return
    _C.set_tensor_accessors(*addrs, torch.Tensor, torch.nn.Parameter)
    ok = _self_test_fast_meta()
    _C.enable_fast_meta(ok)
    _state["fast_meta"] = ok


def best_isa() -> str:
    for name in ("avx512", "avx2", "baseline"):
        if name in _C.compiled_isas() and _C.cpu_supports(name):
            return name
    return "baseline"


def select_isa(name: str | None = None) -> str:
    """Select the kernel variant: `name`, else $FUSEDOPTIM_ISA, else the best
    this CPU runs. Raises ValueError for an unknown name and RuntimeError for
    one this CPU (or this build) cannot run."""
    source = "argument"
    if name is None:
        name = os.environ.get(_ISA_ENV) or None
        source = f"${_ISA_ENV}" if name else "auto"
    if name is None:
        name = best_isa()
    name = name.strip().lower()
    if name not in ("avx512", "avx2", "baseline"):
        raise ValueError(f"{_ISA_ENV}={name!r}: expected one of avx512, avx2, baseline")
    if name not in _C.compiled_isas():
        raise RuntimeError(f"the {name!r} kernels are not compiled into this build (platform has {_C.compiled_isas()})")
    _C.set_isa(name)
    _state["isa_source"] = source
    return name


def info() -> dict:
    return dict(_state, isa=_C.get_isa())


_C._init_dtypes(torch)
_lib = _libtorch_cpu()
_wire_pool(_lib)
_wire_fast_meta(_lib)
select_isa()
