"""Bad input: a clear error that names the problem, raised BEFORE anything
changes -- params and optimizer state are exactly as they were (no
half-applied step), also when only the second of two groups is bad -- and the
optimizer keeps stepping correctly once the input is fixed."""
import pytest
import torch

import fusedoptim
import registry as R

NAMES = ["SGD", "Adam", "AdamW"]
INFOS = {o.name: o for o in R.OPTIMS}
KW = {"SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.01), "Adam": dict(lr=0.01, amsgrad=True),
      "AdamW": dict(lr=0.01)}


def _deep_state(opt):
    """Per-param state by param id; empty entries (a defaultdict lookup, as
    torch's own SGD makes) do not count as state."""
    return {
        id(p): {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in st.items()}
        for p, st in opt.state.items()
        if st
    }


def _capture(opt, params):
    return [p.detach().clone() for p in params], _deep_state(opt), [p._version for p in params]


def _assert_unchanged(before, opt, params, what):
    vals, state, _ = before
    for i, (v, p) in enumerate(zip(vals, params)):
        if p.device.type == "meta":
            continue
        R.assert_bitwise_equal(p.detach(), v, f"{what}: param {i} changed by a failed step")
    now = _deep_state(opt)
    assert set(now) == set(state), (
        f"{what}: a failed step created/removed state: before {len(state)} params with state, "
        f"after {len(now)} ({[sorted(v) for k, v in now.items() if k not in state]})"
    )
    for pid, st in state.items():
        assert set(now[pid]) == set(st), f"{what}: state keys changed by a failed step"
        for k, v in st.items():
            if torch.is_tensor(v):
                if v.device.type == "meta":
                    continue
                R.assert_bitwise_equal(now[pid][k], v, f"{what}: state[{k!r}] changed by a failed step")
            else:
                assert now[pid][k] == v


def _setup(name, two_groups=True, warm_steps=2):
    """Two groups (or one), stepped `warm_steps` times so state exists."""
    info = INFOS[name]
    g = torch.Generator().manual_seed(21)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((21,), (3, 5), (4,), (7,))]
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.05}] if two_groups else [{"params": params}]
    opt = info.fo_cls(groups, **KW[name])
    for s in range(warm_steps):
        for k, p in enumerate(params):
            p.grad = R.default_grad(s, k, p.shape, p.dtype)
        opt.step()
    for k, p in enumerate(params):
        p.grad = R.default_grad(warm_steps, k, p.shape, p.dtype)
    return opt, params


def _torch_reference(name, n_steps, two_groups=True):
    """The same run with torch fused and only good input: where a recovered
    fusedoptim run must end up."""
    info = INFOS[name]
    g = torch.Generator().manual_seed(21)
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((21,), (3, 5), (4,), (7,))]
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.05}] if two_groups else [{"params": params}]
    opt = info.torch_cls(groups, **KW[name], fused=True)
    for s in range(n_steps):
        for k, p in enumerate(params):
            p.grad = R.default_grad(s, k, p.shape, p.dtype)
        opt.step()
    return params


def _recover_and_check(name, opt, params, warm_steps=2, fix=None):
    """Restore good grads, step, and compare with an uninterrupted torch run."""
    if fix is not None:
        fix()
    for k, p in enumerate(params):
        p.grad = R.default_grad(warm_steps, k, p.shape, p.dtype)
    opt.step()
    ref = _torch_reference(name, warm_steps + 1)
    for i, (a, b) in enumerate(zip(params, ref)):
        R.compare_tensor(a.detach(), b.detach(), R.fp32_mode(), f"{name} after recovery, param {i}")


# ------------------------------------------------------------- wrong shapes ------

BAD_WHERE = [0, 3]  # first group, or only the second group


@pytest.mark.parametrize("where", BAD_WHERE, ids=["group0", "group1_only"])
@pytest.mark.parametrize("name", NAMES)
def test_grad_data_wrong_shape(name, where):
    opt, params = _setup(name)
    good = params[where].grad
    params[where].grad = good.clone()
    params[where].grad.data = torch.randn(params[where].numel() + 3)
    before = _capture(opt, params)
    with pytest.raises(RuntimeError, match="shape") as e:
        opt.step()
    assert name in str(e.value)
    _assert_unchanged(before, opt, params, f"{name} grad shape")
    _recover_and_check(name, opt, params)


def _check_param_data_replaced(name, where, new_data, match):
    """p.data replaced after its grad was set: the step fails naming `match`,
    nothing moves, and the optimizer recovers once p.data is restored."""
    opt, params = _setup(name)
    p = params[where]
    old = p.data
    p.data = new_data(p)
    before = _capture(opt, params)
    with pytest.raises(RuntimeError, match=match):
        opt.step()
    _assert_unchanged(before, opt, params, f"{name} param {match}")

    def fix():
        p.data = old

    _recover_and_check(name, opt, params, fix=fix)


@pytest.mark.parametrize("where", BAD_WHERE, ids=["group0", "group1_only"])
@pytest.mark.parametrize("name", NAMES)
def test_param_data_replaced_with_other_shape(name, where):
    _check_param_data_replaced(name, where, lambda p: torch.randn(p.numel() + 5), "shape")


@pytest.mark.parametrize("where", BAD_WHERE, ids=["group0", "group1_only"])
@pytest.mark.parametrize("name", NAMES)
def test_grad_same_numel_other_shape(name, where):
    """Same number of elements, other shape (3x5 vs 5x3 / 21 vs 3x7): still an
    error, not a silent reinterpretation."""
    opt, params = _setup(name)
    idx = 1 if where == 0 else 3
    p = params[idx]
    p.grad.data = torch.randn(tuple(reversed(p.shape)) if p.dim() == 2 else (1, p.numel()))
    before = _capture(opt, params)
    with pytest.raises(RuntimeError, match="shape"):
        opt.step()
    _assert_unchanged(before, opt, params, f"{name} grad same numel")
    _recover_and_check(name, opt, params)


# -------------------------------------------------------------- wrong dtype ------


@pytest.mark.parametrize("bad_dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("where", BAD_WHERE, ids=["group0", "group1_only"])
@pytest.mark.parametrize("name", NAMES)
def test_grad_wrong_dtype(name, where, bad_dtype):
    opt, params = _setup(name)
    p = params[where]
    p.grad.data = p.grad.data.to(bad_dtype)
    before = _capture(opt, params)
    with pytest.raises(RuntimeError, match="dtype"):
        opt.step()
    _assert_unchanged(before, opt, params, f"{name} grad dtype")
    _recover_and_check(name, opt, params)


@pytest.mark.parametrize("where", BAD_WHERE, ids=["group0", "group1_only"])
@pytest.mark.parametrize("name", NAMES)
def test_param_data_replaced_with_other_dtype(name, where):
    _check_param_data_replaced(name, where, lambda p: p.data.double(), "dtype")


# ---------------------------------------------------------------- sparse ---------


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_sparse_grad_rejected_like_torch(name):
    info = INFOS[name]
    errs = []
    for cls, extra in ((info.fo_cls, {}), (info.torch_cls, {}), (info.torch_cls, {"fused": True})):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(6, 3, sparse=True)
        dense = torch.nn.Parameter(torch.randn(5))
        opt = cls([{"params": [dense]}, {"params": list(emb.parameters())}], lr=0.1, **extra)
        dense.grad = torch.randn(5)
        emb(torch.tensor([1, 4])).sum().backward()
        w_before, d_before = emb.weight.detach().clone(), dense.detach().clone()
        with pytest.raises(RuntimeError) as e:
            opt.step()
        errs.append(str(e.value))
        if cls is info.fo_cls:
            R.assert_bitwise_equal(emb.weight.detach(), w_before, "embedding changed")
            R.assert_bitwise_equal(dense.detach(), d_before, "dense param of group 0 changed")
            assert all(len(st) == 0 for st in opt.state.values()), (
                f"a failed step left state behind: {[sorted(st) for st in opt.state.values()]}")
    assert "sparse" in errs[0].lower()
    assert "SparseAdam" in errs[0]
    assert errs[1].startswith("Adam does not support sparse gradients")


# ---------------------------------------------------------------- devices --------


def _meta_param(n):
    try:
        p = torch.nn.Parameter(torch.randn(n, device="meta"))
        p.grad = torch.randn(n, device="meta")
        return p
    except Exception as e:  # pragma: no cover - depends on the torch build
        pytest.skip(f"meta tensors unavailable: {e}")


@pytest.mark.parametrize("name", NAMES)
def test_params_on_several_devices_in_one_group(name):
    """torch accepts one group mixing devices (its for-loop runs per param):
    so does fusedoptim, each device's params taking their own path."""
    info = INFOS[name]
    g = torch.Generator().manual_seed(22)
    a = torch.nn.Parameter(torch.randn(9, generator=g))
    other = torch.nn.Parameter(torch.randn(4, generator=g))
    m = _meta_param(9)
    opt = info.fo_cls([{"params": [other]}, {"params": [a, m]}], **KW[name])
    ref = [torch.nn.Parameter(t.detach().clone()) for t in (other, a)]
    theirs = info.torch_cls([{"params": [ref[0]]}, {"params": [ref[1]]}], **KW[name])
    a.grad = torch.randn(9, generator=g)
    other.grad = torch.randn(4, generator=g)
    ref[0].grad, ref[1].grad = other.grad.clone(), a.grad.clone()
    opt.step()
    theirs.step()
    for p, q in zip((other, a), ref):
        R.compare_tensor(p.detach(), q.detach(), "close", f"{name} mixed devices (vs torch for-loop)")
    assert set(opt.state[m]) == set(opt.state[a])


@pytest.mark.parametrize("name", NAMES)
def test_meta_params_in_their_own_group_take_torchs_path(name):
    """One device per group is fine: a meta group steps through torch."""
    info = INFOS[name]
    a = torch.nn.Parameter(torch.randn(9))
    m = _meta_param(9)
    opt = info.fo_cls([{"params": [a]}, {"params": [m]}], **KW[name])
    a.grad = torch.randn(9)
    opt.step()
    assert m.device.type == "meta"


# ---------------------------------------------------------- non-float params -----


@pytest.mark.parametrize("fused", [None, True], ids=["default", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_integer_param_like_torch(name, fused):
    """torch accepts an integer tensor at construction and fails at step();
    fusedoptim fails there too, with a RuntimeError that names the problem (torch's says "argument alpha must not be a floating point
    number")."""
    info = INFOS[name]
    outcomes = []
    for cls in (info.fo_cls, info.torch_cls):
        p = torch.tensor([1, 2, 3])
        opt = cls([p], lr=0.1, fused=fused)  # accepted, as torch does
        p.grad = torch.tensor([1, 1, 1])
        with pytest.raises(Exception) as e:
            opt.step()
        outcomes.append((type(e.value), str(e.value)))
        assert torch.equal(p, torch.tensor([1, 2, 3]))
    # torch raises RuntimeError (SGD) or its subclass NotImplementedError (Adam)
    assert outcomes[0][0] is RuntimeError and issubclass(outcomes[1][0], RuntimeError)
    assert "dtype torch.int64" in outcomes[0][1] and "floating-point" in outcomes[0][1]


@pytest.mark.parametrize("name", NAMES)
def test_integer_param_next_to_float_param_no_half_step(name):
    """A group with a float param and an integer param: the step fails (as in
    torch) and, fusedoptim validating first, the float param is untouched."""
    info = INFOS[name]
    f = torch.nn.Parameter(torch.ones(5))
    i = torch.tensor([1, 2])
    opt = info.fo_cls([f, i], lr=0.1)
    f.grad = torch.ones(5)
    i.grad = torch.tensor([1, 1])
    before = _capture(opt, [f])
    with pytest.raises(Exception):
        opt.step()
    _assert_unchanged(before, opt, [f], f"{name} float param next to an integer param")


def test_nonleaf_param_rejected_like_torch():
    w = torch.randn(3, requires_grad=True)
    for cls in (fusedoptim.SGD, torch.optim.SGD):
        with pytest.raises(ValueError, match="non-leaf"):
            cls([w * 2], lr=0.1)


def test_duplicate_params_rejected_like_torch():
    w = torch.nn.Parameter(torch.ones(3))
    msgs = []
    for cls in (fusedoptim.Adam, torch.optim.Adam):
        with pytest.raises(ValueError) as e:
            cls([{"params": [w]}, {"params": [w]}])
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1]


# ------------------------------------------------------ invalid hyper-params ------

BAD_HP = [
    ("SGD", dict(lr=-0.1), "learning rate"),
    ("SGD", dict(momentum=-1.0), "momentum"),
    ("SGD", dict(weight_decay=-1.0), "weight_decay"),
    ("SGD", dict(nesterov=True), "Nesterov"),
    ("Adam", dict(lr=-0.1), "learning rate"),
    ("Adam", dict(eps=-1.0), "epsilon"),
    ("Adam", dict(betas=(1.0, 0.9)), "beta"),
    ("Adam", dict(betas=(0.9, 1.5)), "beta"),
    ("Adam", dict(weight_decay=-1.0), "weight_decay"),
    ("AdamW", dict(betas=(-0.1, 0.9)), "beta"),
    ("AdamW", dict(eps=-1e-9), "epsilon"),
]


@pytest.mark.parametrize("name,kw,word", BAD_HP, ids=[f"{n}-{'-'.join(k)}" for n, k, _ in BAD_HP])
def test_invalid_hparams_at_construction(name, kw, word):
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match=word):
        getattr(fusedoptim, name)([p], **kw)
    with pytest.raises(ValueError, match=word):
        getattr(torch.optim, name)([p], **kw)


# ------------------------------------------------------------- no state leak -----


@pytest.mark.parametrize("name", NAMES)
def test_first_step_failure_creates_no_state(name):
    """A failing FIRST step (no state yet) leaves no half-initialised state."""
    opt, params = _setup(name, warm_steps=0)
    params[3].grad.data = torch.randn(2)
    before = _capture(opt, params)
    with pytest.raises(RuntimeError, match="shape"):
        opt.step()
    _assert_unchanged(before, opt, params, f"{name} first step")
    _recover_and_check(name, opt, params, warm_steps=0)


@pytest.mark.parametrize("name", NAMES)
def test_failed_first_step_then_rebuild_steps_correctly(name):
    """A first step that fails on group 1 must not leave anything behind that a
    later step (after fusedoptim rebuilds its cached plan, here because p.data
    was replaced) or a torch optimizer loading the checkpoint would take for
    real state (e.g. an uninitialised momentum buffer)."""
    info = INFOS[name]
    outs = []
    for route in ("fusedoptim", "checkpoint->torch"):
        a = torch.nn.Parameter(torch.zeros(1000))
        b = torch.nn.Parameter(torch.zeros(4))
        groups = [{"params": [a]}, {"params": [b]}]
        opt = info.fo_cls(groups, **KW[name])
        a.grad = torch.ones(1000)
        b.grad = torch.ones(4)
        b.grad.data = torch.ones(5)  # bad grad in group 1 only
        with pytest.raises(RuntimeError, match="shape"):
            opt.step()
        b.grad = torch.ones(4)
        if route == "fusedoptim":
            a.data = a.data.clone()  # same values, new storage: the plan is rebuilt
            opt.step()
        else:
            t = info.torch_cls([{"params": [a]}, {"params": [b]}], **KW[name])
            t.load_state_dict(opt.state_dict())
            t.step()
        outs.append(a.detach().clone())
    a = torch.nn.Parameter(torch.zeros(1000))
    b = torch.nn.Parameter(torch.zeros(4))
    ref = info.torch_cls([{"params": [a]}, {"params": [b]}], **KW[name], fused=True)
    a.grad, b.grad = torch.ones(1000), torch.ones(4)
    ref.step()
    R.compare_tensor(outs[0], a.detach(), R.fp32_mode(), f"{name} failed first step, then a plan rebuild")
    R.compare_tensor(outs[1], a.detach(), R.fp32_mode(), f"{name} failed first step, then torch from checkpoint")


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_bad_grad_on_fallback_param_of_cached_plan_changes_nothing(name):
    """A group whose plan is cached and that also holds a param served by
    torch's path (bf16): a sparse grad appearing there later is rejected before
    the native params move."""
    info = INFOS[name]
    a = torch.nn.Parameter(torch.zeros(4))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))
    opt = info.fo_cls([a, b], lr=0.1)
    a.grad, b.grad = torch.ones(4), torch.ones(3, dtype=torch.bfloat16)
    opt.step()
    a.grad, b.grad = torch.ones(4), torch.ones(3, dtype=torch.bfloat16).to_sparse()
    before = _capture(opt, [a, b])
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    _assert_unchanged(before, opt, [a, b], f"{name} fallback param with a sparse grad")
