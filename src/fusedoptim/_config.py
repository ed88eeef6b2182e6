"""`fusedoptim.show_config()`: what this installation runs, and where.

Everything here is read from the code at call time (the package's optimizer
classes, the compiled instruction sets, the kernels' dtype test, the CUDA
extension's state), so it cannot go stale."""
from __future__ import annotations

import platform

import torch

from . import _C, _backend, _catalog, _cuda
from ._version import __version__


def _dtype_names(dts) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dts)


def optimizer_table() -> list:
    """One dict per optimizer fusedoptim defines: name, cpu / cuda backend, torch counterpart."""
    rows = []
    for name, cls in _catalog.optimizer_classes().items():
        rows.append({
            "optimizer": name,
            "cpu": "fused kernel" if _catalog.fused_cpu(cls) else "torch's implementation",
            "cuda": "fused kernel" if _catalog.fused_cuda(cls) else "torch's implementation",
            "torch_counterpart": _catalog.torch_counterpart(cls) or "- (torch has none)",
        })
    return rows


def config() -> dict:
    info = _backend.info()
    cuda = _cuda.status()
    if torch.version.cuda and not torch.cuda.is_available():
        cuda += " [no GPU visible]"
    table = optimizer_table()
    dts = _catalog.kernel_dtypes()
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
        "accelerated": [r["optimizer"] for r in table if r["cpu"] == "fused kernel"],
        "kernel_dtypes": [str(d).replace("torch.", "") for d in dts],
        "backend_cpu": (f"fusedoptim fused C kernels for dense CPU params of dtype {_dtype_names(dts)} "
                        f"(state in the param's dtype or state_dtype); other params (sparse grads, tensor "
                        f"subclasses, differentiable=True, capturable=True): torch"),
        "backend_cuda": cuda,
        "backend_other": "torch's own implementation",
        "torch_classes": _catalog.torch_optimizers_not_fused(),
        "optimizers": table,
    }


def show_config() -> None:
    """Print the version, instruction set, thread count, the backend per
    device and, per optimizer, where it runs on CPU and CUDA."""
    c = config()
    table = c.pop("optimizers")
    torch_classes = c.pop("torch_classes")
    width = max(len(k) for k in c)
    for k, v in c.items():
        if isinstance(v, list):
            v = ", ".join(v)
        print(f"{k:<{width}}  {v}")
    print()
    heads = {"optimizer": "optimizer", "cpu": "CPU", "cuda": "CUDA (when available)",
             "torch_counterpart": "torch counterpart"}
    widths = {k: max(len(h), *(len(r[k]) for r in table)) for k, h in heads.items()}
    print("  ".join(h.ljust(widths[k]) for k, h in heads.items()).rstrip())
    for r in table:
        print("  ".join(r[k].ljust(widths[k]) for k in heads).rstrip())
    if torch_classes:
        print(f"{', '.join(torch_classes)}: torch's own classes, re-exported unchanged")
