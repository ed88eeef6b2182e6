"""Differential fuzzing against torch.optim (hypothesis).

Each example draws, from the registry (tests/registry.py, so new optimizers
are fuzzed without edits here):
  - an optimizer and one of its registry option sets, with hyper-parameters
    redrawn (lr, weight_decay, betas, momentum, eps, ..., bool options);
  - a dtype (float32 / float64) and 1-3 param groups of 1-3 params each with
    their own hyper-parameters;
  - shapes: 0-d, empty, 1-d of any length up to 80, 2-d and 3-d, in
    contiguous, transposed (dense, non-contiguous) or strided (non-dense view
    whose holes hold NaN) layouts;
  - per step and param a grad: None, zeros, -0.0, random at scales from
    denormal to 1e20, NaN / +-inf / huge / denormal values sprinkled in, all
    NaN, or one inf; each in the param's layout, contiguous, transposed or
    strided;
  - hyper-parameter changes between steps (lr, possibly as a tensor, weight
    decay, betas, momentum, eps, maximize, ...).

After every step every param and every state tensor is compared with torch:
  float32  bit-identical to torch's fused CPU kernel (run with each grad in its
           param's layout, the only layout that kernel handles right) when
           fusedoptim's kernel variant matches torch's CPU capability; params
           that are not dense take torch's for-loop path inside fusedoptim and
           are compared bit for bit with torch's for-loop; optimizers torch
           has no fused CPU kernel for are compared with the for-loop within
           a tolerance
  float64  torch's for-loop path within 1e-12 relative (of the largest
           magnitude the tensor has held), non-dense params bit for bit
and where torch raises at some step fusedoptim must raise at the same step.

Profiles: the normal suite runs a short derandomized profile (fixed examples,
a few seconds); FUSEDOPTIM_FUZZ=long runs FUSEDOPTIM_FUZZ_EXAMPLES (default
2500) random examples per test:

    FUSEDOPTIM_FUZZ=long pytest tests/test_fuzz.py -q
"""
from __future__ import annotations

import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import registry as R  # noqa: E402
import trust_support as T  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LONG = R.env_long_fuzz()
EXAMPLES = int(os.environ.get("FUSEDOPTIM_FUZZ_EXAMPLES", "0")) or (2500 if LONG else 0)


def _settings(short: int):
    return settings(
        max_examples=EXAMPLES or short,
        deadline=None,
        derandomize=not LONG,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
        database=None,
    )


FUZZ_DTYPES = tuple(d for d in R.DTYPES if d in (torch.float32, torch.float64))
OPTIM_NAMES = sorted(R.OPTIMS_BY_NAME)

# ------------------------------------------------------------------ strategies --


@st.composite
def options(draw, info):
    """A registry option set with hyper-parameters redrawn; torch must accept it."""
    cfg = draw(st.sampled_from(info.configs))
    kw = dict(cfg.kwargs)
    for key, default in sorted(T.constructor_defaults(info.torch_cls).items()):
        if key in T.IMPL_FLAGS:
            continue
        if key in T.HP_POOLS:
            if draw(st.booleans()):
                kw[key] = draw(st.sampled_from(T.HP_POOLS[key]))
        elif isinstance(default, bool) and draw(st.integers(0, 3)) == 0:
            kw[key] = not kw.get(key, default)
    assume(T.valid_options(info, kw))
    return kw


@st.composite
def group_override(draw, info, kw):
    """Hyper-parameters of a second or third group, on top of the constructor's."""
    how = draw(st.sampled_from(["none", "registry", "random"]))
    if how == "none":
        return {}
    if how == "registry":
        ov = info.group1_override(kw)
    else:
        ov = {}
        keys = sorted(k for k in T.constructor_defaults(info.torch_cls) if k in T.HP_POOLS)
        for key in draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)) if keys else ():
            ov[key] = draw(st.sampled_from(T.HP_POOLS[key]))
    assume(T.valid_options(info, dict(kw, **ov)))
    return ov


@st.composite
def param_specs(draw):
    kind = draw(st.sampled_from(["0d", "empty", "1d", "1d", "2d", "2d", "3d"]))
    if kind == "0d":
        shape = ()
    elif kind == "empty":
        shape = draw(st.sampled_from([(0,), (3, 0), (0, 4)]))
    elif kind == "1d":
        shape = (draw(st.integers(1, 80)),)
    elif kind == "2d":
        shape = (draw(st.integers(1, 13)), draw(st.integers(1, 13)))
    else:
        shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    layouts = ["C"]
    if len(shape) >= 2:
        layouts.append("T")
    if len(shape) >= 1:
        layouts.append("S")
    return shape, draw(st.sampled_from(layouts)), draw(st.integers(0, 2**20))


GRAD_KINDS = ["none", "zeros", "negzeros", "normal", "normal", "normal", "special", "special",
              "allnan", "oneinf"]
SCALES = [1e-40, 1e-30, 1e-6, 1e-2, 1.0, 1.0, 100.0, 1e6, 1e20]


@st.composite
def grad_specs(draw):
    return (draw(st.sampled_from(GRAD_KINDS)), draw(st.sampled_from(SCALES)),
            draw(st.integers(0, 2**20)), draw(st.sampled_from(["same", "same", "C", "T", "S"])))


@st.composite
def hp_changes(draw, info, n_groups):
    """{group index: {key: value}} applied before a step (validated later)."""
    out = {}
    keys = sorted(k for k in T.constructor_defaults(info.torch_cls) if k in T.MUTABLE)
    if not keys:
        return out
    for _ in range(draw(st.integers(0, 2))):
        gi = draw(st.integers(0, n_groups - 1))
        key = draw(st.sampled_from(keys))
        if key == "maximize":
            val = draw(st.booleans())
        else:
            val = draw(st.sampled_from(T.HP_POOLS[key]))
            if key == "lr" and draw(st.integers(0, 4)) == 0:
                val = ("tensor", val)  # a tensor lr, as schedulers may write
        out.setdefault(gi, {})[key] = val
    return out


@st.composite
def examples(draw, names=None):
    info = R.OPTIMS_BY_NAME[draw(st.sampled_from(names or OPTIM_NAMES), label="optimizer")]
    kw = draw(options(info), label="options")
    dtype = draw(st.sampled_from(FUZZ_DTYPES), label="dtype")
    n_groups = draw(st.integers(1, 3), label="groups")
    groups = []
    for gi in range(n_groups):
        ov = {} if gi == 0 else draw(group_override(info, kw))
        specs = draw(st.lists(param_specs(), min_size=1, max_size=3))
        groups.append((ov, specs))
    n_params = sum(len(s) for _, s in groups)
    n_steps = draw(st.integers(1, 4), label="steps")
    steps = []
    for s in range(n_steps):
        changes = draw(hp_changes(info, n_groups)) if s else {}
        grads = draw(st.lists(grad_specs(), min_size=n_params, max_size=n_params))
        steps.append((changes, grads))
    return info, kw, dtype, groups, steps


# --------------------------------------------------------------- building runs --


def _specials(dtype):
    v = [float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e-40, -1e-40, 1.4e-45, 0.0, -0.0, 1e30]
    if dtype == torch.float64:
        v += [1e300, -1e300, 1e-310, 5e-324]
    return torch.tensor(v, dtype=dtype)


def grad_values(kind, scale, seed, shape, dtype):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * scale
    n = x.numel()
    if kind == "zeros":
        x.zero_()
    elif kind == "negzeros":
        x.zero_().neg_()
    elif kind == "special" and n:
        sp = _specials(dtype)
        flat = x.view(-1)
        k = int(torch.randint(1, max(2, n // 2) + 1, (), generator=g))
        pos = torch.randint(0, n, (k,), generator=g)
        which = torch.randint(0, sp.numel(), (k,), generator=g)
        flat[pos] = sp[which]
    elif kind == "allnan":
        x.fill_(float("nan"))
    elif kind == "oneinf" and n:
        x.view(-1)[int(torch.randint(0, n, (), generator=g))] = float("inf")
    return x


def in_layout(values: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values in the given memory layout: C contiguous, T dims reversed
    (dense, non-contiguous), S every other element of a NaN-filled buffer
    (not dense)."""
    if layout == "C" or values.dim() == 0:
        return values.contiguous()
    if layout == "T":
        if values.dim() < 2:
            return values.contiguous()
        rev = tuple(reversed(range(values.dim())))
        return values.permute(rev).contiguous().permute(rev)
    if layout == "S":
        shape = tuple(values.shape)
        base = torch.full(shape[:-1] + (2 * shape[-1],), float("nan"), dtype=values.dtype)
        out = base[..., ::2]
        out.copy_(values)
        return out
    raise ValueError(layout)


def _lr_value(v, dtype):
    """A tensor lr is made in the params' dtype: torch's for-loop path computes
    with a float32 tensor lr in float32 (step size relative error ~1e-8 on
    float64 params), where fusedoptim reads its value into a double."""
    if isinstance(v, tuple) and v and v[0] == "tensor":
        return torch.tensor(v[1], dtype=dtype)
    return v


def run(cls, kw, ex, how):
    """Run one example. how: "fo" (real layouts), "fused" (torch's fused
    kernel: non-dense params built contiguous, every grad in its param's
    layout) or "loop" (real layouts).
    -> (snapshots, (step index, exception) or None, params)."""
    info, _, dtype, groups, steps = ex
    params, gdicts = [], []
    for ov, specs in groups:
        ps = []
        for shape, layout, seed in specs:
            v = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
            if how == "fused" and layout == "S":
                layout = "C"
            ps.append(torch.nn.Parameter(in_layout(v, layout)))
        params += ps
        gdicts.append(dict(ov, params=ps))
    opt = cls(gdicts, **kw)
    snaps = []
    for s, (changes, grads) in enumerate(steps):
        for gi, ch in changes.items():
            for key, val in ch.items():
                opt.param_groups[gi][key] = _lr_value(val, dtype)
        for p, (kind, scale, seed, glayout) in zip(params, grads):
            if kind == "none":
                p.grad = None
                continue
            g = grad_values(kind, scale, seed, p.shape, dtype)
            if how == "fused" or glayout == "same":
                p.grad = g if p.is_contiguous() else torch.empty_like(p).copy_(g)
                if how == "fused" and not p.is_contiguous():
                    assert p.grad.stride() == p.stride()
            else:
                p.grad = in_layout(g, glayout)
        try:
            opt.step()
        except Exception as e:  # compared with torch's behaviour below
            return snaps, (s, e), params
        snaps.append(R.snapshot(opt, params))
    return snaps, None, params


def _changes_valid(ex):
    """Every group's hyper-parameters after each change pass torch's checks
    (a change torch would reject at construction is not a valid example)."""
    info, kw, _, groups, steps = ex
    hps = [dict(kw, **ov) for ov, _ in groups]
    for changes, _ in steps:
        for gi, ch in changes.items():
            hps[gi].update({k: (v[1] if isinstance(v, tuple) and v and v[0] == "tensor" else v)
                            for k, v in ch.items()})
            if not T.valid_options(info, hps[gi]):
                return False
    return True


def _dense_flags(ex):
    return [layout != "S" or math.prod(shape) <= 1 for _, specs in ex[3] for shape, layout, _ in specs]


def _fp64_close(a, e, scale, what):
    atol = R.FP64_RTOL * scale
    R.assert_close(a, e, R.FP64_RTOL, atol, what)


def _maxabs(t):
    if not torch.is_tensor(t) or t.numel() == 0 or not t.is_floating_point():
        return 0.0
    f = t.detach().abs()
    f = f[torch.isfinite(f)]
    return float(f.max()) if f.numel() else 0.0


def compare(ex, fo, ref_fused, ref_loop, label):
    """fo / ref_*: (snaps, error, params); ref_fused may be None. Errors are
    judged against torch's for-loop path (its CPU default) when it ran: torch
    2.13's fused SGD raises a TypeError where the for-loop is fine (a momentum
    group in which some params already have a momentum_buffer and a param gets
    its first grad); from such a step on, the for-loop is the oracle."""
    info, _, dtype, _, _ = ex
    dense = _dense_flags(ex)
    ref_err = (ref_loop or ref_fused)[1]
    fused_upto = len(ref_fused[0]) if ref_fused is not None else 0
    # errors: wherever torch raises, fusedoptim raises at the same step
    fo_err = fo[1]
    if fo_err is not None:
        assert ref_err is not None and ref_err[0] == fo_err[0], (
            f"{label}: fusedoptim raised at step {fo_err[0] + 1} where torch did not: {fo_err[1]!r}"
        )
    else:
        assert ref_err is None, f"{label}: torch raised at step {ref_err[0] + 1} ({ref_err[1]!r}), fusedoptim did not"
    n_steps = len(fo[0])
    scales = [0.0] * len(dense)
    for s in range(n_steps):
        for k, (pa, sa) in enumerate(fo[0][s]):
            what = f"{label} step {s + 1} P{k}"
            if not dense[k]:
                # fusedoptim hands non-dense params to torch's for-loop path
                pe, se = ref_loop[0][s][k]
                R.compare_tensor(pa, pe, "bitwise", what + " (non-dense, vs torch for-loop)")
                R.compare_state(sa, se, "bitwise", what + " (non-dense)", check_step_dtype=False)
            elif dtype == torch.float32 and s < fused_upto:
                pe, se = ref_fused[0][s][k]
                mode = R.fp32_mode()
                R.compare_tensor(pa, pe, mode, what + " vs torch fused")
                R.compare_state(sa, se, mode, what + " vs torch fused")
            elif dtype == torch.float32:
                pe, se = ref_loop[0][s][k]
                R.compare_tensor(pa, pe, "close", what + " vs torch for-loop")
                R.compare_state(sa, se, "close", what + " vs torch for-loop", check_step_dtype=False)
            else:
                pe, se = ref_loop[0][s][k]
                prev = [ref_loop[0][s - 1][k]] if s else []
                scales[k] = max([scales[k], 1.0, _maxabs(pe)] + [_maxabs(v) for v in (se or {}).values()]
                                + [_maxabs(x[0]) for x in prev])
                _fp64_close(pa, pe, scales[k], what + " vs torch for-loop (fp64)")
                R.compare_state(sa, se, "close", what + " vs torch for-loop (fp64)", check_step_dtype=False,
                                rtol=R.FP64_RTOL, atol=R.FP64_RTOL * scales[k])


def check_example(ex):
    info, kw, dtype, groups, steps = ex
    assume(_changes_valid(ex))
    label = (f"{info.name}{kw} {dtype} groups="
             f"{[(ov, [(sh, ly) for sh, ly, _ in sp]) for ov, sp in groups]}")
    note(label)
    note(f"steps={steps}")
    use_fused = dtype == torch.float32 and T.has_fused_oracle(info)
    need_loop = dtype != torch.float32 or not use_fused or not all(_dense_flags(ex))
    ref_fused = run(info.torch_cls, T.torch_kwargs(info, kw, "fused"), ex, "fused") if use_fused else None
    if ref_fused is not None and ref_fused[1] is not None:
        note(f"torch fused raised at step {ref_fused[1][0] + 1}: {ref_fused[1][1]!r}; for-loop oracle from there")
        need_loop = True
    ref_loop = run(info.torch_cls, T.torch_kwargs(info, kw, "loop"), ex, "loop") if need_loop else None
    fo = run(info.fo_cls, kw, ex, "fo")
    ref_err = (ref_loop or ref_fused)[1]
    if ref_err is not None and fo[1] is None and any(ch for ch, _ in steps[: ref_err[0] + 1]):
        # torch cannot take this mid-training change (e.g. RMSprop's momentum
        # switched on: no momentum_buffer, KeyError); fusedoptim may: not a
        # valid example to compare
        note(f"torch raised after a hyper-parameter change: {ref_err[1]!r}")
        assume(False)
    compare(ex, fo, ref_fused, ref_loop, label)


# ---------------------------------------------------------------------- tests --


@_settings(short=120)
@given(ex=examples())
def test_fuzz_against_torch(ex):
    check_example(ex)


@pytest.mark.parametrize("name", OPTIM_NAMES)
def test_fuzz_each_optimizer(name):
    """A few examples per optimizer, so every registry optimizer is fuzzed in
    the short profile whatever the draw above picks."""
    @_settings(short=12)
    @given(ex=examples(names=[name]))
    def inner(ex):
        check_example(ex)

    inner()


@_settings(short=40)
@given(n=st.integers(1, 80), data=st.data())
def test_single_tensor_any_length_float32(n, data):
    """One contiguous float32 tensor of every length 1..80: each split into
    vector body and remainder torch's kernels make, bit-exact where the ISAs
    match (and the comparison shape the fused oracle is defined on)."""
    name = data.draw(st.sampled_from(OPTIM_NAMES), label="optimizer")
    info = R.OPTIMS_BY_NAME[name]
    kw = data.draw(options(info), label="options")
    steps = data.draw(st.lists(grad_specs(), min_size=1, max_size=4), label="grads")
    ex = (info, kw, torch.float32, [({}, [((n,), "C", n)])], [({}, [g]) for g in steps])
    check_example(ex)
