"""Issue 11's items, one test each (the walk over every change, optimizer and
storage option is tests/test_between_steps.py): state resets seen by the
CUDA plan, fp32 state under master weights, grads held while the kernel runs,
torch_parallel_for's errors, GradScaler without host syncs for CUDA params,
AMP unscaling in p.grad whatever its strides, the fast-metadata layout check,
ATEN_CPU_CAPABILITY, float16 squared state, groups mixing devices, and
tolerances that scale with the values."""
from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import weakref

import pytest
import torch

import fusedoptim
from fusedoptim import _backend, _C, _cuda
import registry as R
import trust_support as T
from test_cuda_host import fake_op, fresh_state  # noqa: F401  (fixtures: the CUDA host path on a fake op)

# ------------------------------------------------------ 2. CUDA plan, state reset --


@pytest.mark.parametrize("how", ["assign", "del"])
def test_cuda_plan_sees_a_state_reset_while_the_old_dict_is_held(fake_op, how):  # noqa: F811
    ps = [torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))]
    opt = fusedoptim.Adam(ps, lr=0.1)
    g = opt.param_groups[0]
    for _ in range(2):
        for p in ps:
            p.grad = torch.randn_like(p)
        _cuda.step_cuda(opt, g, ps)
    held = opt.state[ps[0]]  # a checkpointer, a state_dict(), a user variable
    if how == "assign":
        opt.state[ps[0]] = {}
    else:
        del opt.state[ps[0]]
    _cuda.step_cuda(opt, g, ps)
    assert float(held["step"]) == 2  # the orphaned state is left alone
    st = opt.state[ps[0]]
    assert float(st["step"]) == 1, "the reset state restarts as torch's lazy init does"
    assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
    assert fake_op[-1]["flat"][2 * fake_op[-1]["n"]] is st["exp_avg"]


# --------------------------------------------- 4. master weights: fp32 state default --


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD", "Lion"])
def test_master_weights_keeps_fp32_state_unless_told(name):
    info = R.OPTIMS_BY_NAME[name]
    kw = dict(lr=1e-2, momentum=0.9) if name == "SGD" else {}
    for sd, want in ((None, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)):
        p = torch.nn.Parameter(torch.randn(9).bfloat16())
        opt = info.fo_cls([p], master_weights=True, state_dtype=sd, **kw)
        p.grad = torch.randn(9).bfloat16()
        opt.step()
        arrays = {k: v.dtype for k, v in opt.state[p].items() if torch.is_tensor(v) and v.dim() > 0}
        assert arrays.pop("master_param") == torch.float32
        assert arrays and set(arrays.values()) == {want}, f"{name} state_dtype={sd}: {arrays}"


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "Adagrad"])
def test_master_weights_default_equals_the_fp32_path(name):
    """master_weights=True alone (fp32 state by default) is the fp32 path on
    the master; the param is its round-to-nearest image."""
    info = R.OPTIMS_BY_NAME[name]
    gen = torch.Generator().manual_seed(5)
    init = torch.randn(33, generator=gen).bfloat16()
    grads = [torch.randn(33, generator=gen).bfloat16() for _ in range(4)]
    p = torch.nn.Parameter(init.clone())
    q = torch.nn.Parameter(init.float())
    ours, ref = info.fo_cls([p], lr=1e-2, master_weights=True), info.fo_cls([q], lr=1e-2)
    for g in grads:
        p.grad, q.grad = g.clone(), g.float()
        ours.step()
        ref.step()
    R.assert_bitwise_equal(ours.state[p]["master_param"], q.detach(), f"{name} master vs fp32 path")
    R.assert_bitwise_equal(p.detach(), q.detach().bfloat16(), f"{name} param = rounded master")


# ------------------------------------------- 5, 8. the step on torch's pool (injected) --

_PFOR = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                         ctypes.c_void_p)
_WORKER = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


@pytest.fixture
def pool(monkeypatch):
    """Replace torch_parallel_for by a Python function for one test: it runs
    in the middle of a step (the kernel's GIL released), then the real shim
    is wired back."""
    real = _backend._addr(_backend._lib, "torch_parallel_for")
    box = {"fn": lambda begin, end, fn, ctx: fn(begin, end, ctx) or 0}  # serial until a test sets its own

    @_PFOR
    def pfor(begin, end, grain, fn, ctx):
        return box["fn"](begin, end, _WORKER(fn), ctx)

    _C.set_parallel_for(ctypes.cast(pfor, ctypes.c_void_p).value)
    try:
        yield box
    finally:
        _C.set_parallel_for(real if real else 0)


def _big():  # more than one parallel task (the grain is 32768 elements)
    return [torch.nn.Parameter(torch.randn(100_000)), torch.nn.Parameter(torch.randn(7))]


def test_grads_are_held_while_the_kernel_runs(pool):
    ps = _big()
    opt = fusedoptim.Adam(ps, lr=1e-2)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()  # (the plan is built: the next step runs on it)
    for p in ps:
        p.grad = torch.randn_like(p)
    expect = ps[0].detach().clone()
    ref = torch.optim.Adam([torch.nn.Parameter(expect)], lr=1e-2)
    ref.state[ref.param_groups[0]["params"][0]] = {k: v.clone() for k, v in opt.state[ps[0]].items()}
    ref.param_groups[0]["params"][0].grad = ps[0].grad.clone()
    ref.step()
    alive = []

    def mid_step(begin, end, fn, ctx):
        # another thread's zero_grad() while the kernel works
        wr = weakref.ref(ps[0].grad)
        opt.zero_grad(set_to_none=True)
        gc.collect()
        alive.append(wr() is not None)
        fn(begin, end, ctx)
        return 0

    pool["fn"] = mid_step
    opt.step()
    assert alive and all(alive), "the grad was freed while the kernel read it"
    assert ps[0].grad is None
    R.compare_tensor(ps[0].detach(), ref.param_groups[0]["params"][0].detach(), "close", "param after the step")


def test_a_parallel_for_error_raises(pool):
    ps = _big()
    opt = fusedoptim.AdamW(ps, lr=1e-2)
    for p in ps:
        p.grad = torch.randn_like(p)

    def failing(begin, end, fn, ctx):
        return 1  # torch's shim reports an exception in its pool

    pool["fn"] = failing
    with pytest.raises(RuntimeError, match="torch_parallel_for failed"):
        opt.step()


def test_a_parallel_for_error_raises_from_the_norms(pool):
    table = _C.rtable([torch.randn(300_000)])
    pool["fn"] = lambda b, e, fn, ctx: 1
    with pytest.raises(RuntimeError, match="torch_parallel_for failed"):
        table.norm(2.0)


# --------------------------------------------- 8. GradScaler with CUDA params ---------


def test_gradscaler_found_inf_stays_on_the_device(fake_op, monkeypatch):  # noqa: F811
    """Params the CUDA kernels take (here: the host path on a fake op, with
    'meta' standing in for 'cuda', whose tensors cannot be read on the host)
    get grad_scale/found_inf as device tensors: no copy to the host."""
    monkeypatch.setattr(_cuda, "_DEVICE_TYPE", "meta")
    ps = [torch.nn.Parameter(torch.randn(4, device="meta")), torch.nn.Parameter(torch.randn(3, device="meta"))]
    opt = fusedoptim.SGD(ps, lr=0.1)
    for p in ps:
        p.grad = torch.randn_like(p)
    seen = []
    real = _cuda._op()
    monkeypatch.setattr(_cuda, "_op", lambda: lambda *a: seen.append(a[-2:]) or real(*a))
    opt.grad_scale = torch.full((), 4.0, device="meta")
    opt.found_inf = torch.zeros((), device="meta")
    opt.step()
    opt.step()
    assert len(seen) == 2 and all(gs is opt.grad_scale and fi is opt.found_inf for gs, fi in seen)


# ------------------------------------------- 8. AMP unscales p.grad, any strides --


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adagrad"])
def test_amp_unscales_grads_of_other_strides_in_p_grad(name):
    """torch's fused kernels store the unscaled grad back into p.grad; a grad
    whose strides differ from the param's is no exception here."""
    info = R.OPTIMS_BY_NAME[name]
    p = torch.nn.Parameter(torch.randn(6, 5).t().contiguous().t())  # strides (1, 6)
    g = torch.randn(6, 5) * 8.0  # contiguous: strides (5, 1)
    opt = info.fo_cls([p], lr=1e-2)
    opt.grad_scale = torch.tensor(8.0)
    opt.found_inf = torch.tensor(0.0)
    p.grad = g.clone()
    opt.step()
    assert p.grad.stride() == (5, 1)
    R.assert_bitwise_equal(p.grad, g / 8.0, f"{name}: p.grad after an AMP step")


# ---------------------------------------------- 8. fast metadata: layout first --


def test_fast_meta_self_test_checks_the_layout_before_any_accessor(monkeypatch):
    def boom(t):
        raise AssertionError("an accessor was called before the object layout was checked")

    monkeypatch.setattr(_C, "fast_meta_layout_ok", lambda t: False)
    monkeypatch.setattr(_C, "fast_meta_probe", boom)
    assert _backend._self_test_fast_meta() is False


def test_fast_meta_layout_check_reads_the_tensorimpl_pointer():
    t = torch.zeros(3)
    assert _C.fast_meta_layout_ok(t) and _C.fast_meta_layout_ok(torch.nn.Parameter(t))

    class Sub(torch.Tensor):
        pass

    assert not _C.fast_meta_layout_ok(t.as_subclass(Sub))
    assert not _C.fast_meta_layout_ok(object())


def test_raw_storage_fingerprint_follows_every_storage_change():
    if not _backend.info().get("raw_storage"):
        pytest.skip("the raw storage fingerprint is off on this torch (the accessor path is used)")
    t = torch.zeros(10)
    fps = [_C.raw_fingerprint(t)]
    t.data = torch.zeros(10)
    fps.append(_C.raw_fingerprint(t))
    t.resize_(4096)
    fps.append(_C.raw_fingerprint(t))
    t.resize_(10)
    fps.append(_C.raw_fingerprint(t))
    t.set_(t.untyped_storage(), 3, (7,))
    fps.append(_C.raw_fingerprint(t))
    assert fps[-1][0] == t.untyped_storage()._cdata and fps[-1][1] == t.untyped_storage().data_ptr()
    t.share_memory_()  # (last: torch crashes resizing a shared storage)
    fps.append(_C.raw_fingerprint(t))
    assert len(set(fps)) == len(fps), fps


# --------------------------------------------- 8. ATEN_CPU_CAPABILITY -------------


def _isa_in_child(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("FUSEDOPTIM_ISA", "ATEN_CPU_CAPABILITY")}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(fusedoptim.__file__)),
                                         env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", "import torch, fusedoptim; print(fusedoptim._C.get_isa(), "
                          "torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not R._x86(), reason="ATEN_CPU_CAPABILITY's x86 levels")
def test_isa_default_follows_aten_cpu_capability():
    assert _isa_in_child({"ATEN_CPU_CAPABILITY": "default"}) == ["baseline", "DEFAULT"]
    # an explicit FUSEDOPTIM_ISA wins
    assert _isa_in_child({"ATEN_CPU_CAPABILITY": "default", "FUSEDOPTIM_ISA": "avx2"})[0] == (
        "avx2" if _C.cpu_supports("avx2") else None)


# --------------------------------------------- 8. float16 squared state ------------


@pytest.mark.parametrize("info", R.OPTIMS, ids=str)
def test_float16_state_is_refused_for_squared_grads(info):
    kw = _cfg(info)
    squared = {"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg", "acc_delta"}
    p = torch.nn.Parameter(torch.randn(5).half())
    keys = info.state_keys(kw)
    if keys & squared:
        with pytest.raises(ValueError, match="state_dtype=torch.float16 cannot hold"):
            info.fo_cls([p], state_dtype=torch.float16, **kw)
        opt = info.fo_cls([p], **kw)
        with pytest.raises(ValueError, match="state_dtype=torch.float16 cannot hold"):
            opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(2).half())],
                                 "state_dtype": torch.float16})
        assert len(opt.param_groups) == 1
    else:  # momentum, Lion's exp_avg, Adamax's exp_inf: float16 holds them
        opt = info.fo_cls([p], state_dtype=torch.float16, **kw)
        p.grad = torch.randn(5).half()
        opt.step()
        assert all(v.dtype == torch.float16 for k, v in opt.state[p].items() if torch.is_tensor(v) and v.dim())


def _cfg(info):
    for c in info.configs:
        if info.state_keys(c.kwargs):
            return dict(c.kwargs)
    return dict(info.configs[0].kwargs)


# --------------------------------------------- 8. one group, several devices -------


@pytest.mark.parametrize("name", ["SGD", "Adagrad"])
def test_a_group_mixing_devices_steps_each_on_its_path(name):
    """torch accepts one group with params on several devices (its for-loop
    runs per param): the CPU params take the kernels, the others torch's
    path. ('meta' stands in for a second device.)"""
    info = R.OPTIMS_BY_NAME[name]
    kw = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    cpu = torch.nn.Parameter(torch.randn(6))
    meta = torch.nn.Parameter(torch.randn(6, device="meta"))
    ref = torch.nn.Parameter(cpu.detach().clone())
    ours = info.fo_cls([cpu, meta], **kw)
    theirs = info.torch_cls([ref], **T.torch_kwargs(info, kw, "loop"))
    for s in range(3):
        g = torch.randn(6, generator=torch.Generator().manual_seed(s))
        cpu.grad, ref.grad = g.clone(), g.clone()
        meta.grad = torch.empty(6, device="meta")
        ours.step()
        theirs.step()
    R.compare_tensor(cpu.detach(), ref.detach(), R.fp32_mode() if info.fused_oracle else "close", f"{name} CPU param")
    assert meta.device.type == "meta" and set(ours.state[meta]) == set(theirs.state[ref])


# ------------------------------------------------ 7. tolerances scale with values --


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # (1.0: tests/test_parity.py)
@pytest.mark.parametrize("info", [i for i in R.OPTIMS if not i.fused_oracle], ids=str)
def test_parity_tolerance_scales_with_the_values(info, scale):
    """The same trajectory with params and grads scaled: the comparison's
    absolute part follows the scale (a fixed 1e-6 would be too loose at 1e-3
    and too tight at 1e3, where m = beta*m + (1-beta)*g cancels to values
    near 0 whose error is an ulp of the terms, not of the result)."""
    kw = dict(info.configs[-1].kwargs)
    if "eps" in kw or info.name in ("Adagrad", "RMSprop", "Adadelta", "Adam", "NAdam", "RAdam", "Adamax", "LAMB"):
        kw["eps"] = kw.get("eps", 1e-8) * scale  # keep eps relative to the values
    shape = R.ShapeCase("70001", (70001,))
    grad_fn = lambda s, k, sh, dt: R.default_grad(s, k, sh, dt) * scale  # noqa: E731

    def run(cls, kwargs):
        params = [torch.nn.Parameter(v * scale) for v in R.initial_values(shape, torch.float32)]
        opt = cls(R.make_groups(params, {}), **kwargs)
        for s in range(info.steps):
            for k, p in enumerate(params):
                p.grad = None if k == R.NO_GRAD else grad_fn(s, k, p.shape, torch.float32)
            opt.step()
        return opt, params

    ours, ps = run(info.fo_cls, kw)
    theirs, qs = run(info.torch_cls, T.torch_kwargs(info, kw, "loop"))
    for k, (p, q) in enumerate(zip(ps, qs)):
        R.compare_tensor(p.detach(), q.detach(), "close", f"{info.name} x{scale} P{k}")
        for key, v in ours.state[p].items() if p in ours.state else ():
            if torch.is_tensor(v) and v.dim():
                R.compare_tensor(v, theirs.state[q][key], "close", f"{info.name} x{scale} P{k} {key}")


def test_magnitude_atol_is_ulps_of_the_largest_value():
    e = torch.tensor([0.0, -3.0, 2.0, float("inf"), float("nan")])
    assert R.magnitude_atol(e) == R.FP32_ULPS * torch.finfo(torch.float32).eps * 3.0
    assert R.magnitude_atol(e * 1e6) == pytest.approx(R.magnitude_atol(e) * 1e6)
    assert R.magnitude_atol(torch.zeros(3, dtype=torch.float64)) > 0


# --------------------------------------- 1. state given memory of another size --


@pytest.mark.parametrize("how", ["resize", "assign", "data"])
def test_state_of_another_shape_raises_before_the_kernel_runs(how):
    p = torch.nn.Parameter(torch.randn(7))
    opt = fusedoptim.Adam([p], lr=1e-2)
    p.grad = torch.randn(7)
    opt.step()
    st = opt.state[p]
    if how == "resize":
        st["exp_avg"].resize_(3)
    elif how == "assign":
        st["exp_avg"] = torch.zeros(3)
    else:
        st["exp_avg"].data = torch.zeros(3)
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"state\['exp_avg'\] of a param of shape \(7,\)"):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_aten_capability_maps_to_a_variant_this_cpu_runs(monkeypatch):
    best = _backend.best_isa()
    for cap, want in (("avx512", "avx512"), ("AVX2", "avx2"), ("default", "baseline")):
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", cap)
        rank = {"baseline": 0, "avx2": 1, "avx512": 2}
        assert _backend.aten_isa() == (want if rank[want] <= rank[best] else best)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "zvector")
    assert _backend.aten_isa() is None
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert _backend.aten_isa() is None
