"""The one registry of what fusedoptim is tested on (like torch's OptimizerInfo).

    OPTIMS   optimizer x option sets        (OptimInfo, OptimConfig)
    DTYPES   float32, float64
    SHAPES   0-d, tiny, not-a-multiple-of-16, 2-d, empty, transposed params,
             grads whose strides differ from the param's, a size that crosses
             the kernel's parallel grain, and (slow) a ~1M-element tensor

and the helpers every test module shares: deterministic grads, a trajectory
runner that snapshots params and state after every step, the oracles (torch's
fused CPU kernel for float32, torch's for-loop path for float64) and the
comparisons (bit-exact with NaNs compared by position, or a tolerance).

The parameter layout of every trajectory, so that one case exercises several
params per group, two groups with different hyper-parameters and a param that
never gets a grad:

    group 0 (the options under test):   P0 (case shape), P1 (case shape), P2 (5,)
    group 1 (GROUP1_OVERRIDE applied):  P3 (case shape), P4 (3,) never a grad, P5 (4,)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import pytest
import torch

import fusedoptim
from fusedoptim._reference import ADOPTTorch, LAMBTorch, LionTorch

# --------------------------------------------------------------------- optimizers --


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    id: str
    kwargs: dict

    def __repr__(self):  # short pytest ids
        return self.id


@dataclasses.dataclass(frozen=True)
class OptimInfo:
    name: str
    fo_cls: type
    torch_cls: type
    configs: tuple
    # hyper-parameters of group 1 given group 0's kwargs
    group1_override: Callable[[dict], dict]
    # per-param state keys torch creates for a group with these kwargs
    state_keys: Callable[[dict], set]
    # torch has a fused CPU kernel for it: the float32 oracle is that kernel,
    # bit for bit; else torch's single-tensor for-loop path within FP32_RTOL
    fused_oracle: bool = True
    # steps of a parity trajectory (RAdam rectifies only from step 6 on)
    steps: int = 5
    # run on every shape of SHAPES, or only on SHAPES_FAMILY (the loops and
    # layouts are shared: one kernel's math is what a new optimizer adds)
    all_shapes: bool = True

    def __repr__(self):
        return self.name


def _sgd_override(kw):
    mom = kw.get("momentum", 0.0)
    nesterov = kw.get("nesterov", False)
    return {
        "lr": kw.get("lr", 1e-3) * 0.37,
        "weight_decay": 0.03 if kw.get("weight_decay", 0.0) == 0 else 0.0,
        # momentum off <-> on (nesterov needs a momentum: change its value instead)
        "momentum": 0.6 if (mom == 0 or nesterov) else 0.0,
        "dampening": 0.0 if nesterov or mom != 0 else kw.get("dampening", 0.0),
    }


def _adam_override(kw):
    return {
        "lr": kw.get("lr", 1e-3) * 0.37,
        "weight_decay": 0.03 if kw.get("weight_decay", 0.0) == 0 else 0.0,
        "amsgrad": not kw.get("amsgrad", False),
        "betas": (0.8, 0.99),
        "eps": 1e-6,
    }


def _adamw_override(kw):
    d = _adam_override(kw)
    d["weight_decay"] = 0.0 if kw.get("weight_decay", 1e-2) != 0 else 0.05
    return d


def _sgd_keys(kw):
    return {"momentum_buffer"} if kw.get("momentum", 0) != 0 else set()


def _adam_keys(kw):
    keys = {"step", "exp_avg", "exp_avg_sq"}
    if kw.get("amsgrad", False):
        keys.add("max_exp_avg_sq")
    return keys


SGD_INFO = OptimInfo(
    "SGD", fusedoptim.SGD, torch.optim.SGD,
    (
        OptimConfig("plain", dict(lr=0.1)),
        OptimConfig("wd", dict(lr=0.1, weight_decay=0.1)),
        OptimConfig("mom", dict(lr=0.1, momentum=0.9)),
        OptimConfig("mom_damp", dict(lr=0.1, momentum=0.9, dampening=0.3)),
        OptimConfig("nesterov_wd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        OptimConfig("max_mom", dict(lr=0.1, momentum=0.9, maximize=True)),
        OptimConfig("max_wd", dict(lr=0.05, maximize=True, weight_decay=0.2)),
        OptimConfig("all", dict(lr=0.07, momentum=0.5, dampening=0.1, weight_decay=0.05, maximize=True)),
    ),
    _sgd_override, _sgd_keys,
)

ADAM_INFO = OptimInfo(
    "Adam", fusedoptim.Adam, torch.optim.Adam,
    (
        OptimConfig("default", dict(lr=1e-2)),
        OptimConfig("amsgrad", dict(lr=1e-2, amsgrad=True)),
        OptimConfig("maximize", dict(lr=1e-2, maximize=True)),
        OptimConfig("wd", dict(lr=1e-2, weight_decay=0.1)),
        OptimConfig("decoupled", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
        OptimConfig("beta03", dict(lr=1e-2, betas=(0.3, 0.9))),
        OptimConfig("beta05_eps", dict(lr=3e-2, betas=(0.5, 0.99), eps=1e-3)),
        OptimConfig("all", dict(lr=2e-2, betas=(0.3, 0.95), weight_decay=0.05, amsgrad=True, maximize=True)),
    ),
    _adam_override, _adam_keys,
)

ADAMW_INFO = OptimInfo(
    "AdamW", fusedoptim.AdamW, torch.optim.AdamW,
    (
        OptimConfig("default", dict(lr=1e-2)),
        OptimConfig("amsgrad", dict(lr=1e-2, amsgrad=True)),
        OptimConfig("maximize", dict(lr=1e-2, maximize=True)),
        OptimConfig("wd0", dict(lr=1e-2, weight_decay=0.0)),
        OptimConfig("beta03", dict(lr=1e-2, betas=(0.3, 0.9), weight_decay=0.2)),
        OptimConfig("all", dict(lr=2e-2, betas=(0.4, 0.95), weight_decay=0.1, amsgrad=True, maximize=True)),
    ),
    _adamw_override, _adam_keys,
)

def _lr_wd_override(kw, lr=1e-2):
    return {
        "lr": kw.get("lr", lr) * 0.37,
        "weight_decay": 0.03 if kw.get("weight_decay", 0.0) == 0 else 0.0,
    }


def _keys(*always, **cond):
    """state keys: `always` plus each key in `cond` whose predicate on the
    group's kwargs holds."""
    def f(kw):
        out = set(always)
        out.update(k for k, pred in cond.items() if pred(kw))
        return out
    return f


ADAGRAD_INFO = OptimInfo(
    "Adagrad", fusedoptim.Adagrad, torch.optim.Adagrad,
    (
        OptimConfig("default", dict(lr=0.1)),
        OptimConfig("wd_decay", dict(lr=0.1, weight_decay=0.1, lr_decay=0.01)),
        OptimConfig("init_eps_max", dict(lr=0.05, initial_accumulator_value=0.1, eps=1e-3, maximize=True)),
    ),
    lambda kw: dict(_lr_wd_override(kw, 0.1), lr_decay=0.02), _keys("step", "sum"),
)

RMSPROP_INFO = OptimInfo(
    "RMSprop", fusedoptim.RMSprop, torch.optim.RMSprop,
    (
        OptimConfig("default", dict(lr=1e-2)),
        OptimConfig("centered", dict(lr=1e-2, centered=True, alpha=0.9)),
        OptimConfig("momentum_wd", dict(lr=1e-2, momentum=0.9, weight_decay=0.1)),
        OptimConfig("all", dict(lr=1e-2, alpha=0.3, eps=1e-4, centered=True, momentum=0.5, weight_decay=0.05,
                                maximize=True)),
    ),
    lambda kw: dict(_lr_wd_override(kw), centered=not kw.get("centered", False),
                    momentum=0.0 if kw.get("momentum", 0) else 0.7),
    _keys("step", "square_avg", momentum_buffer=lambda kw: kw.get("momentum", 0) > 0,
          grad_avg=lambda kw: kw.get("centered", False)),
    fused_oracle=False, all_shapes=False,
)

ADAMAX_INFO = OptimInfo(
    "Adamax", fusedoptim.Adamax, torch.optim.Adamax,
    (
        OptimConfig("default", dict(lr=2e-2)),
        OptimConfig("wd_max", dict(lr=2e-2, weight_decay=0.1, maximize=True)),
        OptimConfig("betas_eps", dict(lr=2e-2, betas=(0.3, 0.9), eps=1e-3)),
    ),
    lambda kw: dict(_lr_wd_override(kw), betas=(0.8, 0.99)), _keys("step", "exp_avg", "exp_inf"),
    fused_oracle=False, all_shapes=False,
)

NADAM_INFO = OptimInfo(
    "NAdam", fusedoptim.NAdam, torch.optim.NAdam,
    (
        OptimConfig("default", dict(lr=2e-2)),
        OptimConfig("wd", dict(lr=2e-2, weight_decay=0.1, momentum_decay=0.01)),
        OptimConfig("decoupled_max", dict(lr=2e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
        OptimConfig("betas", dict(lr=2e-2, betas=(0.3, 0.9), eps=1e-4)),
    ),
    lambda kw: dict(_lr_wd_override(kw), betas=(0.8, 0.99)),
    _keys("step", "mu_product", "exp_avg", "exp_avg_sq"),
    fused_oracle=False, all_shapes=False,
)

RADAM_INFO = OptimInfo(
    "RAdam", fusedoptim.RAdam, torch.optim.RAdam,
    (
        OptimConfig("default", dict(lr=1e-2)),
        OptimConfig("wd", dict(lr=1e-2, weight_decay=0.1)),
        OptimConfig("decoupled_max", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
        OptimConfig("fast_rect", dict(lr=1e-2, betas=(0.5, 0.8), eps=1e-4)),
    ),
    lambda kw: dict(_lr_wd_override(kw), betas=(0.8, 0.95)), _keys("step", "exp_avg", "exp_avg_sq"),
    fused_oracle=False, steps=9, all_shapes=False,
)

ADADELTA_INFO = OptimInfo(
    "Adadelta", fusedoptim.Adadelta, torch.optim.Adadelta,
    (
        OptimConfig("default", dict()),
        OptimConfig("wd_max", dict(lr=0.5, weight_decay=0.1, maximize=True)),
        OptimConfig("rho", dict(lr=1.0, rho=0.5, eps=1e-3)),
    ),
    lambda kw: dict(_lr_wd_override(kw, 1.0), rho=0.7), _keys("step", "square_avg", "acc_delta"),
    fused_oracle=False, all_shapes=False,
)

LION_INFO = OptimInfo(
    "Lion", fusedoptim.Lion, LionTorch,
    (
        OptimConfig("default", dict(lr=1e-3)),
        OptimConfig("wd_max", dict(lr=1e-3, weight_decay=0.1, maximize=True)),
        OptimConfig("coupled_betas", dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=False,
                                          betas=(0.3, 0.6))),
    ),
    lambda kw: dict(_lr_wd_override(kw, 1e-3), betas=(0.95, 0.98)), _keys("exp_avg"),
    fused_oracle=False, all_shapes=False,
)

LAMB_INFO = OptimInfo(
    "LAMB", fusedoptim.LAMB, LAMBTorch,
    (
        OptimConfig("default", dict(lr=1e-2)),
        OptimConfig("wd", dict(lr=1e-2, weight_decay=0.1)),
        OptimConfig("coupled_nobc_max", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=False,
                                             bias_correction=False, maximize=True)),
    ),
    lambda kw: dict(_lr_wd_override(kw), betas=(0.8, 0.99)), _keys("step", "exp_avg", "exp_avg_sq"),
    fused_oracle=False, all_shapes=False,
)

ADOPT_INFO = OptimInfo(
    "ADOPT", fusedoptim.ADOPT, ADOPTTorch,
    (
        OptimConfig("default", dict(lr=1e-2)),
        OptimConfig("wd_max", dict(lr=1e-2, weight_decay=0.1, maximize=True)),
        OptimConfig("decoupled_betas", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True,
                                            betas=(0.5, 0.9), eps=1e-4)),
    ),
    lambda kw: dict(_lr_wd_override(kw), betas=(0.8, 0.99)), _keys("step", "exp_avg", "exp_avg_sq"),
    fused_oracle=False, all_shapes=False,
)

OPTIMS = (SGD_INFO, ADAM_INFO, ADAMW_INFO, ADAGRAD_INFO, RMSPROP_INFO, ADAMAX_INFO, NADAM_INFO,
          RADAM_INFO, ADADELTA_INFO, LION_INFO, LAMB_INFO, ADOPT_INFO)

OPTIMS_BY_NAME = {o.name: o for o in OPTIMS}


def optim_configs():
    """[(OptimInfo, OptimConfig)] over the whole registry."""
    return [(o, c) for o in OPTIMS for c in o.configs]


def beyond_isa_subset(o: OptimInfo, c: OptimConfig) -> tuple:
    """The `beyond_isa_subset` mark for an option set outside the per-ISA
    parity subset (every option set whose oracle is torch's fused kernel, the
    first of the others): `-m "not beyond_isa_subset"` (or
    FUSEDOPTIM_PARITY_SUBSET=isa, see conftest.py) leaves it out."""
    return (pytest.mark.beyond_isa_subset,) if not o.fused_oracle and c is not o.configs[0] else ()


def optim_config_params():
    return [pytest.param(o, c, id=f"{o.name}-{c.id}", marks=beyond_isa_subset(o, c))
            for o, c in optim_configs()]


# ---------------------------------------------------------------------- dtypes --

DTYPES = (torch.float32, torch.float64)
INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64}

# ---------------------------------------------------------------------- shapes --


@dataclasses.dataclass(frozen=True)
class ShapeCase:
    """A param shape and memory layout.

    param_layout / grad_layout: "C" contiguous, "T" the 2-d transpose of a
    contiguous tensor (same values, strides reversed). grad_layout "same"
    means the grad has the param's strides (what autograd produces)."""

    id: str
    shape: tuple
    param_layout: str = "C"
    grad_layout: str = "same"
    slow: bool = False
    # big enough to be split across threads: run for every option set only
    # under `slow`, by default for the first and last option set of each optimizer
    medium: bool = False

    @property
    def grad_layout_resolved(self):
        return self.param_layout if self.grad_layout == "same" else self.grad_layout

    @property
    def standard(self) -> bool:
        """Contiguous param and grad: torch's fused kernel is a valid oracle
        on this very layout."""
        return self.param_layout == "C" and self.grad_layout_resolved == "C"

    @property
    def strides_differ(self) -> bool:
        return self.param_layout != self.grad_layout_resolved

    def __repr__(self):
        return self.id


SHAPES = (
    ShapeCase("0d", ()),
    ShapeCase("1", (1,)),
    ShapeCase("5", (5,)),
    ShapeCase("12", (12,)),  # shorter than one AVX-512 vector, longer than an AVX2 one
    ShapeCase("17", (17,)),
    ShapeCase("45", (45,)),  # remainder 13 (fp32, AVX-512) / 5 (fp64)
    ShapeCase("33x7", (33, 7)),
    ShapeCase("empty", (0,)),
    ShapeCase("empty3x0", (3, 0)),
    ShapeCase("T33x7", (33, 7), param_layout="T"),                       # transposed Parameter
    ShapeCase("T33x7_gradC", (33, 7), param_layout="T", grad_layout="C"),  # ... with a contiguous grad
    ShapeCase("33x7_gradT", (33, 7), grad_layout="T"),                   # grad strides != param strides
    ShapeCase("70001", (70001,), medium=True),  # more than one parallel task (grain 32768 elements)
    ShapeCase("1000003", (1000003,), slow=True),
)


# the subset the family's optimizers run on (see OptimInfo.all_shapes)
SHAPES_FAMILY_IDS = ("0d", "5", "45", "33x7", "empty", "T33x7_gradC", "33x7_gradT", "70001")


def shape_params(shapes=SHAPES):
    out = []
    for s in shapes:
        marks = (pytest.mark.slow,) if s.slow else ()
        out.append(pytest.param(s, id=s.id, marks=marks))
    return out


def parity_cases(shapes=SHAPES):
    """pytest params (info, config, shape) over the registry product, with
    `slow` marks on the big shapes (see ShapeCase.slow / .medium)."""
    out = []
    for o in OPTIMS:
        for i, c in enumerate(o.configs):
            for sh in shapes:
                if not o.all_shapes and sh.id not in SHAPES_FAMILY_IDS and not sh.slow:
                    continue
                slow = sh.slow or (sh.medium and i not in (0, len(o.configs) - 1))
                marks = ((pytest.mark.slow,) if slow else ()) + beyond_isa_subset(o, c)
                out.append(pytest.param(o, c, sh, id=f"{o.name}-{c.id}-{sh.id}", marks=marks))
    return out


def to_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values, given memory layout ("C" or "T": 2-d transposed storage)."""
    if layout == "C" or t.dim() != 2:
        return t.contiguous()
    if layout == "T":
        return t.t().contiguous().t()
    raise ValueError(layout)


# ------------------------------------------------------------------ grads ---------

GRAD_SCALES = (1.0, 0.01, 100.0, 1.0, 3.0, 0.5, 10.0, 1e-3)
N_PARAMS = 6
NO_GRAD = 4  # index of the param that never gets a grad


def default_grad(step: int, k: int, shape, dtype) -> torch.Tensor:
    """Deterministic grad for param k at step `step` (changes every step)."""
    g = torch.Generator().manual_seed(7919 * step + 104729 * k + 12345)
    return torch.randn(shape, generator=g, dtype=dtype) * GRAD_SCALES[step % len(GRAD_SCALES)]


def param_shapes(case: ShapeCase):
    return [case.shape, case.shape, (5,), case.shape, (3,), (4,)]


def initial_values(case: ShapeCase, dtype, seed: int = 0):
    """Contiguous initial values of P0..P5."""
    g = torch.Generator().manual_seed(1000 + seed)
    return [torch.randn(s, generator=g, dtype=dtype) for s in param_shapes(case)]


def make_params(case: ShapeCase, dtype, contiguous: bool = False, seed: int = 0):
    vals = initial_values(case, dtype, seed)
    params = []
    for k, v in enumerate(vals):
        lay = "C" if (contiguous or k in (2, 4, 5)) else case.param_layout
        params.append(torch.nn.Parameter(to_layout(v, lay)))
    return params


def make_groups(params, group1_override):
    return [
        {"params": params[0:3]},
        dict({"params": params[3:6]}, **group1_override),
    ]


def snapshot(opt, params):
    """[(param clone, {state key: clone})] for P0..P5, in order."""
    out = []
    for p in params:
        st = opt.state.get(p, {}) if p in opt.state else None
        st_copy = None
        if st is not None:
            st_copy = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in st.items()}
        out.append((p.detach().clone(), st_copy))
    return out


def run_trajectory(
    cls,
    kwargs: dict,
    case: ShapeCase,
    dtype,
    *,
    steps: int = 5,
    contiguous: bool = False,
    grads_like_param: bool = False,
    override: dict | None = None,
    grad_fn: Callable = default_grad,
    seed: int = 0,
):
    """Build P0..P5 (see module doc), step `steps` times with fresh grads, and
    return one snapshot per step.

    `contiguous=True` builds the same values in contiguous memory (params and
    grads). `grads_like_param=True` keeps the params' layout but gives every
    grad its param's strides. torch's fused CPU kernel is only valid when a
    grad has its param's strides, so those are the layouts it is run on."""
    params = make_params(case, dtype, contiguous=contiguous, seed=seed)
    groups = make_groups(params, override or {})
    opt = cls(groups, **kwargs)
    snaps = []
    for s in range(steps):
        for k, p in enumerate(params):
            if k == NO_GRAD:
                p.grad = None
                continue
            g = grad_fn(s, k, p.shape, dtype)
            if contiguous or k in (2, 5):
                lay = "C"
            elif grads_like_param:
                lay = case.param_layout
            else:
                lay = case.grad_layout_resolved
            p.grad = to_layout(g, lay)
        opt.step()
        snaps.append(snapshot(opt, params))
    return snaps, opt, params


# ---------------------------------------------------------------- ISA matching --

ISA_TO_TORCH = {"avx512": "AVX512", "avx2": "AVX2", "baseline": "DEFAULT"}


def fo_isa() -> str:
    return fusedoptim._C.get_isa()


def torch_isa() -> str:
    return torch.backends.cpu.get_cpu_capability()


def _x86() -> bool:
    import platform
    return platform.machine().lower() in ("x86_64", "amd64")


def isa_matches() -> bool:
    """fusedoptim's kernel variant corresponds to torch's CPU capability, so
    float32 results must be bit-identical to torch's fused kernels. x86 only:
    elsewhere fusedoptim builds its baseline (no FMA) while torch's NEON/SVE
    kernels fuse, so results agree within tolerance, not bit for bit."""
    return _x86() and ISA_TO_TORCH.get(fo_isa()) == torch_isa()


def forms_position_independent() -> bool:
    """No FMA on either side (fusedoptim baseline, torch DEFAULT): every element
    rounds the same wherever it sits in memory, so results on a transposed
    layout are bit-identical to results on its contiguous clone."""
    return _x86() and fo_isa() == "baseline" and torch_isa() == "DEFAULT"


# Tolerances of the comparisons that are not bit-exact (an FMA against
# separate roundings, torch's for-loop path as the oracle), derived from the
# values' magnitude, never a fixed absolute bound that holds on one machine:
#   |actual - expected| <= RTOL * |expected| + ULPS * eps(dtype) * max|expected|
# The relative term covers each element; the absolute term is ULPS units in
# the last place of the tensor's largest finite value, the scale at which a
# cancellation (m = beta*m + (1-beta)*g near 0, p - lr*u near 0) loses bits.
FP32_RTOL, FP32_ULPS = 1e-5, 64
FP64_RTOL, FP64_ULPS = 1e-12, 64
FP32_ATOL = FP64_ATOL = None  # (no fixed absolute bound: None = magnitude_atol)
ULPS = {torch.float32: FP32_ULPS, torch.float64: FP64_ULPS, torch.bfloat16: 4, torch.float16: 4}
RTOL = {torch.float32: FP32_RTOL, torch.float64: FP64_RTOL, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def magnitude_atol(expected: torch.Tensor, ulps: float | None = None) -> float:
    """ULPS units in the last place of the tensor's largest finite |value|
    (the smallest normal number's ulp for an all-zero or empty tensor)."""
    e = expected.detach()
    dt = e.dtype if e.is_floating_point() else torch.float32
    fin = e[torch.isfinite(e)].abs() if e.numel() else e
    scale = max(float(fin.max()) if fin.numel() else 0.0, torch.finfo(dt).tiny)
    return (ULPS.get(dt, 64) if ulps is None else ulps) * torch.finfo(dt).eps * scale


# ---------------------------------------------------------------- comparisons ---


def _first_mismatch(a, e, mask):
    idx = mask.nonzero()
    i = tuple(idx[0].tolist()) if idx.numel() else ()
    return i, a[i].item() if a.dim() else a.item(), e[i].item() if e.dim() else e.item()


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Same shape and dtype; NaNs at the same positions (any payload); every
    other element bit-identical (so -0.0 != +0.0)."""
    assert torch.is_tensor(actual) and torch.is_tensor(expected), what
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    a = actual.detach().contiguous()
    e = expected.detach().contiguous()
    if not a.is_floating_point():
        assert torch.equal(a, e), f"{what}: {a} != {e}"
        return
    an, en = torch.isnan(a), torch.isnan(e)
    if not torch.equal(an, en):
        diff = an ^ en
        i, av, ev = _first_mismatch(a, e, diff)
        raise AssertionError(
            f"{what}: NaN positions differ at {int(diff.sum())} elements (first {i}: got {av!r}, expected {ev!r})"
        )
    iv = INT_VIEW.get(a.dtype)
    if iv is None:  # other float dtypes: value equality is all we can do simply
        bad = (a != e) & ~an
    else:
        bad = (a.view(iv) != e.view(iv)) & ~an
    if bool(bad.any()):
        i, av, ev = _first_mismatch(a, e, bad)
        absdiff = (a.double() - e.double()).abs()
        absdiff = absdiff[bad & torch.isfinite(absdiff)]
        mx = absdiff.max().item() if absdiff.numel() else float("nan")
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {a.numel()} elements not bit-identical "
            f"(first at {i}: got {av!r}, expected {ev!r}; max |diff| {mx:.3e})"
        )


def assert_close(actual, expected, rtol, atol, what=""):
    """Tolerance comparison; NaN positions must agree, infinities must match."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    torch.testing.assert_close(
        actual.detach(), expected.detach(), rtol=rtol, atol=atol, equal_nan=True,
        msg=lambda m: f"{what}: {m}",
    )


def compare_tensor(actual, expected, mode, what, rtol=None, atol=None):
    """mode: "bitwise" or "close" (rtol by dtype unless given; the absolute
    part from the values' magnitude, `magnitude_atol`, unless given)."""
    if mode == "bitwise":
        assert_bitwise_equal(actual, expected, what)
        return
    assert_close_ulps(actual, expected, what, rtol, atol)


def assert_close_ulps(actual, expected, what="", rtol=None, atol=None):
    """assert_close with RTOL[dtype] and the magnitude-derived absolute part."""
    if rtol is None:
        rtol = RTOL.get(expected.dtype, FP32_RTOL)
    if atol is None:
        atol = magnitude_atol(expected)
    assert_close(actual, expected, rtol, atol, what)


def compare_state(actual, expected, mode, what, check_step_dtype=True, rtol=None, atol=None):
    """Per-param state dicts: same keys; `step` same value (and dtype, CPU
    scalar); tensors compared with `mode`."""
    if expected is None or len(expected) == 0:
        assert not actual, f"{what}: expected no state, got keys {sorted(actual or {})}"
        return
    assert actual is not None, f"{what}: missing state (expected keys {sorted(expected)})"
    assert set(actual) == set(expected), f"{what}: state keys {sorted(actual)} != {sorted(expected)}"
    for k in expected:
        a, e = actual[k], expected[k]
        if k == "step":
            assert torch.is_tensor(a) == torch.is_tensor(e), f"{what}: step type {type(a)} vs {type(e)}"
            if torch.is_tensor(e):
                if check_step_dtype:
                    assert a.dtype == e.dtype, f"{what}: step dtype {a.dtype} != {e.dtype}"
                    assert a.device == e.device, f"{what}: step device {a.device} != {e.device}"
                    assert a.shape == e.shape, f"{what}: step shape {tuple(a.shape)} != {tuple(e.shape)}"
                assert float(a) == float(e), f"{what}: step {float(a)} != {float(e)}"
            else:
                assert float(a) == float(e), f"{what}: step {a} != {e}"
            continue
        if e is None or a is None:
            assert a is None and e is None, f"{what}: {k} is {a!r} vs {e!r}"
            continue
        compare_tensor(a, e, mode, f"{what} state[{k!r}]", rtol, atol)


def compare_trajectories(actual, expected, mode, label="", state=True, rtol=None, atol=None,
                         check_step_dtype=True):
    assert len(actual) == len(expected)
    for s, (snap_a, snap_e) in enumerate(zip(actual, expected)):
        for k, ((pa, sa), (pe, se)) in enumerate(zip(snap_a, snap_e)):
            what = f"{label} step {s + 1} P{k}"
            compare_tensor(pa, pe, mode, what, rtol, atol)
            if state:
                compare_state(sa, se, mode, what, check_step_dtype, rtol, atol)


def fp32_mode() -> str:
    return "bitwise" if isa_matches() else "close"


def oracle_flags(info) -> dict:
    """torch flags of an optimizer's float32 oracle run: its fused CPU kernel
    where torch has one, else its for-loop path."""
    return {"fused": True} if info.fused_oracle else {"foreach": False}


def oracle_mode(info) -> str:
    """How float32 results compare with that oracle."""
    return fp32_mode() if info.fused_oracle else "close"


#: fusedoptim's own options, which its param groups carry on top of torch's
EXTRA_GROUP_KEYS = ("l1_weight_decay", "state_dtype", "master_weights", "stochastic_rounding",
                    "max_grad_norm", "decoupled_weight_decay")


def torch_group_view(fo_group: dict, torch_group: dict) -> dict:
    """fusedoptim's param group without the options torch's group lacks."""
    return {k: v for k, v in fo_group.items() if k in torch_group or k not in EXTRA_GROUP_KEYS}


# ----------------------------------------------------------------- special values --

SPECIALS_F32 = (
    float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e-40, -1e-40, 0.0, -0.0,
    1.4e-45, 1e30, -1e-30,
)


def special_grad(step: int, k: int, shape, dtype) -> torch.Tensor:
    """default_grad with NaN, +-inf, huge (3e38), denormals and +-0 sprinkled
    in, at positions that move every step (some land in vector tails)."""
    g = default_grad(step, k, shape, dtype)
    n = g.numel()
    if n == 0:
        return g
    flat = g.reshape(-1).clone()
    vals = torch.tensor(SPECIALS_F32, dtype=dtype)
    for j, v in enumerate(vals):
        pos = (j * 7 + step * 3 + k) % n
        if (j + step) % 3 != 2:  # not every special every step
            flat[pos] = v
    return flat.reshape(shape)


def env_long_fuzz() -> bool:
    return os.environ.get("FUSEDOPTIM_FUZZ", "").lower() == "long"

