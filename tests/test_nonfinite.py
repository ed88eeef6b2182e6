"""NaN and inf, for every optimizer and option set of the registry:

  - grads that are all NaN, all +inf / -inf, or hold one of them, between
    finite steps; params that hold NaN, +-inf, huge values or denormals: every
    param and state tensor after every step equals torch's (float32: bit-
    identical to torch fused when the ISAs match; float64: torch's for-loop
    within 1e-12), so no silent divergence;
  - torch.amp.GradScaler("cpu"): a step whose grads hold inf/NaN is skipped
    (params and state untouched), the scale backs off, and the whole run -
    scales, params, state - equals the same run with torch's optimizer.
"""
from __future__ import annotations

import copy

import pytest
import torch

import registry as R
import trust_support as T

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

INF, NAN = float("inf"), float("nan")
SHAPE = R.ShapeCase("45", (45,))


def _grad_schedule(kind):
    """grad_fn for R.run_trajectory: finite, then `kind` at step 1, finite again."""
    def grad_fn(step, k, shape, dtype):
        g = R.default_grad(step, k, shape, dtype)
        if step != 1 or g.numel() == 0:
            return g
        if kind == "all_nan":
            return torch.full_like(g, NAN)
        if kind == "all_posinf":
            return torch.full_like(g, INF)
        if kind == "all_neginf":
            return torch.full_like(g, -INF)
        if kind == "one_each":
            g = g.clone()
            flat = g.view(-1)
            for i, v in enumerate((NAN, INF, -INF, 3e38, -3e38, 1e-40)):
                flat[(7 * i + k) % flat.numel()] = v
            return g
        raise ValueError(kind)
    return grad_fn


def _oracle(info, kw, dtype):
    if dtype == torch.float32 and T.has_fused_oracle(info):
        return T.torch_kwargs(info, kw, "fused"), R.fp32_mode(), {}
    if dtype == torch.float32:
        return T.torch_kwargs(info, kw, "loop"), "close", {"check_step_dtype": False}
    return T.torch_kwargs(info, kw, "loop"), "close", dict(rtol=R.FP64_RTOL, check_step_dtype=False)


@pytest.mark.parametrize("kind,dtype", [("all_nan", torch.float32), ("all_posinf", torch.float32),
                                        ("all_neginf", torch.float32), ("one_each", torch.float32),
                                        ("one_each", torch.float64)],
                         ids=["all_nan-f32", "all_posinf-f32", "all_neginf-f32", "one_each-f32", "one_each-f64"])
@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_nonfinite_grads_match_torch(info, config, kind, dtype):
    override = info.group1_override(config.kwargs)
    ref_kw, mode, extra = _oracle(info, config.kwargs, dtype)
    fn = _grad_schedule(kind)
    fo = R.run_trajectory(info.fo_cls, config.kwargs, SHAPE, dtype, steps=4, grad_fn=fn, override=override)[0]
    ref = R.run_trajectory(info.torch_cls, ref_kw, SHAPE, dtype, steps=4, grad_fn=fn, override=override,
                           grads_like_param=True)[0]
    R.compare_trajectories(fo, ref, mode, f"{info.name}[{config.id}] {kind} {dtype}", **extra)


PARAM_SPECIALS = (NAN, INF, -INF, 3e38, -3e38, 1e-40, -1e-40, 0.0, -0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_nonfinite_params_match_torch(info, config, dtype):
    ref_kw, mode, extra = _oracle(info, config.kwargs, dtype)
    snaps = []
    for cls, kw in ((info.fo_cls, config.kwargs), (info.torch_cls, ref_kw)):
        p = torch.nn.Parameter(torch.linspace(-2, 2, 37, dtype=dtype))
        with torch.no_grad():
            p[: len(PARAM_SPECIALS)] = torch.tensor(PARAM_SPECIALS, dtype=dtype)
        q = torch.nn.Parameter(torch.full((5,), INF, dtype=dtype))
        opt = cls([p, q], **kw)
        run = []
        for s in range(3):
            p.grad = R.default_grad(s, 0, p.shape, dtype)
            q.grad = R.default_grad(s, 1, q.shape, dtype)
            opt.step()
            run.append(R.snapshot(opt, [p, q]))
        snaps.append(run)
    R.compare_trajectories(snaps[0], snaps[1], mode, f"{info.name}[{config.id}] non-finite params {dtype}", **extra)


# ------------------------------------------------------------------- GradScaler --


def _scaler_run(cls, kw, inf_steps, amp_flag=None, steps=6):
    """A tiny model trained with GradScaler; returns per step (scale, params,
    state snapshot, whether the optimizer's step ran)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    params = list(model.parameters())
    opt = cls(params, **kw)
    if amp_flag is not None:
        opt._step_supports_amp_scaling = amp_flag
    calls = []
    opt.register_step_post_hook(lambda o, a, k: calls.append(1))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    out = []
    for s in range(steps):
        g = torch.Generator().manual_seed(s)
        x, y = torch.randn(4, 7, generator=g), torch.randn(4, 3, generator=g)
        if s in inf_steps:
            x[0, 0] = INF if s % 2 else NAN
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        n_calls = len(calls)
        scaler.step(opt)
        scale_before = scaler.get_scale()
        scaler.update()
        out.append(dict(scale_before=scale_before, scale=scaler.get_scale(), ran=len(calls) > n_calls,
                        snap=R.snapshot(opt, params), sd=copy.deepcopy(opt.state_dict()["state"])))
    return out


@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_gradscaler_skips_inf_steps_like_torch(info, config):
    kw = config.kwargs
    inf_steps = {0, 2, 3}
    fo = _scaler_run(info.fo_cls, kw, inf_steps)
    amp_flag = info.fo_cls([torch.nn.Parameter(torch.zeros(1))], **kw)._step_supports_amp_scaling
    label = f"{info.name}[{config.id}] GradScaler"
    for s, r in enumerate(fo):
        if s in inf_steps:
            # skipped: scale backed off, nothing changed
            assert r["scale"] == r["scale_before"] * 0.5, f"{label} step {s}: scale {r['scale_before']} -> {r['scale']}"
            if not amp_flag:
                assert not r["ran"], f"{label} step {s}: optimizer.step ran on inf grads"
            prev = fo[s - 1]["snap"] if s else None
            if prev is not None:
                R.compare_trajectories([r["snap"]], [prev], "bitwise", f"{label} skipped step {s} changed state")
            elif not amp_flag:  # (an in-kernel skip may create zero state, as torch's fused kernels do)
                assert all(not st for _, st in r["snap"]), f"{label}: state created by a skipped first step"
        else:
            assert r["ran"], f"{label} step {s}: finite step skipped"
    # the same run with torch's optimizer: same scales; params and state equal.
    # Oracle 1, bit-exact: torch's kernel with GradScaler driving it the same way
    # (unscale-then-step, or in-kernel found_inf if fusedoptim takes it).
    # With the in-kernel path (amp_flag) the first step is kept finite for this
    # oracle: torch's fused kernels create state on a step they skip in-kernel
    # (zeros for Adam; for SGD an uninitialized momentum buffer, see oracle 3),
    # fusedoptim creates none, like torch's for-loop (oracle 2).
    o1_steps = inf_steps if not amp_flag else {2, 3}
    fo1 = fo if not amp_flag else _scaler_run(info.fo_cls, kw, o1_steps)
    if T.has_fused_oracle(info):
        ref = _scaler_run(info.torch_cls, T.torch_kwargs(info, kw, "fused"), o1_steps, amp_flag=amp_flag)
        mode, extra = R.fp32_mode(), {}
    else:
        ref = _scaler_run(info.torch_cls, T.torch_kwargs(info, kw, "loop"), o1_steps)
        mode, extra = "close", {"check_step_dtype": False}
    for s, (a, b) in enumerate(zip(fo1, ref)):
        assert a["scale"] == b["scale"], f"{label} step {s}: scale {a['scale']} != torch's {b['scale']}"
        assert a["ran"] == b["ran"] or amp_flag, f"{label} step {s}: step ran {a['ran']} vs torch {b['ran']}"
        R.compare_trajectories([a["snap"]], [b["snap"]], mode, f"{label} step {s} vs torch", **extra)
    # Oracle 2: torch's CPU default (for-loop, GradScaler unscales then steps),
    # within a tolerance, params and state
    ref2 = _scaler_run(info.torch_cls, T.torch_kwargs(info, kw, "loop"), inf_steps)
    for s, (a, b) in enumerate(zip(fo, ref2)):
        assert a["scale"] == b["scale"]
        R.compare_trajectories([a["snap"]], [b["snap"]], "close", f"{label} step {s} vs torch for-loop",
                               check_step_dtype=False)
    # Oracle 3: torch's fused kernel as GradScaler drives it by default (grads
    # unscaled and found_inf checked inside the kernel), params within a
    # tolerance. The first step is kept finite here: torch 2.13's fused SGD
    # with momentum, when GradScaler skips its first step in-kernel, leaves the
    # momentum buffer it created uninitialized (torch.empty_like) and the next
    # step adds that garbage to the params (measured: weights ~7e26; its
    # for-loop path and fusedoptim are right, see oracle 2).
    if not T.has_fused_oracle(info):
        return
    late = {2, 3}
    fo3 = _scaler_run(info.fo_cls, kw, late)
    ref3 = _scaler_run(info.torch_cls, T.torch_kwargs(info, kw, "fused"), late)
    for s, (a, b) in enumerate(zip(fo3, ref3)):
        assert a["scale"] == b["scale"]
        R.compare_trajectories([a["snap"]], [b["snap"]], "close", f"{label} step {s} vs torch fused in-kernel",
                               state=False)
