"""`fusedoptim.show_config()`: what this installation runs, and where."""
from __future__ import annotations

import platform

import torch

from . import _C, _backend, _cuda
from ._version import __version__

ACCELERATED = ("SGD", "Adam", "AdamW")


def config() -> dict:
    info = _backend.info()
    cuda = _cuda.status()
    if torch.version.cuda and not torch.cuda.is_available():
        cuda += " [no GPU visible]"
    return {
        "fusedoptim": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "isa": info["isa"],
        "isa_selected_by": info["isa_source"],
        "isas_compiled": _C.compiled_isas(),
        "isas_supported_here": [n for n in _C.compiled_isas() if _C.cpu_supports(n)],
        "threads": torch.get_num_threads(),
        "thread_pool": info["pool"],
        "tensor_metadata": "AOTI shim (fast path)" if info["fast_meta"] else "Python attributes",
        "accelerated": list(ACCELERATED),
        "backend_cpu": "fusedoptim fused C kernels (float32, float64); other dtypes: torch",
        "backend_cuda": cuda,
        "backend_other": "torch's own implementation",
    }


def show_config() -> None:
    """Print the version, instruction set, thread count and backend per device."""
    c = config()
    width = max(len(k) for k in c)
    for k, v in c.items():
        if isinstance(v, list):
            v = ", ".join(v)
        print(f"{k:<{width}}  {v}")
