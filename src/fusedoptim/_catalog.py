"""What this package ships, read from the code (never a hand-kept list): the
optimizer classes, which of them run on the fused kernels (CPU, CUDA), and
the param dtypes the CPU kernels take. show_config() and create_optimizer()
both read it, so a new optimizer (ADOPT, an 8-bit variant, ...) appears in
both as soon as the package exports it."""
from __future__ import annotations

import sys

import torch

# candidates probed against the CPU kernels' own eligibility test
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def optimizer_classes() -> dict:
    """{class name: class} for every optimizer fusedoptim itself defines and
    exports at the top level (in the order of the package's namespace);
    torch's own classes re-exported unchanged (SparseAdam, LBFGS, ASGD) are
    left out."""
    pkg = sys.modules["fusedoptim"]
    out = {}
    for name, obj in vars(pkg).items():
        if (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer) and not name.startswith("_")
                and obj.__module__.split(".")[0] == "fusedoptim"):
            out[name] = obj
    return dict(sorted(out.items(), key=lambda kv: _order(kv[1])))


def _order(cls) -> tuple:
    # torch's counterparts first in torch.optim's order, then ours by name
    torch_names = list(getattr(torch.optim, "__all__", []))
    base = next((b.__name__ for b in cls.__mro__[1:] if b.__module__.startswith("torch.optim")
                 and b.__name__ in torch_names and b is not torch.optim.Optimizer), None)
    return (0, torch_names.index(base), cls.__name__) if base else (1, 0, cls.__name__)


def torch_optimizers_not_fused() -> list:
    """torch.optim classes fusedoptim re-exports unchanged (its own implementation)."""
    ours = {b for c in optimizer_classes().values() for b in c.__mro__}
    return [n for n in getattr(torch.optim, "__all__", [])
            if isinstance(getattr(torch.optim, n, None), type) and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
            and n != "Optimizer" and getattr(torch.optim, n) not in ours]


def fused_cpu(cls) -> bool:
    """The class steps through the fused CPU kernels: it derives from the
    kernel base in fusedoptim._base (whatever that class is called)."""
    return any(b.__module__ == "fusedoptim._base" for b in cls.__mro__)


def fused_cuda(cls) -> bool:
    """The CUDA backend serves this class (when the CUDA extension is available)."""
    from . import _cuda

    return _cuda.cuda_kind(cls) is not None


def torch_counterpart(cls) -> str | None:
    """'torch.optim.<Name>' if the class subclasses a torch optimizer of that name."""
    for b in cls.__mro__[1:]:
        if b.__module__.startswith("torch.optim") and b.__name__ == cls.__name__:
            return f"torch.optim.{b.__name__}"
    return None


def kernel_dtypes() -> list:
    """Param dtypes the CPU kernels update in place (the kernels' own
    eligibility test, run on a probe param of each float dtype)."""
    from ._base import native_param

    return [dt for dt in _FLOAT_DTYPES if native_param(torch.nn.Parameter(torch.zeros(2, dtype=dt)))]
