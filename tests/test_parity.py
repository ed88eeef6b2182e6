"""Registry-driven parity with torch.optim (see tests/registry.py).

Oracles:
  float32  torch's fused CPU kernel (same class, same options, fused=True):
           bit-identical when fusedoptim's kernel variant matches torch's CPU
           capability (avx512<->AVX512, avx2<->AVX2, baseline<->DEFAULT), else
           a tight tolerance. torch's fused kernel treats param, grad and state
           as flat memory, so it is wrong when a grad's strides differ from its
           param's: the bit-exact oracle is torch fused with every grad given
           its param's layout (same values). On top of that, for every
           non-contiguous layout fusedoptim is compared with torch fused on
           contiguous clones (bit-exact where no FMA is involved, see
           test_parity_float32) and with torch's for-loop path on the real
           layout (tolerance).
  float64  torch's for-loop path (foreach=False) within 1e-12 relative.
  Optimizers torch has no fused CPU kernel for (RMSprop, Adamax, NAdam, RAdam,
  Adadelta; Lion and LAMB, whose oracle is fusedoptim._reference's plain-torch
  implementation): float32 against torch's for-loop path within 1e-5
  relative (the fused kernel rounds once where torch's op-by-op path rounds
  each op), float64 as above.

Run once per matching ISA pair, e.g.
    FUSEDOPTIM_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 pytest tests/test_parity.py
    FUSEDOPTIM_ISA=baseline ATEN_CPU_CAPABILITY=default pytest tests/test_parity.py
"""
import pytest
import torch

import registry as R

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fused(kwargs):
    return dict(kwargs, fused=True)


def _forloop(kwargs):
    return dict(kwargs, foreach=False)


def _check_state_layout(info, fo_params, fo_opt, ref_params, ref_opt, label):
    """Adam/AdamW state tensors are created like the param (preserve_format),
    as torch's for-loop path does on the same layout."""
    if info.name == "SGD":
        return
    for k, (pf, pr) in enumerate(zip(fo_params, ref_params)):
        sf, sr = fo_opt.state.get(pf), ref_opt.state.get(pr)
        if not sr:
            continue
        for key, v in sr.items():
            if torch.is_tensor(v) and v.dim() > 0 and v.numel() > 1:
                assert sf[key].stride() == v.stride(), (
                    f"{label} P{k} state[{key!r}] strides {sf[key].stride()} != torch's {v.stride()}"
                )


def _check_state_dict_keys(fo_opt, ref_opt, label):
    """Which params have (non-empty) state, and under which keys: as torch."""
    fs = {k: set(v) for k, v in fo_opt.state_dict()["state"].items() if v}
    ts = {k: set(v) for k, v in ref_opt.state_dict()["state"].items() if v}
    assert fs == ts, f"{label}: state_dict state keys {fs} != torch's {ts}"


# --------------------------------------------------------------------- float32 --


@pytest.mark.parametrize("info,config,shape", R.parity_cases())
def test_parity_float32(info, config, shape):
    dtype = torch.float32
    override = info.group1_override(config.kwargs)
    label = f"{info.name}[{config.id}] {shape.id} fp32 isa={R.fo_isa()}/{R.torch_isa()}"
    mode = R.fp32_mode()
    steps = info.steps

    fo, fo_opt, fo_params = R.run_trajectory(info.fo_cls, config.kwargs, shape, dtype, override=override,
                                             steps=steps)
    if not info.fused_oracle:
        loop, loop_opt, loop_params = R.run_trajectory(
            info.torch_cls, _forloop(config.kwargs), shape, dtype, override=override, steps=steps
        )
        R.compare_trajectories(fo, loop, "close", f"{label} vs torch for-loop")
        _check_state_dict_keys(fo_opt, loop_opt, label)
        _check_state_layout(info, fo_params, fo_opt, loop_params, loop_opt, label)
        for k, kw in ((0, config.kwargs), (3, dict(config.kwargs, **override))):
            st = fo_opt.state.get(fo_params[k]) or {}
            assert set(st) == info.state_keys(kw), f"{label} P{k}: state keys {sorted(st)}"
        return
    # torch fused where it is valid: every grad in its param's layout (for
    # contiguous params and grads that is this very run)
    ref, ref_opt, ref_params = R.run_trajectory(
        info.torch_cls, _fused(config.kwargs), shape, dtype, override=override, grads_like_param=True,
    )
    R.compare_trajectories(fo, ref, mode, f"{label} vs torch fused")
    _check_state_dict_keys(fo_opt, ref_opt, label)
    # the registry's expectation of the state keys, per group
    for k, kw in ((0, config.kwargs), (3, dict(config.kwargs, **override))):
        st = fo_opt.state.get(fo_params[k]) or {}
        assert set(st) == info.state_keys(kw), f"{label} P{k}: state keys {sorted(st)}"
    # state for a param that never had a grad only where torch makes it
    # eagerly (Adagrad creates its state in the constructor)
    assert bool(fo_opt.state.get(fo_params[R.NO_GRAD])) == bool(ref_opt.state.get(ref_params[R.NO_GRAD])), (
        f"{label}: state for the param that never had a grad differs from torch's"
    )

    if not shape.standard:
        # torch fused on contiguous clones (same values). Bit-exact only where
        # no FMA is involved: with FMA, torch's kernels (and fusedoptim's, to
        # match them) round the vector body and the remainder of a tensor's
        # memory differently, and a transposed tensor's remainder holds other
        # elements than its contiguous clone's.
        clone_mode = mode if R.forms_position_independent() else "close"
        ref_c, _, _ = R.run_trajectory(info.torch_cls, _fused(config.kwargs), shape, dtype,
                                       override=override, contiguous=True)
        R.compare_trajectories(fo, ref_c, clone_mode, f"{label} vs torch fused on contiguous clones")
        # the real layout: torch's (correct) for-loop path, within tolerance
        loop, loop_opt, loop_params = R.run_trajectory(
            info.torch_cls, _forloop(config.kwargs), shape, dtype, override=override
        )
        R.compare_trajectories(fo, loop, "close", f"{label} vs torch for-loop", check_step_dtype=False)
        _check_state_layout(info, fo_params, fo_opt, loop_params, loop_opt, label)
    # the params keep their layout
    for k, (p, q) in enumerate(zip(fo_params, R.make_params(shape, dtype))):
        assert p.stride() == q.stride(), f"{label} P{k}: param strides changed {q.stride()} -> {p.stride()}"


# --------------------------------------------------------------------- float64 --


@pytest.mark.parametrize("info,config,shape", R.parity_cases())
def test_parity_float64(info, config, shape):
    dtype = torch.float64
    override = info.group1_override(config.kwargs)
    label = f"{info.name}[{config.id}] {shape.id} fp64"
    fo, fo_opt, fo_params = R.run_trajectory(info.fo_cls, config.kwargs, shape, dtype, override=override,
                                             steps=info.steps)
    loop, loop_opt, loop_params = R.run_trajectory(
        info.torch_cls, _forloop(config.kwargs), shape, dtype, override=override, steps=info.steps
    )
    R.compare_trajectories(fo, loop, "close", f"{label} vs torch for-loop",
                           rtol=R.FP64_RTOL)
    _check_state_dict_keys(fo_opt, loop_opt, label)
    _check_state_layout(info, fo_params, fo_opt, loop_params, loop_opt, label)


# ---------------------------------------------------------------- NaN / inf --------

# sizes whose remainder (numel % 16) is < 8: NaN/inf semantics are tested here,
# the vector/remainder split in test_every_size_up_to_64
SPECIAL_SHAPES = [
    R.ShapeCase("37", (37,)),
    R.ShapeCase("7x5", (7, 5)),
    R.ShapeCase("T7x5_gradC", (7, 5), param_layout="T", grad_layout="C"),
]


@pytest.mark.parametrize("shape", R.shape_params(SPECIAL_SHAPES))
@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_nan_inf_float32(info, config, shape):
    """NaN, +-inf, 3e38, denormals, +-0 in the grads: exactly torch fused's
    results (NaN positions equal, everything else bit-identical)."""
    dtype = torch.float32
    override = info.group1_override(config.kwargs)
    label = f"{info.name}[{config.id}] {shape.id} specials fp32"
    fo, _, _ = R.run_trajectory(info.fo_cls, config.kwargs, shape, dtype, override=override,
                                grad_fn=R.special_grad, steps=4)
    if info.fused_oracle:
        ref, _, _ = R.run_trajectory(info.torch_cls, _fused(config.kwargs), shape, dtype, override=override,
                                     grad_fn=R.special_grad, steps=4, grads_like_param=True)
        mode = R.fp32_mode()
    else:
        ref, _, _ = R.run_trajectory(info.torch_cls, _forloop(config.kwargs), shape, dtype, override=override,
                                     grad_fn=R.special_grad, steps=4)
        mode = "close"
    # make sure the specials actually reached the kernel's outputs (the test
    # tests something): the params or, for an optimizer that bounds its steps
    # (ADOPT clips the normalised grad), the state
    def nonfinite(t):
        return torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()
    assert any(nonfinite(p) or any(nonfinite(v) for v in (st or {}).values()) for p, st in fo[-1]), label
    R.compare_trajectories(fo, ref, mode, label)


@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_nan_inf_float64(info, config):
    dtype = torch.float64
    shape = R.ShapeCase("37", (37,))
    override = info.group1_override(config.kwargs)
    label = f"{info.name}[{config.id}] specials fp64"
    fo, _, _ = R.run_trajectory(info.fo_cls, config.kwargs, shape, dtype, override=override,
                                grad_fn=R.special_grad, steps=4)
    loop, _, _ = R.run_trajectory(info.torch_cls, _forloop(config.kwargs), shape, dtype, override=override,
                                  grad_fn=R.special_grad, steps=4)
    R.compare_trajectories(fo, loop, "close", label, rtol=R.FP64_RTOL)


def test_signed_zero_is_checked():
    """The comparison itself: -0.0 and +0.0 are different bits."""
    with pytest.raises(AssertionError):
        R.assert_bitwise_equal(torch.tensor([0.0, 1.0]), torch.tensor([-0.0, 1.0]))
    R.assert_bitwise_equal(torch.tensor([float("nan"), 1.0]), torch.tensor([-float("nan"), 1.0]))
    with pytest.raises(AssertionError):
        R.assert_bitwise_equal(torch.tensor([float("nan"), 1.0]), torch.tensor([1.0, float("nan")]))


SIGNED_ZERO_CASES = [
    ("SGD", dict(lr=1.0)),  # p - 1.0 * g with p == g -> +0.0; p=-0.0, g=+0.0 -> -0.0
    ("SGD", dict(lr=1.0, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, betas=(0.0, 0.999), maximize=True)),  # lerp weight 1 (>= 0.5 branch)
    ("Adam", dict(lr=1e-3, betas=(0.5, 0.999))),  # lerp weight exactly 0.5
    ("AdamW", dict(lr=1e-3, betas=(0.3, 0.9), maximize=True, amsgrad=True)),
]


@pytest.mark.parametrize("n", [1, 16, 24, 33])
@pytest.mark.parametrize("name,kw", SIGNED_ZERO_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SIGNED_ZERO_CASES)])
def test_signed_zero_results(name, kw, n):
    """Updates that produce -0.0 / +0.0 (zero grads, maximize negating them,
    zero params) give torch fused's sign bits, in the vector body and in the
    remainder of a tensor."""
    info = R.OPTIMS_BY_NAME[name]
    dtype = torch.float32
    vals = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.0, -0.0, 2.5, 0.0] * 5, dtype=dtype)[:n]
    grads = [torch.tensor([0.0, 0.0, 1.0, -1.0, -0.0, -0.0, 2.5, 1e-45] * 5, dtype=dtype)[:n],
             torch.zeros(n, dtype=dtype), -torch.zeros(n, dtype=dtype)]
    outs = []
    for cls, extra in ((info.fo_cls, {}), (info.torch_cls, {"fused": True})):
        p = torch.nn.Parameter(vals.clone())
        opt = cls([p], **kw, **extra)
        snaps = []
        for g in grads:
            p.grad = g.clone()
            opt.step()
            snaps.append((p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}))
        outs.append(snaps)
    for s, ((pa, sa), (pb, sb)) in enumerate(zip(*outs)):
        R.compare_tensor(pa, pb, R.fp32_mode(), f"{name}{kw} n={n} signed zeros step {s + 1}")
        R.compare_state(sa, sb, R.fp32_mode(), f"{name}{kw} n={n} signed zeros step {s + 1}")


REMAINDER_CONFIGS = [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.037, momentum=0.6, dampening=0.2, weight_decay=0.03)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.3, 0.9))),
]


@pytest.mark.parametrize("grads", ["normal", "specials"])
@pytest.mark.parametrize("dtype", R.DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", REMAINDER_CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REMAINDER_CONFIGS)])
def test_every_size_up_to_64(name, kw, dtype, grads):
    """Each size 1..64 on its own: every split of a tensor into torch's vector
    body and scalar remainder (whose rounding differs under FMA) is covered.
    float32 must be bit-identical to torch fused (ISAs matching); float64
    within 1e-12 of torch's for-loop. "specials" puts NaN, +-inf, 3e38,
    denormals and +-0 into the grads."""
    info = R.OPTIMS_BY_NAME[name]
    fp32 = dtype == torch.float32
    mode = R.fp32_mode() if fp32 else "close"
    oracle = {"fused": True} if fp32 else {"foreach": False}
    bad = []
    for n in range(1, 65):
        outs = []
        for cls, extra in ((info.fo_cls, {}), (info.torch_cls, oracle)):
            p = torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=dtype))
            opt = cls([p], **kw, **extra)
            for t in range(4):
                if grads == "specials":
                    g = R.special_grad(t, 0, (n,), dtype)
                else:
                    g = torch.randn(n, generator=torch.Generator().manual_seed(t), dtype=dtype) * (10.0 ** (t % 3 - 1))
                p.grad = g
                opt.step()
            outs.append((p.detach().clone(), dict(opt.state[p])))
        try:
            R.compare_tensor(outs[0][0], outs[1][0], mode, "param")
            R.compare_state(outs[0][1], outs[1][1], mode, "state", check_step_dtype=fp32)
        except AssertionError as e:
            bad.append((n, str(e).split(":")[0] + ":" + str(e).split(":")[1][:40]))
    assert not bad, (
        f"{name}{kw} {dtype} isa={R.fo_isa()}/{R.torch_isa()}: differs from torch "
        f"{'fused' if fp32 else 'for-loop'} for "
        f"sizes {[n for n, _ in bad]} (e.g. {bad[0]})"
    )


@pytest.mark.parametrize("n", [5, 21, 16])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_amsgrad_nan_like_torch(name, n):
    """amsgrad's running max when exp_avg_sq becomes NaN (a NaN grad) after a
    finite or infinite max: torch fused's max_exp_avg_sq, element for element
    (its vector body propagates NaN, its scalar remainder keeps the old max)."""
    info = R.OPTIMS_BY_NAME[name]
    grads = [torch.ones(n), torch.full((n,), float("inf")), torch.full((n,), float("nan")), torch.ones(n)]
    outs = []
    for cls, extra in ((info.fo_cls, {}), (info.torch_cls, {"fused": True})):
        p = torch.nn.Parameter(torch.ones(n))
        opt = cls([p], lr=0.01, amsgrad=True, **extra)
        snaps = []
        for g in grads:
            p.grad = g.clone()
            opt.step()
            snaps.append(opt.state[p]["max_exp_avg_sq"].clone())
        outs.append(snaps)
    for s, (a, b) in enumerate(zip(*outs)):
        R.compare_tensor(a, b, "bitwise", f"{name} n={n} max_exp_avg_sq step {s + 1}")


# ------------------------------------------------- torch's fused bug, our fix ------


def _run_simple(cls, p, grads, **kw):
    opt = cls([p], **kw)
    for g in grads:
        p.grad = g
        opt.step()
    return p.detach().clone()


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_torch_fused_is_wrong_on_strided_grads_and_we_are_right(name):
    """torch 2.13's fused CPU kernels treat param and grad as flat memory:
    with a transposed param and a contiguous grad they apply the wrong grad
    elements. Prove it, then prove fusedoptim gets the right answer."""
    info = R.OPTIMS_BY_NAME[name]
    kw = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    base = torch.randn(7, 33, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(4)
    grads = [torch.randn(33, 7, generator=gen) for _ in range(3)]  # contiguous

    def param():
        return torch.nn.Parameter(base.clone().t())  # transposed: strides (1, 33)

    torch_fused = _run_simple(info.torch_cls, param(), [g.clone() for g in grads], fused=True, **kw)
    torch_loop = _run_simple(info.torch_cls, param(), [g.clone() for g in grads], foreach=False, **kw)
    err = (torch_fused - torch_loop).abs().max().item()
    if err <= 0.1:
        pytest.skip(f"torch's fused {name} now handles strided grads (max diff {err:.2e}); bug fixed upstream")
    ours = _run_simple(info.fo_cls, param(), [g.clone() for g in grads], **kw)
    ours_fused_flag = _run_simple(info.fo_cls, param(), [g.clone() for g in grads], fused=True, **kw)
    R.assert_close_ulps(ours, torch_loop, f"fusedoptim {name} vs torch for-loop")
    R.assert_close_ulps(ours_fused_flag, torch_loop, f"fusedoptim {name}(fused=True) vs torch for-loop")
    # and bit-exact with torch's fused kernel where it is valid: grads given
    # the param's strides (same values)
    oracle = _run_simple(info.torch_cls, param(), [R.to_layout(g, "T") for g in grads], fused=True, **kw)
    R.compare_tensor(ours, oracle, R.fp32_mode(), f"fusedoptim {name} vs torch fused, grads in param layout")
    # ... and with torch fused on contiguous clones (see test_parity_float32 for
    # why that is bit-exact only without FMA)
    clones = _run_simple(info.torch_cls, torch.nn.Parameter(base.clone().t().contiguous()),
                         [g.clone() for g in grads], fused=True, **kw)
    R.compare_tensor(ours, clones, R.fp32_mode() if R.forms_position_independent() else "close",
                     f"fusedoptim {name} vs torch fused on contiguous clones")


NON_DENSE_FLAGS = [{}, {"fused": True}, {"foreach": False}]


@pytest.mark.parametrize("flags", NON_DENSE_FLAGS, ids=["default", "fused", "forloop"])
@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_non_dense_param(info, config, flags):
    """A param that is a strided (non-dense) view, e.g. every other column:
    whatever path fusedoptim takes for it, the result must be right (torch's
    for-loop path), including when the user passed fused=True."""
    if "fused" in flags and not info.fused_oracle:
        pytest.skip(f"torch.optim.{info.name} has no fused option")
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(9, 14, generator=gen)
    grads = [torch.randn(9, 7, generator=gen) for _ in range(3)]

    def param():
        return torch.nn.Parameter(base.clone()[:, ::2])  # strides (14, 2): not dense

    p = param()
    assert not p.is_contiguous()
    ours = _run_simple(info.fo_cls, p, [g.clone() for g in grads], **config.kwargs, **flags)
    assert p.stride() == (14, 2)
    loop = _run_simple(info.torch_cls, param(), [g.clone() for g in grads], foreach=False, **config.kwargs)
    R.assert_close_ulps(ours, loop, f"{info.name}[{config.id}] non-dense param flags={flags}")
