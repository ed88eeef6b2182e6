"""Every change a user can make between two steps, for every optimizer of the
registry and every storage option, is honoured as torch honours it (README:
"Changes between steps").

Each case runs the same four steps (two, the change, two) three ways:
  ours    fusedoptim as used: its cached per-group plan
  fresh   fusedoptim with its plans dropped before every step, so each step
          rebuilds from optimizer.state and the params through the public API
          (what a plan that honours every change must equal, bit for bit)
  oracle  torch's for-loop path with the same change (fp32 storage; Lion and
          LAMB: the plain-torch references), compared within ulps; for
          master_weights and a change to the params, fusedoptim's fp32 path on
          the changed values (the master follows the param)
"""
from __future__ import annotations

import copy

import pytest
import torch

import registry as R
import trust_support as T

STORAGES = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "bf16_state32": (torch.bfloat16, dict(state_dtype=torch.float32)),
    "bf16_master": (torch.bfloat16, dict(master_weights=True)),
    "bf16_sr": (torch.bfloat16, dict(stochastic_rounding=True)),
}

PARAM_CHANGES = ("param_mul_mask", "param_data", "param_copy", "param_ema_swap")
STATE_CHANGES = ("state_data", "state_set", "state_share_memory", "state_resize", "state_assign",
                 "state_inplace", "state_reset_held", "state_del_held", "state_clear")
OTHER_CHANGES = ("grad_none", "grad_strides", "hparams", "load_state_dict")
CHANGES = PARAM_CHANGES + STATE_CHANGES + OTHER_CHANGES
SCALARS = ("step", "mu_product")
SHAPES = ((4, 6), (7,), (6, 3))
STEPS, CHANGE_AT = 4, 2


def _config(info):
    """The first option set that keeps state (SGD: with momentum)."""
    for c in info.configs:
        if info.state_keys(c.kwargs):
            return c.kwargs
    return info.configs[0].kwargs


def _grad(step, k, shape):
    g = torch.Generator().manual_seed(97 * step + 13 * k + 5)
    return torch.randn(shape, generator=g) * (0.5 + step)


def _params(dtype):
    g = torch.Generator().manual_seed(3)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def _tensor_keys(st):
    return [k for k, v in st.items() if torch.is_tensor(v)]


def _change(name, opt, params, holder):
    """Apply change `name` to `opt` and its params (identically in every run)."""
    p0 = params[0]
    st = opt.state[p0]
    with torch.no_grad():
        if name == "param_mul_mask":          # pruning
            mask = (torch.arange(p0.numel()) % 3 != 0).reshape(p0.shape).to(p0.dtype)
            p0.mul_(mask)
        elif name == "param_data":            # p.data = ...
            p0.data = p0.data + 1.0
        elif name == "param_copy":            # model.load_state_dict(...)
            p0.copy_(p0 + 1.0)
        elif name == "param_ema_swap":        # EMA weights swapped in through .data
            ema = p0.data + 1.0
            p0.data, ema = ema, p0.data
            holder.append(ema)
        elif name in ("state_data", "state_set", "state_assign", "state_inplace"):
            for k in _tensor_keys(st):
                t = st[k]
                new = t.clone() if k in SCALARS else t * 0.5
                if name == "state_data":
                    t.data = new
                elif name == "state_set":
                    t.set_(new)
                elif name == "state_assign":
                    st[k] = new
                else:
                    t.copy_(new)
        elif name == "state_share_memory":   # same values, memory moved
            for k in _tensor_keys(st):
                st[k].share_memory_()
        elif name == "state_resize":         # grown (reallocated), then back to its shape
            for k in _tensor_keys(st):
                t = st[k]
                shape = t.shape
                t.resize_(t.numel() * 4 + 64)
                t.resize_(shape)
        elif name == "state_reset_held":     # opt.state[p] = {} while the old dict is still referenced
            holder.append(opt.state[p0])
            opt.state[p0] = {}
        elif name == "state_del_held":
            holder.append(opt.state[p0])
            del opt.state[p0]
        elif name == "state_clear":
            opt.state[p0].clear()
        elif name == "hparams":
            g = opt.param_groups[0]
            g["lr"] = g["lr"] * 0.3
            if "weight_decay" in g:
                g["weight_decay"] = 0.05
        elif name == "load_state_dict":
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        elif name in ("grad_none", "grad_strides"):
            pass  # applied to the grads of the next step
        else:  # pragma: no cover
            raise AssertionError(name)


def _set_grads(name, params, step, dtype):
    for k, p in enumerate(params):
        g = _grad(step, k, p.shape).to(dtype).to(p.dtype)  # (the fp32 oracle: the bf16 grads, widened)
        if step >= CHANGE_AT and name == "grad_none" and k == 1:
            p.grad = None
            continue
        if step >= CHANGE_AT and name == "grad_strides" and g.dim() == 2:
            g = g.t().contiguous().t()  # same values, transposed strides
        p.grad = g


def _run(make, dtype, name, *, fresh=False, master_oracle=False):
    torch.manual_seed(1234)  # stochastic rounding draws its seeds from torch's generator
    params = _params(torch.float32 if master_oracle else dtype)
    if master_oracle:  # fp32 params holding the bf16 values: what the fp32 master starts from
        params = [torch.nn.Parameter(p.detach().to(dtype).float()) for p in params]
    opt = make(params)
    holder = []
    for s in range(STEPS):
        if s == CHANGE_AT:
            if master_oracle:
                _change_master_oracle(name, opt, params, dtype, holder)
            else:
                _change(name, opt, params, holder)
        _set_grads(name, params, s, dtype)
        if fresh:
            opt.__dict__.pop("_fo_plans", None)
        opt.step()
    return opt, params


def _change_master_oracle(name, opt, params, dtype, holder):
    """The change as the fp32 master sees it: the bf16 param's new value
    (every element of these changes differs from the old one), or the
    pruning mask itself."""
    p0 = params[0]
    with torch.no_grad():
        if name == "param_mul_mask":
            mask = (torch.arange(p0.numel()) % 3 != 0).reshape(p0.shape).float()
            p0.mul_(mask)
        else:  # the bf16 param after `+ 1.0`, widened
            p0.copy_((p0.to(dtype) + 1.0).float())


def _snap(opt, params):
    out = []
    for p in params:
        st = opt.state.get(p)
        out.append((p.detach().clone(), {k: (v.detach().clone() if torch.is_tensor(v) else v)
                                         for k, v in (st or {}).items()}))
    return out


def _compare(a, b, mode, label):
    assert len(a) == len(b)
    for k, ((pa, sa), (pb, sb)) in enumerate(zip(a, b)):
        R.compare_tensor(pa, pb, mode, f"{label} P{k}")
        assert set(sa) == set(sb), f"{label} P{k}: state keys {sorted(sa)} != {sorted(sb)}"
        for key in sa:
            if torch.is_tensor(sa[key]) and sa[key].dim() == 0 and key in SCALARS:
                assert float(sa[key]) == float(sb[key]), f"{label} P{k} {key}"
            elif torch.is_tensor(sa[key]):
                R.compare_tensor(sa[key], sb[key].to(sa[key].dtype), mode, f"{label} P{k} state[{key!r}]")


def _cases():
    out = []
    for info in R.OPTIMS:
        for sname in STORAGES:
            for change in CHANGES:
                out.append(pytest.param(info, sname, change, id=f"{info.name}-{sname}-{change}"))
    return out


@pytest.mark.parametrize("info,storage,change", _cases())
def test_change_between_steps(info, storage, change):
    dtype, extra = STORAGES[storage]
    kw = dict(_config(info), **extra)
    label = f"{info.name}[{storage}] {change}"

    def make(ps):
        return info.fo_cls(ps, **kw)

    ours, ours_p = _run(make, dtype, change)
    fresh, fresh_p = _run(make, dtype, change, fresh=True)
    _compare(_snap(ours, ours_p), _snap(fresh, fresh_p), "bitwise", f"{label}: cached plan vs rebuilt plan")

    if storage == "fp32":
        tkw = T.torch_kwargs(info, _config(info), "loop")
        torch_opt, torch_p = _run(lambda ps: info.torch_cls(ps, **tkw), dtype, change)
        _compare(_snap(ours, ours_p), _snap(torch_opt, torch_p), "close", f"{label}: vs torch")
    if storage == "bf16_master" and change in PARAM_CHANGES:
        # the master follows the param: as if fp32 params had been changed to
        # the new bf16 values (or pruned by the same mask)
        ref, ref_p = _run(lambda ps: info.fo_cls(ps, **_config(info)), dtype, change, master_oracle=True)
        for k, (p, q) in enumerate(zip(ours_p, ref_p)):
            master = ours.state[p]["master_param"]
            R.compare_tensor(master, q.detach(), "close", f"{label}: master P{k} vs the fp32 path")
            R.assert_bitwise_equal(p.detach(), master.to(dtype), f"{label}: P{k} = rounded master")
