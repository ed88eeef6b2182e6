"""Load the C extension and wire it to torch: thread pool, tensor accessors,
instruction set. Runs once, at `import fusedoptim`."""
from __future__ import annotations

import ctypes
import os

import torch

from . import _C

_ISA_ENV = "FUSEDOPTIM_ISA"
_state = {"pool": "serial (torch_parallel_for not found)", "fast_meta": False, "raw_storage": False,
          "isa_source": "auto"}


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
    # the object layout first, without calling any accessor: a THPVariable
    # must hold its TensorImpl pointer right after the PyObject header, else
    # the accessors would be handed a wild pointer (a crash, not a False)
    if not all(_C.fast_meta_layout_ok(t) for t in samples):
        return False
    for t in samples:
        got = _C.fast_meta_probe(t)
        want = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), codes[t.dtype], 0)
        if got != want:
            return False
    return True


def _self_test_raw_storage():
    """Locate the storage words (see _C.raw_storage_scan) on probes with
    distinct storages, offsets and sizes, then check that the fingerprint
    follows `.data = ...`, `set_()`, `share_memory_()`-like storage swaps and
    `resize_()`. -> the offsets, or None (the accessor path is used)."""
    base = torch.arange(4096, dtype=torch.float32)
    buf = bytearray(512)  # a from_blob storage: its DataPtr's context differs from its data
    probes = [torch.frombuffer(buf, dtype=torch.float32)[5:100], base[3:40], base[77:1100], torch.zeros(5, 7, dtype=torch.float64)[1:],
              torch.nn.Parameter(torch.ones(9, dtype=torch.bfloat16)), torch.zeros((), dtype=torch.float32),
              torch.empty(1234, dtype=torch.float16)[1001:1030]]
    offs = _C.raw_storage_scan(probes)
    if offs is None:
        return None
    _C.set_raw_storage(offs)
    try:
        t = torch.zeros(64)
        fps = [_C.raw_fingerprint(t)]
        t.data = torch.zeros(64)
        fps.append(_C.raw_fingerprint(t))
        t.set_(torch.zeros(64).untyped_storage(), 0, (64,))
        fps.append(_C.raw_fingerprint(t))
        t.set_(t.untyped_storage(), 8, (40,))
        fps.append(_C.raw_fingerprint(t))
        t.resize_(30)
        fps.append(_C.raw_fingerprint(t))
        ok = len(set(fps)) == len(fps) and fps[-1][3] == 30 and fps[-2][2] == 8
    finally:
        _C.set_raw_storage(None)
    return offs if ok else None


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
    if ok:
        offs = _self_test_raw_storage()
        _C.set_raw_storage(offs)
        _state["raw_storage"] = offs is not None
        probe = torch.nn.Parameter(torch.zeros(2))
        probe.grad = torch.ones(2)
        _C.set_grad_getter(torch._C.TensorBase.__dict__["grad"], probe)


def best_isa() -> str:
    for name in ("avx512", "avx2", "baseline"):
        if name in _C.compiled_isas() and _C.cpu_supports(name):
            return name
    return "baseline"


_ATEN_ENV = "ATEN_CPU_CAPABILITY"
_ATEN_TO_ISA = {"avx512": "avx512", "avx2": "avx2", "default": "baseline"}
_ISA_RANK = {"baseline": 0, "avx2": 1, "avx512": 2}


def aten_isa() -> str | None:
    """The variant matching $ATEN_CPU_CAPABILITY (torch's own kernel choice,
    which fp32 bit-parity with torch depends on), capped at what this CPU and
    build run, as torch caps it; None when unset or not an x86 capability."""
    want = _ATEN_TO_ISA.get((os.environ.get(_ATEN_ENV) or "").strip().lower())
    if want is None:
        return None
    best = best_isa()
    return want if _ISA_RANK[want] <= _ISA_RANK[best] else best


def select_isa(name: str | None = None) -> str:
    """Select the kernel variant: `name`, else $FUSEDOPTIM_ISA, else the one
    matching torch's $ATEN_CPU_CAPABILITY when the user set it (avx512, avx2,
    default -> baseline), else the best this CPU runs. Raises ValueError for
    an unknown name and RuntimeError for one this CPU (or this build) cannot
    run."""
    source = "argument"
    if name is None:
        name = os.environ.get(_ISA_ENV) or None
        source = f"${_ISA_ENV}" if name else "auto"
    if name is None:
        name = aten_isa()
        if name is not None:
            source = f"${_ATEN_ENV}"
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
