"""Checkpoints move both ways between fusedoptim and torch.optim mid-training,
bad checkpoints are rejected with ValueError before anything changes, and a
checkpoint's layout (contiguous state for a transposed param) is handled."""
import copy

import pytest
import torch

import registry as R

SHAPES = [R.ShapeCase("21", (21,)), R.ShapeCase("T33x7", (33, 7), param_layout="T")]


def _build(cls, kwargs, shape, override, flags=None):
    params = R.make_params(shape, torch.float32)
    opt = cls(R.make_groups(params, override), **kwargs, **(flags or {}))
    return opt, params


def _steps(opt, params, shape, start, stop):
    for s in range(start, stop):
        for k, p in enumerate(params):
            if k == R.NO_GRAD:
                p.grad = None
                continue
            g = R.default_grad(s, k, p.shape, p.dtype)
            p.grad = R.to_layout(g, "C" if k in (2, 5) else shape.param_layout)
        opt.step()


def _compare_runs(a_opt, a_params, b_opt, b_params, mode, label):
    for k, (pa, pb) in enumerate(zip(a_params, b_params)):
        R.compare_tensor(pa.detach(), pb.detach(), mode, f"{label} P{k}")
        R.compare_state(a_opt.state.get(pa), b_opt.state.get(pb), mode, f"{label} P{k}",
                        check_step_dtype=False)


@pytest.mark.parametrize("direction", ["fused->torch", "torch->fused"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.id)
@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_checkpoint_round_trip_mid_training(info, config, shape, direction):
    override = info.group1_override(config.kwargs)
    fused = R.oracle_flags(info)
    # uninterrupted torch (fused) run: the oracle
    ref_opt, ref_params = _build(info.torch_cls, config.kwargs, shape, override, fused)
    _steps(ref_opt, ref_params, shape, 0, 6)

    # param_groups carry the foreach/fused flags, and load_state_dict takes them
    # from the checkpoint: the fusedoptim run records fused=True so that the
    # torch continuation runs torch's fused kernel, as the oracle does
    if direction == "fused->torch":
        first_cls, first_flags, second_cls, second_flags = info.fo_cls, fused, info.torch_cls, fused
    else:
        first_cls, first_flags, second_cls, second_flags = info.torch_cls, fused, info.fo_cls, None
    opt1, params1 = _build(first_cls, config.kwargs, shape, override, first_flags)
    _steps(opt1, params1, shape, 0, 3)
    sd = copy.deepcopy(opt1.state_dict())
    # a fresh model holding the trained values, a fresh optimizer loading the checkpoint
    params2 = R.make_params(shape, torch.float32)
    with torch.no_grad():
        for p2, p1 in zip(params2, params1):
            p2.copy_(p1)
    opt2 = second_cls(R.make_groups(params2, override), **config.kwargs, **(second_flags or {}))
    opt2.load_state_dict(sd)
    _steps(opt2, params2, shape, 3, 6)
    _compare_runs(opt2, params2, ref_opt, ref_params, R.oracle_mode(info),
                  f"{info.name}[{config.id}] {shape.id} {direction}")


@pytest.mark.parametrize("info,config", R.optim_config_params())
def test_state_dict_structure_matches_torch(info, config):
    """Same `state` entries, same per-param keys, same param_groups."""
    shape = R.ShapeCase("21", (21,))
    override = info.group1_override(config.kwargs)
    a_opt, a_params = _build(info.fo_cls, config.kwargs, shape, override)
    b_opt, b_params = _build(info.torch_cls, config.kwargs, shape, override, R.oracle_flags(info))
    _steps(a_opt, a_params, shape, 0, 2)
    _steps(b_opt, b_params, shape, 0, 2)
    sa, sb = a_opt.state_dict(), b_opt.state_dict()
    assert sa.keys() == sb.keys()
    assert {k: sorted(v) for k, v in sa["state"].items()} == {k: sorted(v) for k, v in sb["state"].items()}
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        gb = dict(gb)
        ga = R.torch_group_view(ga, gb)
        if info.fused_oracle:
            assert ga.pop("fused") is None and gb.pop("fused") is True
        else:
            assert ga.pop("foreach") is None and gb.pop("foreach") is False
        assert ga == gb
    for pid, st in sb["state"].items():
        for k, v in st.items():
            if k == "step":
                assert sa["state"][pid][k].dtype == v.dtype and float(sa["state"][pid][k]) == float(v)
            else:
                R.compare_tensor(sa["state"][pid][k], v, R.oracle_mode(info), f"{info.name} state {pid} {k}")


def test_contiguous_checkpoint_for_transposed_param():
    """A torch checkpoint made with contiguous params, loaded for the same
    values held in a transposed Parameter: the state is taken in the param's
    layout and training continues correctly."""
    import fusedoptim

    for name, kw in (("Adam", dict(lr=0.01, amsgrad=True)), ("SGD", dict(lr=0.1, momentum=0.9)),
                     ("AdamW", dict(lr=0.01))):
        fo_cls, th_cls = getattr(fusedoptim, name), getattr(torch.optim, name)
        base = torch.randn(33, 7, generator=torch.Generator().manual_seed(4))
        grads = [R.default_grad(s, 0, (33, 7), torch.float32) for s in range(6)]

        pc = torch.nn.Parameter(base.clone())
        t = th_cls([pc], **kw, fused=True)
        for g in grads[:3]:
            pc.grad = g.clone()
            t.step()
        sd = copy.deepcopy(t.state_dict())
        for v in sd["state"][0].values():
            assert not torch.is_tensor(v) or v.dim() == 0 or v.is_contiguous()

        def transposed(x):
            return torch.nn.Parameter(x.detach().t().contiguous().t())

        # fusedoptim, transposed param, contiguous checkpoint
        pt = transposed(pc)
        o = fo_cls([pt], **kw)
        # torch's load_state_dict keeps the checkpoint's tensors when they need
        # no cast (and then updates them in place): always load a copy
        o.load_state_dict(copy.deepcopy(sd))
        for g in grads[3:]:
            pt.grad = R.to_layout(g, "T")
            o.step()
        for k, v in o.state[pt].items():
            if torch.is_tensor(v) and v.dim() == 2:
                assert v.stride() == pt.stride(), f"{name} state[{k}] not in the param's layout"
        # oracle 1: torch fused on the transposed param with the state relaid out
        # like the param (the only layout its fused kernel handles correctly)
        pr = transposed(pc)
        tr = th_cls([pr], **kw, fused=True)
        sd_t = copy.deepcopy(sd)
        sd_t["state"][0] = {k: (R.to_layout(v, "T") if torch.is_tensor(v) and v.dim() == 2 else v)
                            for k, v in sd_t["state"][0].items()}
        tr.load_state_dict(sd_t)
        for g in grads[3:]:
            pr.grad = R.to_layout(g, "T")
            tr.step()
        R.compare_tensor(pt.detach(), pr.detach(), R.fp32_mode(), f"{name} transposed, vs torch fused")
        R.compare_state(o.state[pt], tr.state[pr], R.fp32_mode(), f"{name} transposed state")
        # oracle 2: torch's for-loop straight from the contiguous checkpoint
        pl = transposed(pc)
        tl = th_cls([pl], **kw)
        tl.load_state_dict(copy.deepcopy(sd))
        for g in tl.param_groups:  # the checkpoint says fused=True: take the for-loop
            g.update(fused=False, foreach=False)
        for g in grads[3:]:
            pl.grad = R.to_layout(g, "T")
            tl.step()
        R.compare_tensor(pt.detach(), pl.detach(), "close", f"{name} transposed, vs torch for-loop")


# --------------------------------------------------------- bad checkpoints -------


def _trained(info, config, steps=3):
    shape = R.ShapeCase("21", (21,))
    override = info.group1_override(config.kwargs)
    opt, params = _build(info.fo_cls, config.kwargs, shape, override)
    _steps(opt, params, shape, 0, steps)
    return opt, params, shape, override


def _frozen(opt, params):
    return (
        [p.detach().clone() for p in params],
        copy.deepcopy(opt.state_dict()),
    )


def _assert_same_as(opt, params, frozen, label):
    vals, sd = frozen
    for k, (p, v) in enumerate(zip(params, vals)):
        R.assert_bitwise_equal(p.detach(), v, f"{label} P{k}")
    now = opt.state_dict()
    assert now["param_groups"] == sd["param_groups"], f"{label}: param_groups changed"
    assert now["state"].keys() == sd["state"].keys(), f"{label}: state entries changed"
    for pid, st in sd["state"].items():
        assert now["state"][pid].keys() == st.keys(), f"{label}: state keys of {pid} changed"
        for k, v in st.items():
            if torch.is_tensor(v):
                R.assert_bitwise_equal(now["state"][pid][k], v, f"{label}: state {pid} {k}")
            else:
                assert now["state"][pid][k] == v


def _continue_and_compare(info, config, opt, params, shape, override, label):
    """The optimizer that rejected a checkpoint keeps stepping exactly like an
    uninterrupted torch fused run."""
    _steps(opt, params, shape, 3, 5)
    ref_opt, ref_params = _build(info.torch_cls, config.kwargs, shape, override, R.oracle_flags(info))
    _steps(ref_opt, ref_params, shape, 0, 5)
    _compare_runs(opt, params, ref_opt, ref_params, R.oracle_mode(info), label)


def _corrupt_missing_key(info, sd):
    if info.name == "SGD":
        pytest.skip("SGD has no required per-param state key (momentum_buffer may be None)")
    st, key = _tensor_state(sd)
    if len(st) == 1:
        pytest.skip(f"{info.name}'s only state key: without it the state is empty, i.e. fresh")
    del st[key]


def _corrupt_missing_max(info, sd):
    if info.name not in ("Adam", "AdamW"):
        pytest.skip(f"{info.name} has no max_exp_avg_sq")
    for g in sd["param_groups"]:
        g["amsgrad"] = True  # requires max_exp_avg_sq, which the checkpoint does not have
    for st in sd["state"].values():
        st.pop("max_exp_avg_sq", None)


def _tensor_state(sd, last=False):
    """(state dict of a param, key) of a per-param state tensor with dim > 0."""
    pids = sorted(sd["state"], reverse=last)
    for pid in pids:
        for k, v in sd["state"][pid].items():
            if torch.is_tensor(v) and v.dim() > 0 and v.numel() == 21:
                return sd["state"][pid], k
    pytest.skip("no per-param state tensor to corrupt")


def _corrupt_shape(info, sd):
    st, key = _tensor_state(sd, last=True)
    st[key] = torch.zeros(st[key].numel() + 1)


def _corrupt_shape_same_numel(info, sd):
    st, key = _tensor_state(sd)
    st[key] = st[key].reshape(3, 7)


def _corrupt_step(info, sd):
    if "step" not in sd["state"].get(0, {}):
        pytest.skip(f"{info.name} has no step")
    sd["state"][0]["step"] = torch.tensor([1.0, 2.0])


def _corrupt_group_count(info, sd):
    sd["param_groups"] = sd["param_groups"][:1]


def _corrupt_param_count(info, sd):
    g = sd["param_groups"][1]
    g["params"] = g["params"][:-1]


def _corrupt_dtype(info, sd):
    st, key = _tensor_state(sd)
    st[key] = torch.zeros(st[key].shape, dtype=torch.int64)


def _step_state(info, sd):
    """A per-param state dict holding a `step`; skip for optimizers without one."""
    for pid in sorted(sd["state"]):
        if "step" in sd["state"][pid]:
            return sd["state"][pid]
    pytest.skip(f"{info.name} keeps no per-param step")


def _set_step(value):
    def corrupt(info, sd):
        _step_state(info, sd)["step"] = value() if callable(value) else value
    return corrupt


def _corrupt_tensor_with(make):
    def corrupt(info, sd):
        st, key = _tensor_state(sd)
        st[key] = make(st[key])
    return corrupt


def _corrupt_state_not_dict(info, sd):
    pid = sorted(sd["state"])[0]
    sd["state"][pid] = list(sd["state"][pid].values())


def _corrupt_state_for_unknown_id(info, sd):
    pid = sorted(sd["state"])[0]
    sd["state"][10_000] = copy.deepcopy(sd["state"][pid])


def _corrupt_duplicate_id(info, sd):
    sd["param_groups"][1]["params"][0] = sd["param_groups"][0]["params"][0]


def _corrupt_group_without_params(info, sd):
    del sd["param_groups"][1]["params"]


def _corrupt_groups_not_list(info, sd):
    sd["param_groups"] = {i: g for i, g in enumerate(sd["param_groups"])}


def _corrupt_state_not_dict_top(info, sd):
    sd["state"] = list(sd["state"].values())


def _corrupt_missing_lr(info, sd):
    del sd["param_groups"][0]["lr"]


def _corrupt_lr_string(info, sd):
    sd["param_groups"][1]["lr"] = "0.1"


def _corrupt_bool_hparam(info, sd):
    sd["param_groups"][0]["maximize"] = "yes"


def _corrupt_tuple_hparam(info, sd):
    g = sd["param_groups"][0]
    keys = [k for k, v in g.items() if isinstance(v, tuple)]
    if not keys:
        pytest.skip(f"{info.name} has no tuple hyper-parameter (betas)")
    g[keys[0]] = g[keys[0]][:1]


CORRUPTIONS = {
    "missing_key": _corrupt_missing_key,
    "missing_max_exp_avg_sq": _corrupt_missing_max,
    "misshaped": _corrupt_shape,
    "misshaped_same_numel": _corrupt_shape_same_numel,
    "step_not_scalar": _corrupt_step,
    "wrong_group_count": _corrupt_group_count,
    "wrong_param_count": _corrupt_param_count,
    "integer_state": _corrupt_dtype,
    # step: type and value
    "step_bool": _set_step(lambda: torch.tensor(True)),
    "step_complex": _set_step(lambda: torch.tensor(1 + 2j)),
    "step_string": _set_step("3"),
    "step_negative": _set_step(lambda: torch.tensor(-2.0)),
    "step_nan": _set_step(float("nan")),
    "step_inf": _set_step(lambda: torch.tensor(float("inf"))),
    "step_fractional": _set_step(2.5),
    # state tensors: dtype, layout, storage, type
    "complex_state": _corrupt_tensor_with(lambda t: t.to(torch.complex64)),
    "bool_state": _corrupt_tensor_with(lambda t: t > 0),
    "sparse_state": _corrupt_tensor_with(lambda t: t.to_sparse()),
    "meta_state": _corrupt_tensor_with(lambda t: t.to("meta")),
    "list_state": _corrupt_tensor_with(lambda t: t.tolist()),
    # structure
    "state_entry_not_dict": _corrupt_state_not_dict,
    "state_not_dict": _corrupt_state_not_dict_top,
    "state_for_unknown_id": _corrupt_state_for_unknown_id,
    "duplicate_param_id": _corrupt_duplicate_id,
    "group_without_params": _corrupt_group_without_params,
    "param_groups_not_list": _corrupt_groups_not_list,
    # hyper-parameters
    "missing_lr": _corrupt_missing_lr,
    "lr_string": _corrupt_lr_string,
    "bool_hparam_not_bool": _corrupt_bool_hparam,
    "betas_too_short": _corrupt_tuple_hparam,
}
# corruptions that need some per-param state to corrupt
NEEDS_STATE = {k for k in CORRUPTIONS if k not in (
    "wrong_group_count", "wrong_param_count", "duplicate_param_id", "group_without_params",
    "param_groups_not_list", "missing_lr", "lr_string", "bool_hparam_not_bool", "betas_too_short",
)}

CONFIG_PICK = [pytest.param(o, o.configs[i], id=f"{o.name}-{o.configs[i].id}")
               for o in R.OPTIMS for i in (0, len(o.configs) - 1)]


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
@pytest.mark.parametrize("info,config", CONFIG_PICK)
def test_bad_checkpoint_rejected_and_optimizer_unchanged(info, config, corruption):
    opt, params, shape, override = _trained(info, config)
    sd = copy.deepcopy(opt.state_dict())
    if not any(sd["state"].get(i) for i in sd["state"]) and corruption in NEEDS_STATE:
        pytest.skip("no per-param state to corrupt (SGD without momentum)")
    CORRUPTIONS[corruption](info, sd)
    frozen = _frozen(opt, params)
    with pytest.raises(ValueError):
        opt.load_state_dict(sd)
    label = f"{info.name}[{config.id}] rejected {corruption}"
    _assert_same_as(opt, params, frozen, label)
    _continue_and_compare(info, config, opt, params, shape, override, label)


def test_bad_checkpoint_messages_name_the_problem():
    info = R.ADAM_INFO
    config = info.configs[0]
    opt, params, _, _ = _trained(info, config)
    good = opt.state_dict()
    cases = [
        (_corrupt_missing_key, "exp_avg_sq"),
        (_corrupt_shape, "shape"),
        (_corrupt_group_count, "parameter groups"),
        (_corrupt_param_count, "size"),
        (_set_step(lambda: torch.tensor(-2.0)), "'step' of param 0 must be a whole number >= 0"),
        (_set_step(lambda: torch.tensor(True)), "'step' of param 0 must be a real number"),
        (_corrupt_tensor_with(lambda t: t.to(torch.complex64)), "dtype torch.complex64"),
        (_corrupt_tensor_with(lambda t: t.to("meta")), "device meta"),
        (_corrupt_state_for_unknown_id, "param id 10000, which no param group lists"),
        (_corrupt_duplicate_id, "listed twice"),
        (_corrupt_missing_lr, "param group 0 has no 'lr'"),
        (_corrupt_lr_string, "param group 1 'lr' must be a number"),
        (_corrupt_tuple_hparam, "'betas' must be a sequence of 2"),
    ]
    for corrupt, word in cases:
        sd = copy.deepcopy(good)
        corrupt(info, sd)
        with pytest.raises(ValueError, match=word):
            opt.load_state_dict(sd)


def test_load_state_dict_pre_hook_can_repair_a_checkpoint():
    """torch runs load_state_dict pre-hooks before it looks at the checkpoint,
    so a hook can adapt a checkpoint (here: state stored flattened). fusedoptim
    must accept what the hook returns, not reject the raw input."""
    import fusedoptim

    outs = []
    for cls in (fusedoptim.Adam, torch.optim.Adam):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(3, 5))
        opt = cls([w], lr=0.01)
        w.grad = torch.randn(3, 5)
        opt.step()
        sd = copy.deepcopy(opt.state_dict())
        for k in ("exp_avg", "exp_avg_sq"):
            sd["state"][0][k] = sd["state"][0][k].reshape(-1)  # "flattened" checkpoint format

        def unflatten(o, state_dict):
            state_dict = copy.deepcopy(state_dict)
            for k in ("exp_avg", "exp_avg_sq"):
                state_dict["state"][0][k] = state_dict["state"][0][k].reshape(3, 5)
            return state_dict

        opt.register_load_state_dict_pre_hook(unflatten)
        opt.load_state_dict(sd)
        w.grad = torch.ones(3, 5)
        opt.step()
        outs.append(w.detach().clone())
    R.compare_tensor(outs[0], outs[1], "close", "pre-hook repaired checkpoint")


def test_load_then_state_dict_round_trip_is_identity():
    info = R.ADAM_INFO
    config = info.configs[-1]
    opt, params, _, _ = _trained(info, config)
    sd = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(sd)
    sd2 = opt.state_dict()
    assert sd2["param_groups"] == sd["param_groups"]
    for pid, st in sd["state"].items():
        for k, v in st.items():
            R.assert_bitwise_equal(sd2["state"][pid][k], v, f"round trip {pid} {k}")


def test_torch_save_load_file_round_trip(tmp_path):
    import fusedoptim

    w = torch.nn.Parameter(torch.randn(21))
    opt = fusedoptim.AdamW([w], lr=0.01)
    w.grad = torch.randn(21)
    opt.step()
    path = tmp_path / "opt.pt"
    torch.save(opt.state_dict(), path)
    t = torch.optim.AdamW([w], lr=0.01)
    t.load_state_dict(torch.load(path, weights_only=True))
    o2 = fusedoptim.AdamW([w], lr=0.01)
    o2.load_state_dict(torch.load(path, weights_only=True))
    for k in ("exp_avg", "exp_avg_sq"):
        R.assert_bitwise_equal(o2.state[w][k], opt.state[w][k], k)
        R.assert_bitwise_equal(t.state[w][k], opt.state[w][k], k)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_old_checkpoint_with_number_step(name):
    """Old checkpoints store `step` as a Python number: loaded and continued
    as torch does."""
    import fusedoptim

    outs = []
    for cls, extra in ((getattr(fusedoptim, name), {}), (getattr(torch.optim, name), {"fused": True})):
        w = torch.nn.Parameter(torch.linspace(-1, 1, 21))
        opt = cls([w], lr=0.01, **extra)
        w.grad = torch.ones(21)
        opt.step()
        sd = copy.deepcopy(opt.state_dict())
        sd["state"][0]["step"] = 1  # an int, as very old torch saved it
        opt2 = cls([w], lr=0.01, **extra)
        opt2.load_state_dict(sd)
        for s in range(3):
            w.grad = R.default_grad(s, 0, w.shape, w.dtype)
            opt2.step()
        assert torch.is_tensor(opt2.state[w]["step"]) and float(opt2.state[w]["step"]) == 4.0
        outs.append(w.detach().clone())
    R.compare_tensor(outs[0], outs[1], R.fp32_mode(), f"{name} old checkpoint")


# ------------------------------------------- checkpoints torch accepts, so do we --


def _lenient_numpy_lr(sd, info):
    import numpy as np

    for g in sd["param_groups"]:
        g["lr"] = np.float32(g["lr"])


def _lenient_list_tuples(sd, info):
    for g in sd["param_groups"]:
        for k, v in list(g.items()):
            if isinstance(v, tuple):
                g[k] = list(v)


def _lenient_tensor_lr(sd, info):
    for g in sd["param_groups"]:
        g["lr"] = torch.tensor(float(g["lr"]))


def _lenient_old_keys_missing(sd, info):
    """An old checkpoint: group keys the class's __setstate__ fills in are absent."""
    from fusedoptim._validate import _setstate_fills

    filled = _setstate_fills(info.fo_cls([torch.nn.Parameter(torch.zeros(1))]))
    for g in sd["param_groups"]:
        for k in filled:
            if k not in ("fused", "foreach"):
                g.pop(k, None)


LENIENT = {"numpy_lr": _lenient_numpy_lr, "list_betas": _lenient_list_tuples, "tensor_lr": _lenient_tensor_lr,
           "old_keys_missing": _lenient_old_keys_missing}


@pytest.mark.parametrize("variant", list(LENIENT))
@pytest.mark.parametrize("info,config", CONFIG_PICK)
def test_checkpoints_torch_accepts_load_and_continue_like_torch(info, config, variant):
    """Validation rejects corruption, not checkpoints torch takes: each variant
    loads into fusedoptim and into torch (fused) and both continue identically."""
    opt, params, shape, override = _trained(info, config)
    base = copy.deepcopy(opt.state_dict())
    runs = []
    for cls, flags in ((info.fo_cls, None), (info.torch_cls, R.oracle_flags(info))):
        sd = copy.deepcopy(base)
        LENIENT[variant](sd, info)
        o, ps = _build(cls, config.kwargs, shape, override, flags)
        with torch.no_grad():
            for p, q in zip(ps, params):
                p.copy_(q)
        o.load_state_dict(sd)
        for g in o.param_groups:  # the checkpoint's flags: pick each side's kernel
            for k in ("fused", "foreach"):
                if k in g:
                    g[k] = bool((flags or {}).get(k, False)) if cls is info.torch_cls else None
        _steps(o, ps, shape, 3, 5)
        runs.append((o, ps))
    _compare_runs(runs[0][0], runs[0][1], runs[1][0], runs[1][1], R.oracle_mode(info),
                  f"{info.name}[{config.id}] {variant}")
