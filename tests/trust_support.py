"""Helpers shared by the trust tests (fuzzing, NaN/inf, GradScaler, state
dicts, threads, distributed). Everything is derived from tests/registry.py, so
an optimizer added to the registry is covered without touching these tests.

  torch_kwargs(info, kw, mode)   torch's options for an oracle run: "fused"
                                 (torch's fused CPU kernel) or "loop" (its
                                 for-loop path); flags the torch class does
                                 not take are left out
  has_fused_oracle(info)         torch has a working fused CPU kernel for it
  HP_POOLS / MUTABLE             values the fuzzer draws per hyper-parameter
"""
from __future__ import annotations

import inspect

import torch

import registry as R


def _accepts(cls, name: str) -> bool:
    try:
        return name in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - C-implemented __init__
        return False


_FUSED_ORACLE: dict = {}


def has_fused_oracle(info) -> bool:
    """torch's fused CPU kernel is the float32 oracle: the registry says so
    (OptimInfo.fused_oracle) or, for a registry without that field, torch's
    class takes fused=True and its fused kernel runs on CPU float32."""
    if hasattr(info, "fused_oracle"):
        return bool(info.fused_oracle)
    if info.name not in _FUSED_ORACLE:
        _FUSED_ORACLE[info.name] = _probe_fused(info)
    return _FUSED_ORACLE[info.name]


def _probe_fused(info) -> bool:
    if not _accepts(info.torch_cls, "fused"):
        return False
    try:
        p = torch.nn.Parameter(torch.ones(3))
        opt = info.torch_cls([p], **dict(info.configs[0].kwargs, fused=True))
        p.grad = torch.ones(3)
        opt.step()
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return False
    return True


def torch_kwargs(info, kw: dict, mode: str) -> dict:
    kw = dict(kw)
    if mode == "fused":
        kw["fused"] = True
    elif mode == "loop":
        if _accepts(info.torch_cls, "foreach"):
            kw["foreach"] = False
        if _accepts(info.torch_cls, "fused"):
            kw["fused"] = False
    else:
        raise ValueError(mode)
    return kw


def constructor_defaults(cls) -> dict:
    """The hyper-parameters of an optimizer class and their defaults."""
    sig = inspect.signature(cls.__init__)
    return {k: v.default for k, v in sig.parameters.items()
            if k not in ("self", "params") and v.default is not inspect.Parameter.empty}


# flags that choose an implementation, not the math: never drawn
IMPL_FLAGS = {"foreach", "fused", "capturable", "differentiable"}

# values drawn per hyper-parameter name (names torch.optim uses); a key not
# listed keeps the value of the registry config it came from
HP_POOLS = {
    "lr": (1e-4, 1e-3, 1e-2, 0.1, 1.0),
    "weight_decay": (0.0, 1e-4, 1e-2, 0.3),
    "momentum": (0.0, 0.5, 0.9, 0.99),
    "dampening": (0.0, 0.1, 0.5),
    "betas": ((0.9, 0.999), (0.0, 0.99), (0.3, 0.9), (0.5, 0.0), (0.99, 0.999), (0.9, 0.5)),
    "eps": (1e-8, 1e-6, 1e-3, 0.0),
    "alpha": (0.9, 0.99),
    "rho": (0.5, 0.9),
    "lr_decay": (0.0, 0.01),
    "initial_accumulator_value": (0.0, 0.1),
    "momentum_decay": (0.004, 0.01),
}
# changed between steps (torch reads them every step); bool options that
# change the *shape* of the state (amsgrad, nesterov, centered, ...) are only
# drawn at construction: torch itself cannot switch them mid-training
MUTABLE = {"lr", "weight_decay", "momentum", "dampening", "betas", "eps", "alpha", "rho",
           "lr_decay", "momentum_decay", "maximize"}


def valid_options(info, kw: dict) -> bool:
    """torch's constructor accepts these options (its validation is the rule)."""
    try:
        info.torch_cls([torch.nn.Parameter(torch.zeros(2))], **kw)
    except (ValueError, RuntimeError, TypeError):
        return False
    return True


def state_tensors(opt, p):
    st = opt.state.get(p) if p in opt.state else None
    return st or {}
