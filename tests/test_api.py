"""fusedoptim is a drop-in for torch.optim: same signatures, defaults,
errors, hooks, closures, param groups, pickling, flags, names; and the
machinery around the kernels (ISA selection, threads) does not change results."""
import copy
import inspect
import os
import pickle
import subprocess
import sys

import pytest
import torch

import fusedoptim
import registry as R

NAMES = ["SGD", "Adam", "AdamW"]
INFOS = {o.name: o for o in R.OPTIMS}


def _pair(name):
    return getattr(fusedoptim, name), getattr(torch.optim, name)


def _fused_kw(name):
    return {"fused": True}


def _snap(params):
    return [p.detach().clone() for p in params]


def _assert_same_params(a, b, what, mode=None):
    mode = mode or R.fp32_mode()
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        R.compare_tensor(x, y, mode if x.dtype == torch.float32 else "close", f"{what} param {i}")


# ------------------------------------------------------------- signatures --------


# every torch.optim class fusedoptim replaces
TORCH_NAMES = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam", "Adadelta"]
EXTRAS = {"l1_weight_decay": 0.0, "state_dtype": None, "master_weights": False,
          "stochastic_rounding": False, "max_grad_norm": None}


def _extras(name):
    """fusedoptim's own options for this class, with their defaults."""
    e = dict(EXTRAS)
    torch_opt = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))])
    if "decoupled_weight_decay" not in torch_opt.defaults:
        e["decoupled_weight_decay"] = False
    return e


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_signature_matches_torch(name):
    """torch's parameters, in torch's order with torch's kinds and defaults,
    then fusedoptim's options as keyword-only parameters."""
    fo, th = _pair(name)
    params = list(inspect.signature(th.__init__).parameters.values())
    got = list(inspect.signature(fo.__init__).parameters.values())
    n = len(params)
    assert [(p.name, p.kind, p.default) for p in got[:n]] == [(p.name, p.kind, p.default) for p in params]
    extra = {p.name: p.default for p in got[n:]}
    assert extra == _extras(name)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in got[n:])
    assert list(inspect.signature(fo).parameters)[: n - 1] == list(inspect.signature(th).parameters)


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_defaults_and_groups_match_torch(name):
    """torch's defaults and group keys, plus fusedoptim's options."""
    fo, th = _pair(name)
    p = torch.nn.Parameter(torch.zeros(3))
    a, b = fo([p]), th([p])
    assert a.defaults == dict(b.defaults, **_extras(name))
    ga = {k: v for k, v in a.param_groups[0].items() if k != "params"}
    gb = {k: v for k, v in b.param_groups[0].items() if k != "params"}
    assert ga == dict(gb, **_extras(name))
    lines_a = [ln for ln in repr(a).splitlines() if ln.split(":")[0].strip() not in _extras(name)
               or ln.split(":")[0].strip() in b.defaults]
    assert "\n".join(lines_a).replace("fusedoptim", "").split("(", 1)[1] == repr(b).split("(", 1)[1]


POSITIONAL = {
    "SGD": (0.05, 0.9, 0.0, 0.01, True),  # lr, momentum, dampening, weight_decay, nesterov
    "Adam": (0.01, (0.8, 0.9), 1e-6, 0.1, True),  # lr, betas, eps, weight_decay, amsgrad
    "AdamW": (0.01, (0.8, 0.9), 1e-6, 0.1, True),
}


@pytest.mark.parametrize("name", NAMES)
def test_positional_arguments(name):
    fo, th = _pair(name)
    p = torch.nn.Parameter(torch.zeros(3))
    a, b = fo([p], *POSITIONAL[name]), th([p], *POSITIONAL[name])
    assert a.param_groups[0].keys() == b.param_groups[0].keys() | _extras(name).keys()
    for k in b.param_groups[0]:
        if k != "params":
            assert a.param_groups[0][k] == b.param_groups[0][k], k


@pytest.mark.parametrize("name", NAMES)
def test_isinstance_and_identity(name):
    fo, th = _pair(name)
    opt = fo([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, th)
    assert isinstance(opt, torch.optim.Optimizer)
    assert issubclass(fo, th)
    assert fo.__name__ == name


# ------------------------------------------------- invalid hyper-parameters --------

_T = torch.tensor
INVALID = {
    "SGD": [
        dict(lr=-1.0), dict(momentum=-0.5), dict(weight_decay=-1e-3),
        dict(nesterov=True), dict(nesterov=True, momentum=0.9, dampening=0.1),
        dict(lr=_T([0.1, 0.2])), dict(fused=True, foreach=True), dict(fused=True, differentiable=True),
        dict(lr=float("nan")),
    ],
    "Adam": [
        dict(lr=-1.0), dict(eps=-1e-8), dict(betas=(1.0, 0.999)), dict(betas=(0.9, 1.0)),
        dict(betas=(-0.1, 0.999)), dict(betas=(0.9, -0.5)), dict(weight_decay=-0.1),
        dict(lr=_T([0.1, 0.2])), dict(lr=_T(0.01), foreach=True),
        dict(betas=(_T(0.9), 0.999)), dict(betas=(_T([0.9, 0.8]), _T(0.999))),
        dict(fused=True, foreach=True), dict(fused=True, differentiable=True), dict(lr=float("nan")),
    ],
}
INVALID["AdamW"] = INVALID["Adam"]


def _invalid_cases():
    out = []
    for name in NAMES:
        for i, kw in enumerate(INVALID[name]):
            out.append(pytest.param(name, kw, id=f"{name}-{i}-" + "-".join(sorted(kw))))
    return out


@pytest.mark.parametrize("name,kw", _invalid_cases())
def test_invalid_hparams_same_error(name, kw):
    fo, th = _pair(name)
    p = torch.nn.Parameter(torch.zeros(3))

    def outcome(cls):
        try:
            cls([p], **kw)
        except Exception as e:  # noqa: BLE001 - compared with torch's
            return type(e), str(e)
        return None

    expected = outcome(th)
    assert outcome(fo) == expected
    if expected is None:  # torch accepts it (e.g. SGD lr=nan): so must we, and step like torch
        assert name == "SGD" and "lr" in kw


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("params,exc", [([], ValueError), (None, TypeError)], ids=["empty", "tensor"])
def test_bad_params_argument_same_error(name, params, exc):
    fo, th = _pair(name)
    if params is None:
        params = torch.nn.Parameter(torch.zeros(3))  # a bare tensor, not an iterable of tensors
    with pytest.raises(exc) as te:
        th(params)
    with pytest.raises(exc) as fe:
        fo(params)
    assert str(fe.value) == str(te.value)


# -------------------------------------------------------------- closures etc ------


def _quadratic_problem(seed=0, n=37, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(n, generator=g, dtype=dtype))
    target = torch.randn(n, generator=g, dtype=dtype)
    return w, target


@pytest.mark.parametrize("name", NAMES)
def test_step_with_closure(name):
    fo, th = _pair(name)
    results = []
    for cls, extra in ((fo, {}), (th, _fused_kw(name))):
        w, target = _quadratic_problem()
        opt = cls([w], lr=0.01, **extra)
        calls = []

        def closure():
            calls.append(torch.is_grad_enabled())
            opt.zero_grad()
            loss = ((w - target) ** 2).sum()
            loss.backward()
            return loss

        losses = []
        with torch.no_grad():  # step must still run the closure with grad enabled
            for _ in range(4):
                losses.append(opt.step(closure))
        assert all(calls) and len(calls) == 4
        assert all(torch.is_tensor(x) for x in losses)
        results.append((w.detach().clone(), torch.stack([x.detach() for x in losses])))
    R.compare_tensor(results[0][0], results[1][0], R.fp32_mode(), f"{name} closure params")
    R.compare_tensor(results[0][1], results[1][1], R.fp32_mode(), f"{name} closure losses")


@pytest.mark.parametrize("name", NAMES)
def test_step_without_closure_returns_none(name):
    fo, _ = _pair(name)
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    assert fo([w]).step() is None


@pytest.mark.parametrize("name", NAMES)
def test_step_with_no_grads_is_noop(name):
    fo, th = _pair(name)
    w = torch.nn.Parameter(torch.ones(3))
    a, b = fo([w]), th([w])
    a.step()
    b.step()
    assert torch.equal(w, torch.ones(3))
    assert len(a.state) == len(b.state) == 0


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("name", NAMES)
def test_zero_grad(name, set_to_none):
    fo, th = _pair(name)
    out = []
    for cls in (fo, th):
        w = torch.nn.Parameter(torch.ones(4))
        opt = cls([w], lr=0.1)
        w.grad = torch.full((4,), 2.0)
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)
        out.append(w.grad)
    if set_to_none:
        assert out[0] is None and out[1] is None
    else:
        assert torch.equal(out[0], torch.zeros(4)) and torch.equal(out[1], torch.zeros(4))


# -------------------------------------------------- groups and hyper-params -------


def _run_pair(name, build, drive, steps, torch_flags=None):
    """build(cls, extra) -> (opt, params); drive(opt, params, step) mutates
    between steps. Returns (fo snapshots, torch snapshots); torch runs with
    `torch_flags` (default: fused=True)."""
    fo, th = _pair(name)
    outs = []
    for cls, extra in ((fo, {}), (th, _fused_kw(name) if torch_flags is None else torch_flags)):
        opt, params = build(cls, extra)
        snaps = []
        for s in range(steps):
            drive(opt, params, s)
            for k, p in enumerate(params):
                p.grad = R.default_grad(s, k, p.shape, p.dtype)
            opt.step()
            snaps.append(_snap(params) + [v.clone() for st in opt.state.values() for v in st.values()
                                           if torch.is_tensor(v)])
        outs.append(snaps)
    return outs


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group(name):
    info = INFOS[name]
    kw = dict(info.configs[-1].kwargs)

    def build(cls, extra):
        g = torch.Generator().manual_seed(5)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((19,), (4, 5), (33,))]
        opt = cls(ps[:2], **kw, **extra)
        opt._extra = ps[2]
        return opt, ps

    def drive(opt, params, s):
        if s == 2:
            opt.add_param_group({"params": [opt._extra], "lr": kw["lr"] * 3, "weight_decay": 0.05})

    fo_s, th_s = _run_pair(name, build, drive, steps=5)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        assert len(a) == len(b), f"step {s}: state entries differ"
        _assert_same_params(a, b, f"{name} add_param_group step {s}")


CHANGES = {
    "SGD": [("lr", 0.02), ("weight_decay", 0.1), ("momentum", 0.5), ("dampening", 0.2),
            ("maximize", True), ("nesterov", True)],
    "Adam": [("lr", 0.003), ("weight_decay", 0.1), ("betas", (0.5, 0.9)), ("eps", 1e-3),
             ("maximize", True), ("decoupled_weight_decay", True)],
    "AdamW": [("lr", 0.003), ("weight_decay", 0.0), ("betas", (0.3, 0.95)), ("eps", 1e-4),
              ("maximize", True)],
}


@pytest.mark.parametrize("name", NAMES)
def test_hparams_changed_between_steps(name):
    base = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    changes = CHANGES[name]

    def build(cls, extra):
        g = torch.Generator().manual_seed(6)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((21,), (5, 7))]
        return cls(ps, **base, **extra), ps

    def drive(opt, params, s):
        if 1 <= s <= len(changes):
            k, v = changes[s - 1]
            for group in opt.param_groups:
                if k == "nesterov":
                    group["dampening"] = 0.0
                group[k] = v

    fo_s, th_s = _run_pair(name, build, drive, steps=len(changes) + 2)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"{name} hparams changed, step {s}")


@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr(name):
    """lr given as a 0-d tensor (and changed in place later) as in torch."""
    base = dict(momentum=0.9) if name == "SGD" else {}

    def build(cls, extra):
        g = torch.Generator().manual_seed(7)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (3, 11))]
        return cls(ps, lr=torch.tensor(0.01), **base, **extra), ps

    def drive(opt, params, s):
        if s == 2:
            opt.param_groups[0]["lr"].fill_(0.03)  # in place: the kernel must re-read it

    fo_s, th_s = _run_pair(name, build, drive, steps=4)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"{name} tensor lr step {s}")


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_betas(name):
    def build(cls, extra):
        g = torch.Generator().manual_seed(8)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (3, 11))]
        return cls(ps, lr=torch.tensor(0.01), betas=(torch.tensor(0.8), torch.tensor(0.95)), **extra), ps

    fo_s, th_s = _run_pair(name, build, lambda *a: None, steps=3)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"{name} tensor betas step {s}")


# ----------------------------------------------------------------- hooks ---------


@pytest.mark.parametrize("name", NAMES)
def test_step_hooks_fire_like_torch(name):
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    fo, th = _pair(name)
    logs = []
    for cls in (fo, th):
        log = []
        w = torch.nn.Parameter(torch.ones(5))
        opt = cls([w], lr=0.1)
        h1 = opt.register_step_pre_hook(lambda o, a, k: log.append(("pre", w.detach().clone())))
        h2 = opt.register_step_post_hook(lambda o, a, k: log.append(("post", w.detach().clone())))
        g1 = register_optimizer_step_pre_hook(lambda o, a, k: log.append(("gpre", type(o).__name__)))
        g2 = register_optimizer_step_post_hook(lambda o, a, k: log.append(("gpost", type(o).__name__)))
        try:
            for _ in range(2):
                w.grad = torch.full((5,), 0.5)
                opt.step()
            h1.remove()
            w.grad = torch.full((5,), 0.5)
            opt.step()
        finally:
            h2.remove()
            g1.remove()
            g2.remove()
        logs.append(log)
    a, b = logs
    assert [e[0] for e in a] == [e[0] for e in b]
    for (ka, va), (kb, vb) in zip(a, b):
        if torch.is_tensor(va):
            R.compare_tensor(va, vb, R.fp32_mode(), f"{name} hook {ka}")
        else:
            assert va == vb


@pytest.mark.parametrize("name", NAMES)
def test_step_pre_hook_can_replace_args(name):
    """A pre-hook returning (args, kwargs) changes what step() receives."""
    fo, _ = _pair(name)
    w = torch.nn.Parameter(torch.ones(3))
    opt = fo([w], lr=0.1)
    seen = []

    def closure():
        seen.append(1)
        w.grad = torch.ones(3)
        return torch.tensor(1.5)

    # args holds the optimizer itself first, as torch passes it
    opt.register_step_pre_hook(lambda o, args, kwargs: ((args[0], closure), {}))
    assert opt.step() == 1.5
    assert seen == [1]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_hooks_fire_like_torch(name):
    fo, th = _pair(name)
    logs = []
    for cls in (fo, th):
        log = []
        w = torch.nn.Parameter(torch.ones(5))
        opt = cls([w], lr=0.1)
        w.grad = torch.ones(5)
        opt.step()
        opt.register_state_dict_pre_hook(lambda o: log.append("sd_pre"))

        def sd_post(o, sd):
            log.append("sd_post")
            sd["extra"] = 1
            return sd

        opt.register_state_dict_post_hook(sd_post)

        def load_pre(o, sd):
            log.append(("load_pre", sd.get("extra")))
            sd = dict(sd)
            sd.pop("extra", None)
            return sd

        opt.register_load_state_dict_pre_hook(load_pre)
        opt.register_load_state_dict_post_hook(lambda o: log.append("load_post"))
        sd = opt.state_dict()
        assert sd["extra"] == 1
        opt.load_state_dict(sd)
        logs.append(log)
    assert logs[0] == logs[1]


# ---------------------------------------------------------- copy and pickle ------


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", NAMES)
def test_copy_and_pickle_keep_stepping_identically(name, how):
    info = INFOS[name]
    kw = info.configs[-1].kwargs
    g = torch.Generator().manual_seed(9)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((23,), (4, 9))]
    opt = info.fo_cls(params, **kw)
    for s in range(2):
        for k, p in enumerate(params):
            p.grad = R.default_grad(s, k, p.shape, p.dtype)
        opt.step()
    if how == "deepcopy":
        params2, opt2 = copy.deepcopy((params, opt))
    else:
        params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    assert type(opt2) is info.fo_cls
    assert all(p2 in opt2.state for p2 in params2)
    # and a torch run of the same length, from the same start
    g = torch.Generator().manual_seed(9)
    tparams = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((23,), (4, 9))]
    topt = info.torch_cls(tparams, **kw, fused=True)
    for s in range(2):
        for k, p in enumerate(tparams):
            p.grad = R.default_grad(s, k, p.shape, p.dtype)
        topt.step()
    for s in range(2, 5):
        for ps, o in ((params, opt), (params2, opt2), (tparams, topt)):
            for k, p in enumerate(ps):
                p.grad = R.default_grad(s, k, p.shape, p.dtype)
            o.step()
        R.compare_tensor(params2[0], params[0], "bitwise", f"{name} {how} copy vs original step {s}")
        R.compare_tensor(params2[1], params[1], "bitwise", f"{name} {how} copy vs original step {s}")
        _assert_same_params(params2, tparams, f"{name} {how} copy vs torch step {s}")
    # the original did not share state with the copy
    for p, p2 in zip(params, params2):
        for k, v in opt.state[p].items():
            if torch.is_tensor(v) and v.numel():
                assert v.data_ptr() != opt2.state[p2][k].data_ptr()


# ------------------------------------------------------------ version bumps ------


@pytest.mark.parametrize("name", NAMES)
def test_step_bumps_param_version(name):
    fo, th = _pair(name)
    bumps = []
    for cls in (fo, th):
        w = torch.nn.Parameter(torch.randn(6))
        opt = cls([w], lr=0.1)
        w.grad = torch.randn(6)
        v0 = w._version
        opt.step()
        bumps.append(w._version - v0)
    assert bumps[0] >= 1, f"fusedoptim {name}.step() did not bump the param's version counter"
    assert bumps[1] >= 1


@pytest.mark.parametrize("name", NAMES)
def test_autograd_sees_the_inplace_update(name):
    """A graph that saved the param before step() must refuse to backprop
    afterwards, exactly as with torch's in-place update."""
    fo, th = _pair(name)
    for cls in (fo, th):
        w = torch.nn.Parameter(torch.randn(6))
        opt = cls([w], lr=0.1)
        loss = (w * w).sum()  # saves w for backward
        w.grad = torch.randn(6)
        opt.step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


# ------------------------------------------------------------------ flags ---------

FLAG_SETS = [dict(), dict(foreach=False), dict(foreach=True), dict(fused=True), dict(fused=False)]


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()) or "none")
@pytest.mark.parametrize("name", NAMES)
def test_flags_accepted_and_recorded(name, flags):
    fo, th = _pair(name)
    if name != "SGD" and flags.get("foreach"):
        pass  # accepted by torch too
    w = torch.nn.Parameter(torch.randn(17))
    a, b = fo([w], lr=0.01, **flags), th([w], lr=0.01, **flags)
    for k in ("foreach", "fused"):
        assert a.param_groups[0][k] == b.param_groups[0][k]
    # every flag combination computes the same (fused-kernel) result for CPU fp32
    outs = []
    for cls, extra in ((fo, flags), (fo, {}), (th, {"fused": True})):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 37))
        opt = cls([w], lr=0.01, **extra)
        for s in range(3):
            w.grad = R.default_grad(s, 0, w.shape, w.dtype)
            opt.step()
        outs.append(w.detach().clone())
    R.compare_tensor(outs[0], outs[1], "bitwise", f"{name} flags {flags} vs no flags")
    R.compare_tensor(outs[0], outs[2], R.fp32_mode(), f"{name} flags {flags} vs torch fused")


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_capturable_flag_behaves_like_torch(name):
    """capturable=True is accepted at construction; on CPU torch's step
    rejects it (CUDA-graph feature) and fusedoptim does the same."""
    fo, th = _pair(name)
    errs = []
    for cls in (fo, th):
        w = torch.nn.Parameter(torch.randn(5))
        opt = cls([w], lr=0.01, capturable=True)
        assert opt.param_groups[0]["capturable"] is True
        w.grad = torch.randn(5)
        try:
            opt.step()
            errs.append(None)
        except Exception as e:  # noqa: BLE001 - comparing with torch
            errs.append((type(e), str(e)))
    assert errs[0] == errs[1]


@pytest.mark.parametrize("name,kw", [("SGD", dict(momentum=0.9)), ("SGD", dict(weight_decay=0.1)),
                                     ("Adam", {}), ("Adam", dict(weight_decay=0.1, maximize=True)),
                                     ("AdamW", dict(amsgrad=True))])
def test_differentiable_matches_torch(name, kw):
    """differentiable=True: the update is differentiable w.r.t. the initial
    param and matches torch's differentiable path (values and gradients)."""
    fo, th = _pair(name)
    outs = []
    for cls in (fo, th):
        gen = torch.Generator().manual_seed(10)
        w = torch.randn(7, dtype=torch.float64, generator=gen).requires_grad_()
        grads = [torch.randn(7, dtype=torch.float64, generator=gen) for _ in range(3)]
        p = w.clone()  # non-leaf: only allowed with differentiable=True
        opt = cls([p], lr=0.1, differentiable=True, **kw)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        (p * torch.arange(7.0, dtype=torch.float64)).sum().backward()
        outs.append((p.detach().clone(), w.grad.clone()))
    R.assert_close(outs[0][0], outs[1][0], 0, 0, f"{name} differentiable values")
    R.assert_close(outs[0][1], outs[1][1], 0, 0, f"{name} differentiable gradient")


# ------------------------------------------------------------ names / config -----


def test_every_torch_optim_name_is_importable():
    import torch.optim as topt

    names = set(getattr(topt, "__all__", [])) | {"lr_scheduler", "Optimizer", "LBFGS"}
    if hasattr(topt, "swa_utils"):
        names.add("swa_utils")
    missing = [n for n in sorted(names) if not hasattr(fusedoptim, n)]
    assert not missing, f"not importable from fusedoptim: {missing}"
    for n in sorted(names):
        exec(f"from fusedoptim import {n}", {})
    for n in sorted(names - {"lr_scheduler", "swa_utils"}):
        ours, theirs = getattr(fusedoptim, n), getattr(topt, n)
        if isinstance(theirs, type):  # torch's class, or a drop-in subclass of it
            assert ours is theirs or issubclass(ours, theirs), n
        else:
            assert callable(ours) == callable(theirs), n
    assert set(topt.__all__) <= set(fusedoptim.__all__)


def test_lr_scheduler_names_importable():
    import torch.optim.lr_scheduler as tls

    for n in tls.__all__:
        assert hasattr(fusedoptim.lr_scheduler, n), f"fusedoptim.lr_scheduler.{n} missing"
    from fusedoptim.lr_scheduler import StepLR  # noqa: F401


def test_star_import():
    ns = {}
    exec("from fusedoptim import *", ns)
    for n in ("SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler", "LBFGS"):
        assert n in ns, n


def test_show_config(capsys):
    fusedoptim.show_config()
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) >= 4
    text = out.lower()
    assert fusedoptim.__version__ in out
    assert "isa" in text and fusedoptim._C.get_isa() in out
    assert "thread" in text and str(torch.get_num_threads()) in out
    assert "backend" in text
    assert torch.__version__ in out


def _run_py(code, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_bogus_isa_env_fails_import_clearly():
    r = _run_py("import fusedoptim", FUSEDOPTIM_ISA="bogus")
    assert r.returncode != 0
    assert "ValueError" in r.stderr
    assert "bogus" in r.stderr and "FUSEDOPTIM_ISA" in r.stderr
    assert "avx2" in r.stderr  # names the valid choices


@pytest.mark.parametrize("isa", ["avx512", "avx2", "baseline"])
def test_isa_env_selects_variant(isa):
    if isa not in fusedoptim._C.compiled_isas() or not fusedoptim._C.cpu_supports(isa):
        pytest.skip(f"{isa} not runnable here")
    r = _run_py("import fusedoptim; print(fusedoptim._C.get_isa())", FUSEDOPTIM_ISA=isa.upper())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_select_isa_errors():
    with pytest.raises(ValueError):
        fusedoptim.select_isa("bogus")
    with pytest.raises(ValueError):
        fusedoptim._C.cpu_supports("bogus")
    unsupported = [n for n in fusedoptim._C.compiled_isas() if not fusedoptim._C.cpu_supports(n)]
    for n in unsupported:
        with pytest.raises(RuntimeError):
            fusedoptim.select_isa(n)


def _trajectory(info, kw, n=1031, steps=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(12)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in ((n,), (7, 13), ())]
    opt = info.fo_cls(ps, **kw)
    for s in range(steps):
        for k, p in enumerate(ps):
            p.grad = R.default_grad(s, k, p.shape, dtype)
        opt.step()
    return [p.detach().clone() for p in ps] + [v.clone() for st in opt.state.values() for v in st.values()]


@pytest.mark.parametrize("name", NAMES)
def test_every_isa_selectable_and_consistent(name):
    info = INFOS[name]
    kw = info.configs[-1].kwargs
    isas = [n for n in fusedoptim._C.compiled_isas() if fusedoptim._C.cpu_supports(n)]
    assert "baseline" in isas
    original = fusedoptim._C.get_isa()
    results = {}
    try:
        for isa in isas:
            assert fusedoptim.select_isa(isa) == isa
            assert fusedoptim._C.get_isa() == isa
            results[isa] = (_trajectory(info, kw), _trajectory(info, kw, dtype=torch.float64))
    finally:
        fusedoptim.select_isa(original)
    assert fusedoptim._C.get_isa() == original
    ref32, ref64 = results["baseline"]
    for isa, (r32, r64) in results.items():
        for a, b in zip(r32, ref32):
            R.compare_tensor(a, b, "close", f"{name} {isa} vs baseline fp32")
        for a, b in zip(r64, ref64):
            R.compare_tensor(a, b, "close", f"{name} {isa} vs baseline fp64")


@pytest.mark.parametrize("name", NAMES)
def test_results_independent_of_thread_count(name):
    info = INFOS[name]
    kw = info.configs[-1].kwargs
    if torch.get_num_threads() < 2 and os.cpu_count() < 2:
        pytest.skip("needs 2 threads")
    outs = {}
    old = torch.get_num_threads()
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            outs[nt] = _trajectory(info, kw, n=300_007, steps=3)
    finally:
        torch.set_num_threads(old)
    for a, b in zip(outs[1], outs[2]):
        R.compare_tensor(a, b, "bitwise", f"{name} 1 vs 2 threads")


# ------------------------------------------------------------- real training ------


def _mlp_run(cls, kw, steps=20, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3))
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(64, 10, generator=gen)
    y = torch.randn(64, 3, generator=gen)
    opt = cls(model.parameters(), **kw)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses), [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                     ("Adam", dict(lr=1e-2, amsgrad=True)),
                                     ("AdamW", dict(lr=1e-2, weight_decay=0.1))])
def test_mlp_training_matches_torch_fused(name, kw):
    fo, th = _pair(name)
    la, pa = _mlp_run(fo, kw)
    lb, pb = _mlp_run(th, dict(kw, fused=True))
    R.compare_tensor(la, lb, R.fp32_mode(), f"{name} MLP loss curve")
    _assert_same_params(pa, pb, f"{name} MLP params")
    assert la[-1] < la[0]


def _scaler_run(cls, kw, inf_at=3, steps=6):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 6)
    opt = cls(model.parameters(), **kw)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    gen = torch.Generator().manual_seed(2)
    scales = []
    for s in range(steps):
        opt.zero_grad()
        loss = model(torch.randn(4, 8, generator=gen)).pow(2).sum()
        scaler.scale(loss).backward()
        if s == inf_at:
            model.weight.grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return [p.detach().clone() for p in model.parameters()], scales, opt


@pytest.mark.parametrize("name", NAMES)
def test_grad_scaler(name):
    try:
        torch.amp.GradScaler("cpu")
    except Exception as e:  # pragma: no cover
        pytest.skip(f"GradScaler('cpu') unavailable: {e}")
    fo, th = _pair(name)
    kw = dict(lr=0.01, momentum=0.9) if name == "SGD" else dict(lr=0.01)
    pa, sa, oa = _scaler_run(fo, kw)
    pb, sb, ob = _scaler_run(th, dict(kw, fused=True))
    pc, sc, oc = _scaler_run(th, dict(kw, foreach=False))
    assert sa == sb == sc
    assert sa[3] < sa[2]  # the inf step was detected and the scale reduced
    _assert_same_params(pa, pb, f"{name} GradScaler vs torch fused")
    for a, c in zip(pa, pc):
        R.compare_tensor(a, c, "close", f"{name} GradScaler vs torch for-loop")
    if name != "SGD":  # the skipped step did not count
        sta = oa.state[next(iter(oa.state))]["step"]
        stb = ob.state[next(iter(ob.state))]["step"]
        assert float(sta) == float(stb) == 5.0


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_sparse_grad_like_torch(momentum):
    outs = []
    for cls in (fusedoptim.SGD, torch.optim.SGD):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(11, 4, sparse=True)
        lin = torch.nn.Linear(4, 1)
        opt = cls(list(emb.parameters()) + list(lin.parameters()), lr=0.1, momentum=momentum)
        gen = torch.Generator().manual_seed(3)
        for _ in range(4):
            opt.zero_grad()
            idx = torch.randint(0, 11, (6,), generator=gen)
            lin(emb(idx)).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        outs.append([p.detach().clone() for p in (emb.weight, lin.weight, lin.bias)])
    for i, (a, b) in enumerate(zip(*outs)):
        R.compare_tensor(a, b, "close", f"sparse SGD param {i}", rtol=1e-6, atol=1e-7)


def test_sgd_sparse_grad_with_fused_flag_errors_like_torch():
    errs = []
    for cls in (fusedoptim.SGD, torch.optim.SGD):
        emb = torch.nn.Embedding(5, 3, sparse=True)
        opt = cls(emb.parameters(), lr=0.1, fused=True)
        emb(torch.tensor([1, 2])).sum().backward()
        with pytest.raises(RuntimeError) as e:
            opt.step()
        errs.append(str(e.value))
    assert errs[0] == errs[1]


# ------------------------------------------------------------ plan caching -------


@pytest.mark.parametrize("name", NAMES)
def test_changes_between_steps_are_seen(name):
    """The per-group native plan is cached: replacing p.data, a state tensor,
    a group's param list, or dropping a grad for a step must be noticed."""
    info = INFOS[name]
    kw = dict(info.configs[-1].kwargs)

    def build(cls, extra):
        g = torch.Generator().manual_seed(13)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (7, 5), (5,))]
        opt = cls(ps[:2], **kw, **extra)
        opt._spare = ps[2]
        return opt, ps

    def drive(opt, params, s):
        p0 = params[0]
        if s == 2:  # new storage, same values
            p0.data = p0.data.clone()
        if s == 3:  # new state tensor, same values
            st = opt.state[p0]
            key = "momentum_buffer" if name == "SGD" else "exp_avg"
            if key in st:
                st[key] = st[key].clone()
        if s == 4:  # a param appended to the group by hand
            opt.param_groups[0]["params"].append(opt._spare)

    # torch's fused SGD cannot take a param without momentum buffer next to
    # params with one (it passes None to the kernel): use its for-loop there
    sgd = name == "SGD"
    fo_s, th_s = _run_pair(name, build, drive, steps=6, torch_flags={"foreach": False} if sgd else None)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"{name} cache invalidation step {s}", mode="close" if sgd else None)


@pytest.mark.parametrize("name", NAMES)
def test_grad_missing_for_a_step(name):
    info = INFOS[name]
    kw = dict(info.configs[-1].kwargs)
    fo, th = _pair(name)
    outs = []
    for cls, extra in ((fo, {}), (th, _fused_kw(name))):
        g = torch.Generator().manual_seed(14)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (7, 5))]
        opt = cls(ps, **kw, **extra)
        for s in range(5):
            for k, p in enumerate(ps):
                p.grad = None if (s == 2 and k == 1) else R.default_grad(s, k, p.shape, p.dtype)
            opt.step()
        outs.append(_snap(ps) + [v.clone() for st in opt.state.values() for v in st.values()])
    _assert_same_params(outs[0], outs[1], f"{name} grad missing for a step")


@pytest.mark.parametrize("name", NAMES)
def test_state_removed_or_replaced_mid_training(name):
    """`del opt.state[p]` and `opt.state = defaultdict(dict)` restart a
    param's (or every param's) state from scratch, as torch does."""
    import collections

    info = INFOS[name]
    kw = dict(info.configs[-1].kwargs)

    def build(cls, extra):
        g = torch.Generator().manual_seed(15)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (7, 5))]
        return cls(ps, **kw, **extra), ps

    def drive(opt, params, s):
        if s == 2:
            del opt.state[params[0]]
        if s == 4:
            opt.state = collections.defaultdict(dict)

    sgd = name == "SGD"  # torch's fused SGD cannot mix fresh and existing momentum buffers
    fo_s, th_s = _run_pair(name, build, drive, steps=6, torch_flags={"foreach": False} if sgd else None)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"{name} state removed step {s}", mode="close" if sgd else None)


def test_sgd_momentum_switched_on_and_off():
    def build(cls, extra):
        g = torch.Generator().manual_seed(16)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (7, 5))]
        return cls(ps, lr=0.1, momentum=0.0, **extra), ps

    def drive(opt, params, s):
        opt.param_groups[0]["momentum"] = [0.0, 0.9, 0.9, 0.0, 0.9, 0.5][s]

    fo_s, th_s = _run_pair("SGD", build, drive, steps=6)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"SGD momentum toggled step {s}")


def test_sgd_tensor_weight_decay():
    def build(cls, extra):
        g = torch.Generator().manual_seed(17)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((37,), (7, 5))]
        return cls(ps, lr=torch.tensor(0.05), momentum=0.9, weight_decay=torch.tensor(0.01), **extra), ps

    fo_s, th_s = _run_pair("SGD", build, lambda *a: None, steps=3)
    for s, (a, b) in enumerate(zip(fo_s, th_s)):
        _assert_same_params(a, b, f"SGD tensor weight_decay step {s}")


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_default_dtype_float64_step_counter(name):
    """With torch's default dtype float64, torch's for-loop path keeps `step`
    as a float64 tensor; fusedoptim must too, and step identically."""
    torch.set_default_dtype(torch.float64)  # restored by conftest
    fo, th = _pair(name)
    outs = []
    for cls in (fo, th):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 37))
        opt = cls([w], lr=0.01)
        for s in range(3):
            w.grad = R.default_grad(s, 0, w.shape, w.dtype)
            opt.step()
        outs.append((w.detach().clone(), opt.state[w]["step"]))
    assert outs[0][1].dtype == outs[1][1].dtype == torch.float64
    assert float(outs[0][1]) == float(outs[1][1]) == 3.0
    R.compare_tensor(outs[0][0], outs[1][0], "close", f"{name} default dtype float64",
                     rtol=R.FP64_RTOL, atol=R.FP64_ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_flat_buffer_params_and_grads(name):
    """Params and grads that are views into one flat buffer each (as with
    flattened-parameter wrappers): storage offsets are honoured."""
    info = INFOS[name]
    kw = dict(info.configs[-1].kwargs)
    shapes = [(37,), (7, 5), (3,), (4, 4)]
    sizes = [int(torch.Size(s).numel()) for s in shapes]
    outs = []
    for cls, extra in ((info.fo_cls, {}), (info.torch_cls, {"fused": True})):
        flat = torch.randn(sum(sizes) + 3, generator=torch.Generator().manual_seed(18))
        gflat = torch.zeros_like(flat)
        params, grads, off = [], [], 1
        for s, n in zip(shapes, sizes):
            params.append(torch.nn.Parameter(flat[off:off + n].view(s)))
            grads.append(gflat[off:off + n].view(s))
            off += n
        opt = cls(params, **kw, **extra)
        for step in range(3):
            gflat.copy_(R.default_grad(step, 0, gflat.shape, gflat.dtype))
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
        outs.append(flat.clone())
        assert params[0].data_ptr() == flat.data_ptr() + 4  # still a view of the flat buffer
    R.compare_tensor(outs[0], outs[1], R.fp32_mode(), f"{name} flat-buffer params")


@pytest.mark.parametrize("name", NAMES)
def test_expanded_grad(name):
    """A grad with a zero stride (expanded from one value): torch's fused
    kernel would read past its one-element storage; the result must be the
    for-loop's."""
    info = INFOS[name]
    kw = dict(info.configs[-1].kwargs)
    outs = []
    for cls, extra in ((info.fo_cls, {}), (info.torch_cls, {"foreach": False})):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 37))
        opt = cls([w], **kw, **extra)
        for s in range(3):
            w.grad = torch.tensor([0.5 + s]).expand(37)
            opt.step()
        outs.append(w.detach().clone())
    R.compare_tensor(outs[0], outs[1], "close", f"{name} expanded grad")
