"""What is timed: the optimizers (with their hyper-parameters and the torch
modes that exist for them) and the workloads W1-W4, W2bf16 (parameter
shapes, dtype), and the parameter sets built from them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import fusedoptim
from fusedoptim._reference import LAMBTorch, LionTorch

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

