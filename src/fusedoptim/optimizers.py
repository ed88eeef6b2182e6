"""Every optimizer on fused CPU kernels.

Each torch optimizer here subclasses its torch.optim counterpart, so
constructor signature, defaults, validation errors, `state_dict` layout,
hooks, pickling and `isinstance(opt, torch.optim.Adam)` are torch's own;
`step` differs. Lion and LAMB, which torch lacks, subclass the plain-torch
implementations in `fusedoptim._reference`.

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

from . import _C
from ._base import FusedOptimizerMixin
from ._reference import LAMBTorch, LionTorch


def _f(x) -> float:
    return float(x)  # Tensor lr / betas: read the value (CPU scalar)


def _hp(group, **kw):
    d = dict(
        wd_mode=FusedOptimizerMixin._fo_wd_mode(group), amsgrad=False, nesterov=False,
        maximize=bool(group.get("maximize", False)), lr=_f(group["lr"]), beta1=0.0, beta2=0.0,
        eps=0.0, weight_decay=group["weight_decay"], momentum=0.0, dampening=0.0,
    )
    d.update(kw)
    return d


def _betas(group):
    b1, b2 = group["betas"]
    return dict(beta1=_f(b1), beta2=_f(b2))


class SGD(FusedOptimizerMixin, torch.optim.SGD):
    _fo_kind = _C.KIND_SGD
    _fo_sparse_ok = True
    _fo_torch_decoupled = False

    def _fo_slots(self, group):
        return ("momentum_buffer" if group["momentum"] != 0 else None, None, None)

    def _fo_order(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _fo_state_keys(self, group):
        return (), ("momentum_buffer",)  # torch creates it only once a grad arrives

    def _fo_hparams(self, group):
        return _hp(group, nesterov=group["nesterov"], momentum=group["momentum"],
                   dampening=group["dampening"])


class _AdamBase(FusedOptimizerMixin):
    _fo_kind = _C.KIND_ADAM

    def _fo_slots(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if group["amsgrad"] else None)

    def _fo_order(self, group):
        keys = ("step", "exp_avg", "exp_avg_sq")
        return keys + ("max_exp_avg_sq",) if group["amsgrad"] else keys

    def _fo_state_keys(self, group):
        req = ("step", "exp_avg", "exp_avg_sq")
        return (req + ("max_exp_avg_sq",), ("master_param",)) if group.get("amsgrad") else \
            (req, ("max_exp_avg_sq", "master_param"))

    def _fo_hparams(self, group):
        return _hp(group, amsgrad=group["amsgrad"], eps=group["eps"], **_betas(group))


class Adam(_AdamBase, torch.optim.Adam):
    pass


class AdamW(_AdamBase, torch.optim.AdamW):
    pass


class Adagrad(FusedOptimizerMixin, torch.optim.Adagrad):
    _fo_kind = _C.KIND_ADAGRAD
    _fo_sparse_ok = True
    _fo_torch_decoupled = False

    def _fo_slots(self, group):
        return ("sum", None, None)

    def _fo_order(self, group):
        return ("step", "sum")

    def _fo_fill(self, group, key):
        return group["initial_accumulator_value"]

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], lr_decay=group["lr_decay"])


class RMSprop(FusedOptimizerMixin, torch.optim.RMSprop):
    _fo_kind = _C.KIND_RMSPROP
    _fo_torch_decoupled = False

    def _fo_slots(self, group):
        return ("square_avg", "grad_avg" if group["centered"] else None,
                "momentum_buffer" if group["momentum"] > 0 else None)

    def _fo_order(self, group):
        keys = ("step", "square_avg")
        if group["momentum"] > 0:
            keys += ("momentum_buffer",)
        if group["centered"]:
            keys += ("grad_avg",)
        return keys

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], momentum=group["momentum"], alpha=group["alpha"],
                   centered=group["centered"])


class Adamax(FusedOptimizerMixin, torch.optim.Adamax):
    _fo_kind = _C.KIND_ADAMAX
    _fo_torch_decoupled = False

    def _fo_slots(self, group):
        return ("exp_avg", "exp_inf", None)

    def _fo_order(self, group):
        return ("step", "exp_avg", "exp_inf")

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], **_betas(group))


class NAdam(FusedOptimizerMixin, torch.optim.NAdam):
    _fo_kind = _C.KIND_NADAM

    def _fo_slots(self, group):
        return ("exp_avg", "exp_avg_sq", None)

    def _fo_order(self, group):
        return ("step", "mu_product", "exp_avg", "exp_avg_sq")

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], momentum_decay=group["momentum_decay"], **_betas(group))


class RAdam(FusedOptimizerMixin, torch.optim.RAdam):
    _fo_kind = _C.KIND_RADAM

    def _fo_slots(self, group):
        return ("exp_avg", "exp_avg_sq", None)

    def _fo_order(self, group):
        return ("step", "exp_avg", "exp_avg_sq")

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], **_betas(group))


class Adadelta(FusedOptimizerMixin, torch.optim.Adadelta):
    _fo_kind = _C.KIND_ADADELTA
    _fo_torch_decoupled = False

    def _fo_slots(self, group):
        return ("square_avg", "acc_delta", None)

    def _fo_order(self, group):
        return ("step", "square_avg", "acc_delta")

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], alpha=group["rho"])


class Lion(FusedOptimizerMixin, LionTorch):
    _fo_kind = _C.KIND_LION

    def _fo_slots(self, group):
        return ("exp_avg", None, None)

    def _fo_order(self, group):
        return ("exp_avg",)

    def _fo_hparams(self, group):
        return _hp(group, **_betas(group))


class LAMB(FusedOptimizerMixin, LAMBTorch):
    _fo_kind = _C.KIND_LAMB

    def _fo_slots(self, group):
        return ("exp_avg", "exp_avg_sq", None)

    def _fo_order(self, group):
        return ("step", "exp_avg", "exp_avg_sq")

    def _fo_hparams(self, group):
        return _hp(group, eps=group["eps"], bias_correction=group["bias_correction"], **_betas(group))


ALL = (SGD, Adam, AdamW, Adagrad, RMSprop, Adamax, NAdam, RAdam, Adadelta, Lion, LAMB)


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
