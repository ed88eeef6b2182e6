"""SGD, Adam and AdamW on fused CPU kernels.

Each class subclasses its torch.optim counterpart, so constructor signature,
defaults, validation errors, `state_dict` layout, hooks, pickling and
`isinstance(opt, torch.optim.Adam)` are torch's own; only `step` differs.

What the compatibility flags mean here:
  foreach, fused   accepted and recorded in the param groups exactly as torch
                   does; CPU float32/float64 params always take the fused
                   kernels; other params (other devices, bf16/fp16, sparse
                   grads for SGD) take torch's implementation with these flags.
  capturable       a CUDA-graph concept: groups with capturable=True take
                   torch's implementation.
  differentiable   autograd through the update: groups with it take torch's
                   implementation (a C kernel cannot be differentiated).
"""
from __future__ import annotations

import torch
from torch.optim import adam as _torch_adam
from torch.optim import sgd as _torch_sgd

from . import _C
from ._base import FusedOptimizerMixin, init_step, match_layout, native_step

_WD_NONE, _WD_COUPLED, _WD_DECOUPLED = 0, 1, 2


def _f(x) -> float:
    return float(x)  # Tensor lr / betas: read the value (CPU scalar)


class SGD(FusedOptimizerMixin, torch.optim.SGD):
    _fo_kind = _C.KIND_SGD
    _fo_sparse_ok = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # GradScaler unscales and skips on inf itself for us (no in-kernel AMP yet)
        self._step_supports_amp_scaling = False

    def _fo_key(self, group):
        return (group["momentum"] != 0,)

    def _fo_state_keys(self, group):
        return (), ("momentum_buffer",)

    def _fo_init_state(self, group, p):
        if group["momentum"] == 0:
            return None, None, None, None, False, ()  # torch keeps no state here
        state = self.state[p]
        buf = state.get("momentum_buffer")
        first = buf is None
        if first:
            buf = torch.empty_like(p, memory_format=torch.preserve_format)
        else:
            buf = match_layout(p, buf)
        state["momentum_buffer"] = buf
        return buf, None, None, None, first, (state, ("momentum_buffer", buf))

    def _fo_set_hparams(self, plan, group):
        wd = group["weight_decay"]
        plan.set_hparams(
            _WD_COUPLED if wd != 0 else _WD_NONE, False, group["nesterov"], group["maximize"],
            _f(group["lr"]), 0.0, 0.0, 0.0, wd, group["momentum"], group["dampening"],
        )

    def _fo_torch_step(self, group, params):
        sub = dict(group)
        sub["params"] = params
        ps, grads, bufs = [], [], []
        has_sparse_grad = torch.optim.SGD._init_group(self, sub, ps, grads, bufs)
        _torch_sgd.sgd(
            ps, grads, bufs,
            weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
            dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
            has_sparse_grad=has_sparse_grad, foreach=group["foreach"], fused=group["fused"],
            grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
        )
        if group["momentum"] != 0:
            for p, buf in zip(ps, bufs):
                self.state[p]["momentum_buffer"] = buf


class _AdamBase(FusedOptimizerMixin):
    _fo_kind = _C.KIND_ADAM

    def _fo_key(self, group):
        return (bool(group["amsgrad"]),)

    def _fo_state_keys(self, group):
        req = ("step", "exp_avg", "exp_avg_sq")
        return (req + ("max_exp_avg_sq",), ()) if group.get("amsgrad") else (req, ("max_exp_avg_sq",))

    def _fo_init_state(self, group, p):
        state = self.state[p]
        if len(state) == 0:
            if group["fused"]:
                from torch.optim.optimizer import _device_dtype_check_for_fused
                _device_dtype_check_for_fused(p)
            state["step"] = init_step(group, p)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        step = native_step(state)
        m = state["exp_avg"] = match_layout(p, state["exp_avg"])
        v = state["exp_avg_sq"] = match_layout(p, state["exp_avg_sq"])
        refs = [("step", step), ("exp_avg", m), ("exp_avg_sq", v)]
        vmax = None
        if group["amsgrad"]:
            if "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            vmax = state["max_exp_avg_sq"] = match_layout(p, state["max_exp_avg_sq"])
            refs.append(("max_exp_avg_sq", vmax))
        return m, v, vmax, step, False, (state, *refs)

    def _fo_set_hparams(self, plan, group):
        wd = group["weight_decay"]
        beta1, beta2 = group["betas"]
        mode = _WD_NONE if wd == 0 else (_WD_DECOUPLED if group["decoupled_weight_decay"] else _WD_COUPLED)
        plan.set_hparams(
            mode, group["amsgrad"], False, group["maximize"], _f(group["lr"]),
            _f(beta1), _f(beta2), group["eps"], wd, 0.0, 0.0,
        )

    def _fo_torch_step(self, group, params):
        sub = dict(group)
        sub["params"] = params
        ps, grads, m, v, vmax, steps = [], [], [], [], [], []
        has_complex = torch.optim.Adam._init_group(self, sub, ps, grads, m, v, vmax, steps)
        beta1, beta2 = group["betas"]
        _torch_adam.adam(
            ps, grads, m, v, vmax, steps,
            amsgrad=group["amsgrad"], has_complex=has_complex, beta1=beta1, beta2=beta2,
            lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
            maximize=group["maximize"], foreach=group["foreach"], capturable=group["capturable"],
            differentiable=group["differentiable"], fused=group["fused"],
            grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None),
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )


class Adam(_AdamBase, torch.optim.Adam):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._step_supports_amp_scaling = False


class AdamW(_AdamBase, torch.optim.AdamW):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._step_supports_amp_scaling = False


for _cls, _base in ((SGD, torch.optim.SGD), (Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)):
    _cls.__doc__ = (
        f"Fused CPU drop-in for :class:`torch.optim.{_base.__name__}` (same signature, "
        f"defaults, state and state_dict).\n\n" + (_base.__doc__ or "")
    )
    _cls.__init__.__signature__ = __import__("inspect").signature(_base.__init__)
    _cls.__module__ = "fusedoptim"
