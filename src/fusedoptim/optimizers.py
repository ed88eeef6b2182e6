"""Every optimizer on fused CPU kernels.

Each torch optimizer here subclasses its torch.optim counterpart, so
constructor signature, defaults, validation errors, `state_dict` layout,
hooks, pickling and `isinstance(opt, torch.optim.Adam)` are torch's own;
`step` differs. Lion, LAMB and ADOPT, which torch lacks, subclass the
plain-torch implementations in `fusedoptim._reference`. Each class names its
declaration (csrc/fusedoptim/declarations.h: kernel, state keys in torch's
order, fill values, hyper-parameters), read from the compiled module.

Options every optimizer adds (keyword-only, per param group):
  decoupled_weight_decay  weight decay as p *= 1 - lr*weight_decay before the
                   update (AdamW-style) instead of L2 in the gradient; torch's
                   Adam/AdamW/NAdam/RAdam had it already, the others gain it
  l1_weight_decay  L1 decay as a proximal step after the update,
                   w <- sign(w) * max(|w| - lr*l1_weight_decay, 0): weights
                   that fall below the threshold become exactly 0
  state_dtype      dtype of the optimizer state (default: the param's, as
                   torch); torch.float32 keeps fp32 state for bf16/fp16 params
  master_weights   keep an fp32 copy of each bf16/fp16 param in the state
                   ('master_param'); the update runs on it and the param is
                   its round-to-nearest-even image
  stochastic_rounding  store bf16 params with unbiased stochastic rounding,
                   reproducible under torch.manual_seed
  max_grad_norm    clip by the global 2-norm of the group's grads inside
                   step (one extra read of the grads, which are left as they
                   were), as torch.nn.utils.clip_grad_norm_ would

What torch's compatibility flags mean here:
  foreach, fused   accepted and recorded in the param groups exactly as torch
                   does; CPU float32/float64/bfloat16/float16 params always
                   take the fused kernels; other params (other devices,
                   tensor subclasses, sparse grads) take torch's
                   implementation with these flags.
  capturable       a CUDA-graph concept: groups with capturable=True take
                   torch's implementation.
  differentiable   autograd through the update: groups with it take torch's
                   implementation (a C kernel cannot be differentiated).
"""
from __future__ import annotations

import inspect

import torch

from ._base import FusedOptimizerMixin, declaration
from ._reference import ADOPTTorch, LAMBTorch, LionTorch


class SGD(FusedOptimizerMixin, torch.optim.SGD):
    _fo_decl = declaration("sgd")
    _fo_sparse_ok = True
    _fo_torch_decoupled = False


class Adam(FusedOptimizerMixin, torch.optim.Adam):
    _fo_decl = declaration("adam")


class AdamW(FusedOptimizerMixin, torch.optim.AdamW):
    _fo_decl = declaration("adam")


class Adagrad(FusedOptimizerMixin, torch.optim.Adagrad):
    _fo_decl = declaration("adagrad")
    _fo_sparse_ok = True
    _fo_torch_decoupled = False


class RMSprop(FusedOptimizerMixin, torch.optim.RMSprop):
    _fo_decl = declaration("rmsprop")
    _fo_torch_decoupled = False


class Adamax(FusedOptimizerMixin, torch.optim.Adamax):
    _fo_decl = declaration("adamax")
    _fo_torch_decoupled = False


class NAdam(FusedOptimizerMixin, torch.optim.NAdam):
    _fo_decl = declaration("nadam")


class RAdam(FusedOptimizerMixin, torch.optim.RAdam):
    _fo_decl = declaration("radam")


class Adadelta(FusedOptimizerMixin, torch.optim.Adadelta):
    _fo_decl = declaration("adadelta")
    _fo_torch_decoupled = False


class Lion(FusedOptimizerMixin, LionTorch):
    _fo_decl = declaration("lion")


class LAMB(FusedOptimizerMixin, LAMBTorch):
    _fo_decl = declaration("lamb")


class ADOPT(FusedOptimizerMixin, ADOPTTorch):
    _fo_decl = declaration("adopt")


ALL = (SGD, Adam, AdamW, Adagrad, RMSprop, Adamax, NAdam, RAdam, Adadelta, Lion, LAMB, ADOPT)


def _signature(cls):
    base = cls._fo_torch_base()
    sig = inspect.signature(base.__init__)
    params = list(sig.parameters.values())
    have = {p.name for p in params}
    extra = [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
        for k, v in cls._fo_extra_defaults().items() if k not in have
    ]
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD] + extra + var_kw
    return sig.replace(parameters=params)


for _cls in ALL:
    _base = _cls._fo_torch_base()
    _where = "torch.optim" if _base.__module__.startswith("torch.") else "fusedoptim._reference"
    _cls.__doc__ = (
        f"Fused CPU drop-in for :class:`{_where}.{_base.__name__}` (same signature, "
        f"defaults, state and state_dict) plus fusedoptim's options "
        f"({', '.join(_cls._fo_extra_defaults())}: see fusedoptim.optimizers).\n\n" + (_base.__doc__ or "")
    )
    _cls.__module__ = "fusedoptim"


def _own_init(cls):
    """A per-class __init__ over the shared mixin one, carrying the class's
    full signature (torch's parameters, then fusedoptim's options)."""
    def __init__(self, params, *args, **kwargs):
        super(cls, self).__init__(params, *args, **kwargs)

    __init__.__signature__ = _signature(cls)
    __init__.__qualname__ = f"{cls.__name__}.__init__"
    return __init__


for _cls in ALL:
    _cls.__init__ = _own_init(_cls)
