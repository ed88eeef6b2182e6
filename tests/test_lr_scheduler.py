"""fusedoptim.lr_scheduler: torch's schedulers (same sequences, state_dicts,
last_epoch semantics and errors; lr types kept), the new warmup schedulers
(closed forms), plot() and the command line."""
from __future__ import annotations

import copy
import functools
import inspect
import math
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
import torch.optim.lr_scheduler as T

import fusedoptim
import fusedoptim.lr_scheduler as F  # the submodule itself (see test_package_exposes_this_module)

STEPS = 19  # OneCycleLR(total_steps=20) allows exactly 19 steps after construction


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
class Scale:
    """A picklable lr_lambda with state (torch saves its __dict__ in state_dict)."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, epoch):
        return self.factor**epoch


class Halving:
    """A picklable CyclicLR scale_fn with state."""

    def __init__(self):
        self.base = 0.5

    def __call__(self, x):
        return self.base ** (x / 4)


OPTIMIZERS = {
    "torch.SGD": lambda groups, **kw: torch.optim.SGD(groups, momentum=0.9, **kw),
    "torch.Adam": lambda groups, **kw: torch.optim.Adam(groups, **kw),
    "fusedoptim.SGD": lambda groups, **kw: fusedoptim.SGD(groups, momentum=0.9, **kw),
    "fusedoptim.AdamW": lambda groups, **kw: fusedoptim.AdamW(groups, **kw),
}
REFERENCE = {  # torch's optimizer of the same family, driven by torch's scheduler
    "torch.SGD": "torch.SGD",
    "torch.Adam": "torch.Adam",
    "fusedoptim.SGD": "torch.SGD",
    "fusedoptim.AdamW": "torch.Adam",
}


def make_opt(kind="torch.SGD", lrs=(0.1, 0.05), tensor=False):
    groups = []
    for lr in lrs:
        p = torch.nn.Parameter(torch.zeros(3))
        groups.append({"params": [p], "lr": torch.tensor(lr, dtype=torch.float64) if tensor else lr})
    return OPTIMIZERS[kind](groups, lr=0.5)


def snap(opt, sched):
    groups = tuple(
        (float(g["lr"]), float(g["momentum"]) if "momentum" in g else float(g["betas"][0])) for g in opt.param_groups
    )
    last = tuple(float(v) for v in sched.get_last_lr()) if hasattr(sched, "_last_lr") else None
    return groups, last, getattr(sched, "last_epoch", None)


def drive(opt, sched, steps, metrics=None, epochs=None):
    """optimizer.step() (no grads: a no-op that keeps torch's order check quiet), then the scheduler."""
    out = [snap(opt, sched)]
    for i in range(steps):
        opt.step()
        if metrics is not None:
            sched.step(metrics[i])
        elif epochs is not None:
            sched.step(epochs[i])
        else:
            sched.step()
        out.append(snap(opt, sched))
    return out


def flat(x):
    """Nested tuples/lists of numbers -> flat list of floats (for pytest.approx)."""
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in flat(item)]
    return [math.nan if x is None else float(x)]


def _quiet(fn, *args, **kwargs):
    # SequentialLR's initial step of a ChainedScheduler child steps the grandchildren, and torch
    # warns about the order (its behaviour, mirrored; not what these tests are about)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`", category=UserWarning)
        return fn(*args, **kwargs)


def resumed(opt):
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"].clone() if torch.is_tensor(g["lr"]) else g["lr"]
    return opt


# every scheduler of torch.optim.lr_scheduler, several argument sets; `m` is
# torch's module or ours, so one builder makes both
CASES = {
    "LambdaLR-lambda": lambda m, o: m.LambdaLR(o, lambda e: 0.95**e),
    "LambdaLR-list": lambda m, o: m.LambdaLR(o, [lambda e: 1.0 / (e + 1), Scale(0.9)]),
    "LambdaLR-resume": lambda m, o: m.LambdaLR(resumed(o), Scale(0.8), last_epoch=5),
    "MultiplicativeLR": lambda m, o: m.MultiplicativeLR(o, lambda e: 0.9 if e % 2 else 1.0),
    "MultiplicativeLR-obj": lambda m, o: m.MultiplicativeLR(o, [Scale(0.97), Scale(0.99)]),
    "StepLR": lambda m, o: m.StepLR(o, 3, 0.5),
    "StepLR-resume": lambda m, o: m.StepLR(resumed(o), step_size=2, gamma=0.7, last_epoch=4),
    "MultiStepLR": lambda m, o: m.MultiStepLR(o, [2, 5, 5, 9], 0.3),
    "ConstantLR": lambda m, o: m.ConstantLR(o, 0.25, 4),
    "ConstantLR-default": lambda m, o: m.ConstantLR(o),
    "LinearLR": lambda m, o: m.LinearLR(o, 0.1, 1.0, 6),
    "LinearLR-down": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=5),
    "ExponentialLR": lambda m, o: m.ExponentialLR(o, 0.8),
    "ExponentialLR-resume": lambda m, o: m.ExponentialLR(resumed(o), 0.9, last_epoch=2),
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, 5),  # runs past T_max: torch's periodic form
    "CosineAnnealingLR-eta": lambda m, o: m.CosineAnnealingLR(o, T_max=4, eta_min=0.01),
    "CosineAnnealingLR-resume": lambda m, o: m.CosineAnnealingLR(resumed(o), T_max=8, last_epoch=3),
    "PolynomialLR": lambda m, o: m.PolynomialLR(o, 6, 2.0),
    "PolynomialLR-linear": lambda m, o: m.PolynomialLR(o, total_iters=4, power=1.0),
    "CyclicLR": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=3),
    "CyclicLR-triangular2": lambda m, o: m.CyclicLR(o, [0.01, 0.02], [0.1, 0.2], 2, 4, mode="triangular2"),
    "CyclicLR-exp_range": lambda m, o: m.CyclicLR(o, 0.01, 0.1, 3, mode="exp_range", gamma=0.9),
    "CyclicLR-scale_fn": lambda m, o: m.CyclicLR(
        o, 0.01, 0.1, 2, scale_fn=Halving(), scale_mode="iterations", cycle_momentum=False
    ),
    "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, 3),
    "CosineAnnealingWarmRestarts-mult": lambda m, o: m.CosineAnnealingWarmRestarts(o, 2, T_mult=2, eta_min=0.001),
    "CosineAnnealingWarmRestarts-resume": lambda m, o: m.CosineAnnealingWarmRestarts(resumed(o), 4, last_epoch=5),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, 0.5, total_steps=20),
    "OneCycleLR-linear-3phase": lambda m, o: m.OneCycleLR(
        o, [0.5, 0.3], epochs=4, steps_per_epoch=5, anneal_strategy="linear", three_phase=True
    ),
    "SequentialLR": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, 0.1, total_iters=3), m.ExponentialLR(o, 0.9)], milestones=[3]
    ),
    "SequentialLR-3": lambda m, o: m.SequentialLR(
        o, [m.ConstantLR(o, 0.5, 2), m.CosineAnnealingLR(o, 4), m.StepLR(o, 2, 0.5)], [4, 9]
    ),
    "ChainedScheduler": lambda m, o: m.ChainedScheduler([m.ConstantLR(o, 0.1, 4), m.ExponentialLR(o, 0.9)]),
    "ChainedScheduler-optimizer": lambda m, o: m.ChainedScheduler(
        [m.LinearLR(o, 0.5, total_iters=3), m.MultiStepLR(o, [4, 6])], optimizer=o
    ),
    "SequentialLR-of-ChainedScheduler": lambda m, o: _quiet(
        m.SequentialLR,
        o,
        [m.ChainedScheduler([m.ConstantLR(o, 0.5, 3), m.ExponentialLR(o, 0.95)]), m.PolynomialLR(o, 8)],
        milestones=[6],
    ),
}


def test_package_exposes_this_module():
    # in a fresh interpreter: `import fusedoptim` alone must make fusedoptim.lr_scheduler ours.
    # (`from torch.optim import *` binds the name lr_scheduler to torch's module first, after
    # which `from . import lr_scheduler` finds that attribute and never imports the submodule.)
    code = "import fusedoptim; print(fusedoptim.lr_scheduler.__name__, hasattr(fusedoptim.lr_scheduler, 'WarmupLR'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["fusedoptim.lr_scheduler", "True"]


def test_every_torch_name_is_here_and_every_class_is_a_torch_subclass():
    missing = [n for n in dir(T) if not (n.startswith("__") and n.endswith("__")) and not hasattr(F, n)]
    assert missing == []
    assert set(T.__all__) <= set(F.__all__)
    for name in T.__all__ + ["_LRScheduler"]:
        ours, theirs = getattr(F, name), getattr(T, name)
        if isinstance(theirs, type):
            assert issubclass(ours, theirs), name
            assert ours.__module__ == "fusedoptim.lr_scheduler", name
            if name != "LRScheduler":
                assert issubclass(ours, F.LRScheduler), name
    for name in ("WarmupLR", "WarmupCosineLR", "WarmupStableDecayLR"):
        assert issubclass(getattr(F, name), T.LRScheduler)
    assert F.EPOCH_DEPRECATION_WARNING == T.EPOCH_DEPRECATION_WARNING
    # the sequence tests below cover every scheduler torch has (ReduceLROnPlateau: PLATEAU)
    covered = {c.split("-")[0] for c in CASES} | {"ReduceLROnPlateau", "LRScheduler"}
    assert covered == set(T.__all__)


@pytest.mark.parametrize("name", T.__all__)
def test_same_signatures_as_torch(name):
    assert inspect.signature(getattr(F, name)) == inspect.signature(getattr(T, name))
    for method in ("step", "state_dict", "load_state_dict", "get_last_lr"):
        assert inspect.signature(getattr(getattr(F, name), method)) == inspect.signature(getattr(getattr(T, name), method))


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("case", list(CASES))
def test_same_sequence_as_torch(case, kind):
    build = CASES[case]
    ref_opt = make_opt(REFERENCE[kind])
    ref = drive(ref_opt, build(T, ref_opt), STEPS)
    opt = make_opt(kind)
    got = drive(opt, build(F, opt), STEPS)
    assert got == ref
    assert all(type(g["lr"]) is float for g in opt.param_groups)


@pytest.mark.parametrize("kind", ["torch.SGD", "fusedoptim.AdamW"])
@pytest.mark.parametrize("case", list(CASES))
def test_tensor_lr_is_written_in_place(case, kind):
    build = CASES[case]
    ref_opt = make_opt(REFERENCE[kind])
    ref = drive(ref_opt, build(T, ref_opt), STEPS)
    opt = make_opt(kind, tensor=True)
    lr_objects = [g["lr"] for g in opt.param_groups]
    sched = build(F, opt)
    got = drive(opt, sched, STEPS)
    assert all(a is b for a, b in zip((g["lr"] for g in opt.param_groups), lr_objects))
    assert all(t.dtype == torch.float64 and t.dim() == 0 for t in lr_objects)
    assert flat(got) == pytest.approx(flat(ref), rel=1e-12, abs=1e-15, nan_ok=True)
    # get_last_lr() returns copies, never the optimizer's tensors
    for v in sched.get_last_lr():
        assert all(v is not t for t in lr_objects)


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_has_torch_format(case):
    build = CASES[case]
    o1, o2 = make_opt(), make_opt()
    s1, s2 = build(T, o1), build(F, o2)
    drive(o1, s1, 7)
    drive(o2, s2, 7)
    assert s2.state_dict() == s1.state_dict()
    pickle.loads(pickle.dumps(s2.state_dict()))  # checkpoints are picklable (lambdas saved as None)


@pytest.mark.parametrize("direction", ["torch->ours", "ours->torch"])
@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_mid_schedule(case, direction):
    build = CASES[case]
    src_mod, dst_mod = (T, F) if direction == "torch->ours" else (F, T)
    o1 = make_opt()
    s1 = build(src_mod, o1)
    drive(o1, s1, 7)
    sd = pickle.loads(pickle.dumps(s1.state_dict()))
    osd = copy.deepcopy(o1.state_dict())
    o2 = make_opt()
    s2 = build(dst_mod, o2)  # scheduler first, then the optimizer's state (torch's advice)
    o2.load_state_dict(osd)
    s2.load_state_dict(sd)
    assert snap(o2, s2) == snap(o1, s1)
    assert drive(o2, s2, STEPS - 7) == drive(o1, s1, STEPS - 7)


def test_lambda_state_dict_saves_callable_objects_not_functions():
    for mod in (T, F):
        o = make_opt()
        s = mod.LambdaLR(o, [lambda e: 1.0, Scale(0.9)])
        sd = s.state_dict()
        assert sd["lr_lambdas"] == [None, {"factor": 0.9}]
    o = make_opt()
    s = F.LambdaLR(o, [lambda e: 1.0, Scale(0.5)])
    s.load_state_dict({**s.state_dict(), "lr_lambdas": [None, {"factor": 0.25}]})
    assert s.lr_lambdas[1].factor == 0.25
    o = make_opt()
    s = F.MultiplicativeLR(o, [Scale(0.9), lambda e: 1.0])
    assert s.state_dict()["lr_lambdas"] == [{"factor": 0.9}, None]


# deprecated step(epoch): closed forms where torch has them, CAWR's fractional epochs
EPOCH_CASES = {
    "StepLR": (lambda m, o: m.StepLR(o, 3, 0.5), [1, 2, 5, 6, 3, 9]),
    "MultiStepLR": (lambda m, o: m.MultiStepLR(o, [2, 5], 0.3), [1, 4, 6, 2, 8]),
    "ExponentialLR": (lambda m, o: m.ExponentialLR(o, 0.8), [3, 1, 7, 7]),
    "CosineAnnealingLR": (lambda m, o: m.CosineAnnealingLR(o, 6, 0.01), [2, 5, 9, 1]),
    "LinearLR": (lambda m, o: m.LinearLR(o, 0.2, 1.0, 5), [1, 3, 8, 2]),
    "PolynomialLR": (lambda m, o: m.PolynomialLR(o, 6, 2.0), [2, 4, 9]),
    "ConstantLR": (lambda m, o: m.ConstantLR(o, 0.5, 3), [1, 4, 2]),
    "CosineAnnealingWarmRestarts": (
        lambda m, o: m.CosineAnnealingWarmRestarts(o, 3, T_mult=2, eta_min=0.001),
        [0.5, 1.2, 2.9, 3.0, 7.5, 12.25, 20.0, 4.0],
    ),
}


@pytest.mark.parametrize("case", list(EPOCH_CASES))
def test_deprecated_step_epoch_same_as_torch(case):
    build, epochs = EPOCH_CASES[case]
    o1, o2 = make_opt(), make_opt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref = drive(o1, build(T, o1), len(epochs), epochs=epochs)
        got = drive(o2, build(F, o2), len(epochs), epochs=epochs)
    assert got == ref


def test_cosine_warm_restarts_interleaved_epochs_like_torch():
    o1, o2 = make_opt(), make_opt()
    s1, s2 = T.CosineAnnealingWarmRestarts(o1, 4), F.CosineAnnealingWarmRestarts(o2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for s, o in ((s1, o1), (s2, o2)):
            for _ in range(5):
                s.step()
            s.step(9)
            s.step()
    assert snap(o2, s2) == snap(o1, s1)


PLATEAU = [
    (dict(patience=1, factor=0.5, threshold=0.0), [5, 4, 4, 4, 3, 3, 3, 3, 3, 3]),
    (dict(mode="max", patience=0, factor=0.3, threshold_mode="abs", threshold=0.1), [1, 1.05, 1.2, 1.25, 1.4, 0.9]),
    (dict(patience=2, cooldown=2, min_lr=[0.02, 0.001]), [3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2]),
    (dict(patience=0, factor=0.1, min_lr=0.0099, eps=1e-3), [1, 2, 3, 4, 5]),
]


@pytest.mark.parametrize("kind", ["torch.SGD", "fusedoptim.AdamW"])
@pytest.mark.parametrize("tensor", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("idx", range(len(PLATEAU)))
def test_reduce_lr_on_plateau_scripted_metrics(idx, tensor, kind):
    kwargs, metrics = PLATEAU[idx]
    o1, o2 = make_opt(REFERENCE[kind]), make_opt(kind, tensor=tensor)
    lr_objects = [g["lr"] for g in o2.param_groups]
    s1, s2 = T.ReduceLROnPlateau(o1, **kwargs), F.ReduceLROnPlateau(o2, **kwargs)
    metrics_t = [torch.tensor(float(m), dtype=torch.float64) for m in metrics]  # 0-d tensors work too
    ref = drive(o1, s1, len(metrics), metrics=metrics)
    got = drive(o2, s2, len(metrics), metrics=metrics_t)
    if tensor:
        assert all(a is b for a, b in zip((g["lr"] for g in o2.param_groups), lr_objects))
        assert flat([g for g, _, _ in got]) == pytest.approx(flat([g for g, _, _ in ref]), rel=1e-12)
    else:
        assert got == ref
        assert s2.state_dict() == s1.state_dict()


def test_reduce_lr_on_plateau_by_hand():
    # patience=1: the second bad epoch in a row reduces; threshold 0: equal is not better
    o = make_opt(lrs=(0.1,))
    s = F.ReduceLROnPlateau(o, patience=1, factor=0.5, threshold=0.0)
    lrs = []
    for m in [5, 4, 4, 4, 3, 3, 3, 3]:
        s.step(m)
        lrs.append(o.param_groups[0]["lr"])
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025]
    assert s.best == 3 and s.num_bad_epochs == 1


def test_reduce_lr_on_plateau_state_dict_both_ways():
    kwargs, metrics = PLATEAU[2]
    for src, dst in ((T, F), (F, T)):
        o1 = make_opt()
        s1 = src.ReduceLROnPlateau(o1, **kwargs)
        drive(o1, s1, 6, metrics=metrics)
        o2 = make_opt()
        s2 = dst.ReduceLROnPlateau(o2, **kwargs)
        o2.load_state_dict(o1.state_dict())
        s2.load_state_dict(pickle.loads(pickle.dumps(s1.state_dict())))
        assert drive(o2, s2, 8, metrics=metrics[6:]) == drive(o1, s1, 8, metrics=metrics[6:])


# ---------------------------------------------------------------------------
# where torch changes the type of group["lr"] and we do not
# ---------------------------------------------------------------------------
def _float_run(build, steps=12):
    o = make_opt()
    s = build(o)
    return o, drive(o, s, steps)


TYPE_FIXES = {
    # (build with a tensor/numpy hyper-parameter, the same with plain floats)
    "ExponentialLR-tensor-gamma": (
        lambda o: F.ExponentialLR(o, torch.tensor(0.9, dtype=torch.float64)),
        lambda o: F.ExponentialLR(o, 0.9),
    ),
    "CosineAnnealingLR-tensor-eta_min": (
        lambda o: F.CosineAnnealingLR(o, 5, torch.tensor(0.01, dtype=torch.float64)),
        lambda o: F.CosineAnnealingLR(o, 5, 0.01),
    ),
    "LambdaLR-tensor-result": (
        lambda o: F.LambdaLR(o, lambda e: torch.tensor(0.9, dtype=torch.float64) ** e),
        lambda o: F.LambdaLR(o, lambda e: 0.9**e),
    ),
    # torch aliases the base_lr tensor into group["lr"] and the schedule sticks at max_lr
    "CyclicLR-tensor-base_lr": (
        lambda o: F.CyclicLR(o, torch.tensor(0.01, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64), 2),
        lambda o: F.CyclicLR(o, 0.01, 0.1, 2),
    ),
    "OneCycleLR-tensor-max_lr": (
        lambda o: F.OneCycleLR(o, torch.tensor(0.5, dtype=torch.float64), total_steps=20),
        lambda o: F.OneCycleLR(o, 0.5, total_steps=20),
    ),
}


@pytest.mark.parametrize("case", list(TYPE_FIXES))
def test_float_lr_stays_float_with_tensor_hyperparameters(case):
    build, build_float = TYPE_FIXES[case]
    o, got = _float_run(build)
    _, ref = _float_run(build_float)
    assert all(type(g["lr"]) is float for g in o.param_groups)
    assert all(type(g["initial_lr"]) is float for g in o.param_groups)
    assert flat([g for g, _, _ in got]) == pytest.approx(flat([g for g, _, _ in ref]), rel=1e-12)


def test_float_lr_stays_float_with_numpy_lambda_and_plateau_tensor_min_lr():
    np = pytest.importorskip("numpy")
    o = make_opt()
    s = F.LambdaLR(o, lambda e: np.float32(0.5) ** e)
    drive(o, s, 3)
    assert all(type(g["lr"]) is float for g in o.param_groups)
    assert o.param_groups[0]["lr"] == pytest.approx(0.1 * 0.125, rel=1e-6)
    assert all(type(v) is float for v in s.get_last_lr())
    o = make_opt()
    s = F.ReduceLROnPlateau(o, patience=0, min_lr=torch.tensor(0.03))
    for m in [1, 2, 3, 4]:
        s.step(m)
    assert [type(g["lr"]) for g in o.param_groups] == [float, float]
    assert [g["lr"] for g in o.param_groups] == pytest.approx([0.03, 0.03])


# ---------------------------------------------------------------------------
# errors: the same type and message as torch
# ---------------------------------------------------------------------------
def _step_past_end(m, o):
    s = m.OneCycleLR(o, 0.5, total_steps=3)
    for _ in range(4):
        o.step()
        s.step()


def _plateau_in_sequential(m, o):
    m.SequentialLR(o, [m.ConstantLR(o), m.ReduceLROnPlateau(o)], [2])


def _cawr_negative_epoch(m, o):
    m.CosineAnnealingWarmRestarts(o, 3).step(-1)


ERROR_CASES = {
    "not-an-optimizer": lambda m, o: m.StepLR(object(), 3),
    "LinearLR-start_factor": lambda m, o: m.LinearLR(o, start_factor=0),
    "LinearLR-end_factor": lambda m, o: m.LinearLR(o, end_factor=2),
    "ConstantLR-factor": lambda m, o: m.ConstantLR(o, factor=1.5),
    "LambdaLR-count": lambda m, o: m.LambdaLR(o, [Scale(1.0)] * 3),
    "MultiplicativeLR-not-callable": lambda m, o: m.MultiplicativeLR(o, 0.5),
    "CAWR-T_0": lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0),
    "CAWR-T_mult": lambda m, o: m.CosineAnnealingWarmRestarts(o, 2, T_mult=0),
    "CAWR-eta_min": lambda m, o: m.CosineAnnealingWarmRestarts(o, 2, eta_min="x"),
    "CAWR-negative-epoch": _cawr_negative_epoch,
    "OneCycleLR-no-steps": lambda m, o: m.OneCycleLR(o, 0.1),
    "OneCycleLR-pct_start": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=5, pct_start=2.0),
    "OneCycleLR-anneal": lambda m, o: m.OneCycleLR(o, 0.1, total_steps=5, anneal_strategy="exp"),
    "OneCycleLR-past-end": _step_past_end,
    "CyclicLR-mode": lambda m, o: m.CyclicLR(o, 0.01, 0.1, mode="nope"),
    "CyclicLR-no-momentum": lambda m, o: m.CyclicLR(
        torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), 0.01, 0.1
    ),
    "SequentialLR-empty": lambda m, o: m.SequentialLR(o, [], []),
    "SequentialLR-milestones": lambda m, o: m.SequentialLR(o, [m.ConstantLR(o), m.StepLR(o, 2)], [1, 2]),
    "SequentialLR-plateau": _plateau_in_sequential,
    "ChainedScheduler-empty": lambda m, o: m.ChainedScheduler([]),
    "Plateau-factor": lambda m, o: m.ReduceLROnPlateau(o, factor=1.0),
    "Plateau-mode": lambda m, o: m.ReduceLROnPlateau(o, mode="avg"),
    "Plateau-threshold_mode": lambda m, o: m.ReduceLROnPlateau(o, threshold_mode="x"),
    "Plateau-min_lr-count": lambda m, o: m.ReduceLROnPlateau(o, min_lr=[0.1]),
    "resume-without-initial_lr": lambda m, o: m.StepLR(o, 3, last_epoch=5),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_same_errors_as_torch(case):
    raised = []
    for mod in (T, F):
        with pytest.raises(Exception) as info:
            ERROR_CASES[case](mod, make_opt())
        raised.append(info.value)
    assert type(raised[1]) is type(raised[0])
    assert str(raised[1]) == str(raised[0])


# ---------------------------------------------------------------------------
# schedulers drive fusedoptim's optimizers in real training
# ---------------------------------------------------------------------------
def _train(opt_cls, sched_fn, steps=12, tensor_lr=False, **opt_kw):
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x, y = torch.randn(16, 5), torch.randn(16, 1)
    lr = torch.tensor(opt_kw.pop("lr")) if tensor_lr else opt_kw.pop("lr")
    opt = opt_cls(model.parameters(), lr=lr, **opt_kw)
    sched = sched_fn(opt)
    lrs = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
        lrs.append(float(opt.param_groups[0]["lr"]))
    return [p.detach().clone() for p in model.parameters()], lrs, opt


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
def test_fusedoptim_sgd_with_step_lr_trains_like_torch(tensor_lr):
    ref, ref_lrs, _ = _train(torch.optim.SGD, lambda o: T.StepLR(o, 3, 0.5), lr=0.1, momentum=0.9)
    got, got_lrs, opt = _train(fusedoptim.SGD, lambda o: F.StepLR(o, 3, 0.5), tensor_lr=tensor_lr, lr=0.1, momentum=0.9)
    assert got_lrs == pytest.approx(ref_lrs, rel=1e-6)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.is_tensor(opt.param_groups[0]["lr"]) == tensor_lr


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
def test_fusedoptim_adamw_with_warmup_cosine_trains_like_torch_adamw(tensor_lr):
    def sched(o):
        return F.WarmupCosineLR(o, warmup_steps=3, total_steps=10, min_lr=1e-4)

    ref, ref_lrs, _ = _train(torch.optim.AdamW, sched, lr=0.01, weight_decay=0.1)
    got, got_lrs, _ = _train(fusedoptim.AdamW, sched, tensor_lr=tensor_lr, lr=0.01, weight_decay=0.1)
    assert got_lrs == pytest.approx(ref_lrs, rel=1e-6)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# new schedulers: closed forms
# ---------------------------------------------------------------------------
def lr_sequence(sched_fn, steps, lrs=(0.1,), tensor=False, kind="torch.SGD"):
    o = make_opt(kind, lrs=lrs, tensor=tensor)
    s = sched_fn(o)
    out = [float(o.param_groups[0]["lr"])]
    for _ in range(steps):
        o.step()
        s.step()
        out.append(float(o.param_groups[0]["lr"]))
    return out, s, o


def test_warmup_cosine_closed_form_with_restarts():
    base, lo = 0.1, 0.01
    seq, s, _ = lr_sequence(
        lambda o: F.WarmupCosineLR(o, warmup_steps=4, total_steps=16, min_lr=lo, cycles=3, cycle_decay=0.5), 20
    )
    assert seq[:4] == pytest.approx([0.0, 0.025, 0.05, 0.075], rel=1e-15)  # base * t / 4
    assert seq[4] == base  # warmup end: exactly the peak
    assert seq[8] == pytest.approx(lo + (base - lo) * 0.5, rel=1e-15)  # restart 1
    assert seq[12] == pytest.approx(lo + (base - lo) * 0.25, rel=1e-15)  # restart 2
    assert seq[6] == pytest.approx(lo + (base - lo) * 0.5, rel=1e-15)  # mid-cycle: cos(pi/2) = 0
    assert seq[10] == pytest.approx(lo + (base - lo) * 0.5 * 0.5, rel=1e-15)
    assert seq[16:] == [lo] * 5  # end, and it stays there
    for t in (7, 11, 15):  # just before each restart / the end: almost at min_lr
        assert lo < seq[t] < lo + (base - lo) * 0.5 ** ((t - 4) // 4) * 0.15
    assert s.last_epoch == 20


def test_warmup_cosine_uneven_cycles():
    # 10 decay steps in 3 cycles of 10/3 steps: cycle k covers (t - W) in [10k/3, 10(k+1)/3), so
    # the first steps of cycles 1 and 2 are t = W+4 (20% into it) and t = W+7 (10% into it)
    seq, _, _ = lr_sequence(lambda o: F.WarmupCosineLR(o, 2, 12, cycles=3, cycle_decay=0.8), 12)
    assert seq[2] == 0.1
    assert seq[6] == pytest.approx(0.1 * 0.8 * (1 + math.cos(math.pi * 0.2)) / 2, rel=1e-14) and seq[5] < seq[6]
    assert seq[9] == pytest.approx(0.1 * 0.64 * (1 + math.cos(math.pi * 0.1)) / 2, rel=1e-14) and seq[8] < seq[9]
    assert seq[5] == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.9)) / 2, rel=1e-14)
    assert seq[12] == 0.0


def test_warmup_cosine_is_transformers_schedule_when_min_lr_is_zero():
    # get_cosine_schedule_with_warmup / ..._with_hard_restarts as LambdaLR multipliers
    def hf(w, total, cycles):
        def f(t):
            if t < w:
                return t / max(1, w)
            progress = (t - w) / max(1, total - w)
            if progress >= 1.0:
                return 0.0
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))

        return f

    for w, total, cycles in [(10, 100, 1), (0, 50, 1), (5, 45, 4)]:
        ours, _, _ = lr_sequence(lambda o: F.WarmupCosineLR(o, w, total, cycles=cycles), total + 3, lrs=(0.3,))
        ref, _, _ = lr_sequence(lambda o: T.LambdaLR(o, hf(w, total, cycles)), total + 3, lrs=(0.3,))
        assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)


def test_warmup_cosine_per_group_min_lr_and_step_epoch():
    o = make_opt(lrs=(0.1, 0.2))
    s = F.WarmupCosineLR(o, 2, 10, min_lr=[0.01, 0.02])
    for _ in range(12):
        o.step()
        s.step()
    assert [g["lr"] for g in o.param_groups] == [0.01, 0.02]
    with pytest.warns(UserWarning, match="epoch parameter"):
        s.step(6)  # closed form: jump to step 6
    assert o.param_groups[0]["lr"] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 4 / 8)) / 2)
    assert o.param_groups[1]["lr"] == pytest.approx(0.02 + 0.18 * (1 + math.cos(math.pi * 4 / 8)) / 2)


@pytest.mark.parametrize(
    "decay,f",
    [("linear", lambda p: 1 - p), ("cosine", lambda p: (1 + math.cos(math.pi * p)) / 2), ("sqrt", lambda p: 1 - math.sqrt(p))],
)
def test_warmup_stable_decay_closed_form(decay, f):
    base, lo = 0.2, 0.02
    seq, s, _ = lr_sequence(lambda o: F.WarmupStableDecayLR(o, 3, 4, 4, min_lr=lo, decay=decay), 15, lrs=(base,))
    assert seq[:3] == pytest.approx([0.0, base / 3, base * 2 / 3], rel=1e-15)
    assert seq[3:8] == [base] * 5  # warmup end through the plateau
    for t in (8, 9, 10):
        assert seq[t] == pytest.approx(lo + (base - lo) * f((t - 7) / 4), rel=1e-12)
    assert seq[9] < seq[8] < base
    assert seq[11:] == [lo] * 5
    assert s.total_steps == 11


def test_warmup_stable_decay_without_warmup_or_plateau():
    seq, _, _ = lr_sequence(lambda o: F.WarmupStableDecayLR(o, 0, 0, 2), 4, lrs=(1.0,))
    assert seq == [1.0, 0.5, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "mode,start,expected",
    [
        ("linear", 0.0, [0.0, 0.25, 0.5, 0.75]),
        ("linear", 0.2, [0.2, 0.4, 0.6, 0.8]),
        ("exponential", 0.01, [0.01, 0.01**0.75, 0.1, 0.01**0.25]),
        ("constant", 0.1, [0.1, 0.1, 0.1, 0.1]),
    ],
)
def test_warmup_lr_modes_closed_form(mode, start, expected):
    seq, s, _ = lr_sequence(lambda o: F.WarmupLR(o, 4, start_factor=start, mode=mode), 8, lrs=(2.0,))
    assert seq[:4] == pytest.approx([2.0 * e for e in expected], rel=1e-12)
    assert seq[4:] == [2.0] * 5  # warmup end: lr, then it holds without `after`


AFTERS = {
    "CosineAnnealingLR": lambda m, o: m.CosineAnnealingLR(o, T_max=6, eta_min=0.001),
    "StepLR": lambda m, o: m.StepLR(o, 2, 0.5),
    "ConstantLR": lambda m, o: m.ConstantLR(o, 0.5, 3),
    "CyclicLR": lambda m, o: m.CyclicLR(o, 0.01, 0.1, 2),
    "OneCycleLR": lambda m, o: m.OneCycleLR(o, 0.5, total_steps=12),
    "CosineAnnealingWarmRestarts": lambda m, o: m.CosineAnnealingWarmRestarts(o, 3),
    "SequentialLR": lambda m, o: m.SequentialLR(o, [m.ConstantLR(o, 0.5, 2), m.ExponentialLR(o, 0.8)], [3]),
    "ChainedScheduler": lambda m, o: m.ChainedScheduler([m.ExponentialLR(o, 0.9), m.StepLR(o, 3, 0.5)]),
    "WarmupCosineLR": lambda m, o: F.WarmupCosineLR(o, 2, 10, min_lr=0.001),
    "WarmupLR": lambda m, o: F.WarmupLR(o, 2, after=m.ExponentialLR(o, 0.7), start_factor=0.5),
}


@pytest.mark.parametrize("warmup", [0, 1, 4])
@pytest.mark.parametrize("after", list(AFTERS))
def test_warmup_lr_hands_over_at_step_zero_of_after(after, warmup):
    # after warmup, the sequence (lr and momentum) is exactly `after`'s own, run alone (torch's classes)
    o_ref = make_opt()
    ref = drive(o_ref, AFTERS[after](T, o_ref), 11)
    o = make_opt()
    inner = AFTERS[after](F, o)
    base = [g["initial_lr"] for g in o.param_groups]  # 0.1, 0.05; CyclicLR/OneCycleLR set their own
    s = F.WarmupLR(o, warmup, after=inner)
    got = drive(o, s, warmup + 11)
    for t in range(warmup):
        assert [lr for lr, _ in got[t][0]] == pytest.approx([b * t / warmup for b in base], rel=1e-15)
    assert [g for g, _, _ in got[warmup:]] == [g for g, _, _ in ref]
    assert [last for _, last, _ in got[warmup:]] == [last for _, last, _ in ref]
    if hasattr(inner, "last_epoch") and not isinstance(inner, T.ChainedScheduler):
        assert inner.last_epoch == 11  # step W + k is after's step k
    assert s.last_epoch == warmup + 11


def test_warmup_lr_resets_after_even_if_it_was_stepped_during_warmup():
    o_ref = make_opt()
    ref = drive(o_ref, T.StepLR(o_ref, 2, 0.5), 6)
    o = make_opt()
    inner = F.StepLR(o, 2, 0.5)
    s = F.WarmupLR(o, 3, after=inner)
    o.step()
    inner.step()  # e.g. a callback that also steps it: warmup still hands over at its step 0
    inner.step()
    got = drive(o, s, 9)
    assert [g for g, _, _ in got[3:]] == [g for g, _, _ in ref]
    assert inner.last_epoch == 6


def test_warmup_lr_then_reduce_lr_on_plateau():
    metrics = [9, 9, 9, 5, 4, 4, 4, 3, 3, 3, 3, 3]
    o_ref = make_opt()
    ref = drive(o_ref, T.ReduceLROnPlateau(o_ref, patience=1, factor=0.5), 9, metrics=metrics[3:])
    o = make_opt()
    s = F.WarmupLR(o, 3, after=F.ReduceLROnPlateau(o, patience=1, factor=0.5))
    got = drive(o, s, 12, metrics=metrics)  # the 3 warmup metrics are ignored
    assert [g for g, _, _ in got[3:]] == [g for g, _, _ in ref]
    assert s.after.best == 3 and s.after.last_epoch == 9
    with pytest.raises(TypeError, match="needs the metric"):
        s.step()
    assert s.last_epoch == 12  # the failed call changed nothing


@pytest.mark.parametrize("save_at", [2, 4, 5, 9])
@pytest.mark.parametrize("after", ["none", "CosineAnnealingLR", "ReduceLROnPlateau", "WarmupCosineLR", "SequentialLR"])
def test_new_schedulers_state_dict_round_trip(after, save_at):
    metrics = [5, 4, 4, 4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1]
    plateau = after == "ReduceLROnPlateau"

    def build(o):
        inner = {
            "none": lambda: None,
            "CosineAnnealingLR": lambda: F.CosineAnnealingLR(o, 5),
            "ReduceLROnPlateau": lambda: F.ReduceLROnPlateau(o, patience=1, factor=0.5),
            "WarmupCosineLR": lambda: F.WarmupCosineLR(o, 2, 8, cycles=2, cycle_decay=0.5),
            "SequentialLR": lambda: F.SequentialLR(o, [F.ConstantLR(o, 0.5, 2), F.StepLR(o, 2, 0.5)], [3]),
        }[after]()
        return F.WarmupLR(o, 4, after=inner, start_factor=0.1)

    def run(o, s, steps, offset):
        return drive(o, s, steps, metrics=metrics[offset:] if plateau else None)

    o1 = make_opt()
    s1 = build(o1)
    run(o1, s1, save_at, 0)
    blob = pickle.dumps((o1.state_dict(), s1.state_dict()))
    o2 = make_opt()
    s2 = build(o2)
    osd, sd = pickle.loads(blob)
    o2.load_state_dict(osd)
    s2.load_state_dict(sd)
    assert run(o2, s2, 10, save_at) == run(o1, s1, 10, save_at)
    assert s2.state_dict() == s1.state_dict()


@pytest.mark.parametrize(
    "build",
    [
        lambda o: F.WarmupCosineLR(o, 3, 12, min_lr=0.01, cycles=2, cycle_decay=0.5),
        lambda o: F.WarmupStableDecayLR(o, 2, 3, 4, decay="sqrt"),
        lambda o: F.WarmupLR(o, 3, after=F.CosineAnnealingLR(o, 5), mode="exponential", start_factor=0.1),
    ],
    ids=["WarmupCosineLR", "WarmupStableDecayLR", "WarmupLR"],
)
def test_new_schedulers_resume_and_tensor_lr(build):
    ref, s, _ = lr_sequence(build, 14, lrs=(0.1, 0.05))
    got, _, o = lr_sequence(build, 14, lrs=(0.1, 0.05), tensor=True)
    assert got == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert all(torch.is_tensor(g["lr"]) and g["lr"].dtype == torch.float64 for g in o.param_groups)
    o = make_opt(lrs=(0.1, 0.05), tensor=True)
    lr_objects = [g["lr"] for g in o.param_groups]
    sched = build(o)
    drive(o, sched, 14)
    assert all(g["lr"] is t for g, t in zip(o.param_groups, lr_objects))


def test_new_closed_form_schedulers_resume_from_last_epoch():
    full, _, _ = lr_sequence(lambda o: F.WarmupCosineLR(o, 3, 12, cycles=2), 14)
    o = resumed(make_opt(lrs=(0.1,)))
    s = F.WarmupCosineLR(o, 3, 12, cycles=2, last_epoch=4)  # like torch: the next step is 5
    seq = [o.param_groups[0]["lr"]]
    for _ in range(9):
        o.step()
        s.step()
        seq.append(o.param_groups[0]["lr"])
    assert seq == pytest.approx(full[5:15])


INVALID = {
    "warmup>total": (lambda o: F.WarmupCosineLR(o, 20, 10), ValueError, "warmup_steps .20. must be smaller than total_steps .10."),
    "warmup==total": (lambda o: F.WarmupCosineLR(o, 10, 10), ValueError, "must be smaller than total_steps"),
    "total=0": (lambda o: F.WarmupCosineLR(o, 0, 0), ValueError, "total_steps must be an integer >= 1"),
    "warmup<0": (lambda o: F.WarmupCosineLR(o, -1, 10), ValueError, "warmup_steps must be an integer >= 0"),
    "warmup-float": (lambda o: F.WarmupCosineLR(o, 2.5, 10), ValueError, "warmup_steps must be an integer"),
    "cycles=0": (lambda o: F.WarmupCosineLR(o, 1, 10, cycles=0), ValueError, "cycles must be an integer >= 1"),
    "cycles>decay": (lambda o: F.WarmupCosineLR(o, 8, 10, cycles=3), ValueError, "cycles .3. must not exceed the 2 decay steps"),
    "cycle_decay=0": (lambda o: F.WarmupCosineLR(o, 1, 10, cycle_decay=0.0), ValueError, r"cycle_decay must be in \(0, 1\]"),
    "cycle_decay>1": (lambda o: F.WarmupCosineLR(o, 1, 10, cycle_decay=1.5), ValueError, "cycle_decay"),
    "min_lr<0": (lambda o: F.WarmupCosineLR(o, 1, 10, min_lr=-1e-3), ValueError, "min_lr must be >= 0"),
    "min_lr>lr": (lambda o: F.WarmupCosineLR(o, 1, 10, min_lr=0.07), ValueError, "larger than the learning rate of param group 1"),
    "min_lr-count": (lambda o: F.WarmupCosineLR(o, 1, 10, min_lr=[0.0]), ValueError, "one value per param group .2."),
    "not-optimizer": (lambda o: F.WarmupCosineLR(object(), 1, 10), TypeError, "object is not an Optimizer"),
    "wsd-decay": (lambda o: F.WarmupStableDecayLR(o, 1, 1, 1, decay="exp"), ValueError, "decay must be one of"),
    "wsd-decay_steps": (lambda o: F.WarmupStableDecayLR(o, 1, 1, 0), ValueError, "decay_steps must be an integer >= 1"),
    "wsd-stable": (lambda o: F.WarmupStableDecayLR(o, 1, -2, 3), ValueError, "stable_steps"),
    "warmup-mode": (lambda o: F.WarmupLR(o, 3, mode="cosine"), ValueError, "mode must be one of"),
    "warmup-start": (lambda o: F.WarmupLR(o, 3, start_factor=1.5), ValueError, r"start_factor must be in \[0, 1\]"),
    "warmup-exp-zero": (lambda o: F.WarmupLR(o, 3, mode="exponential"), ValueError, "needs start_factor > 0"),
    "warmup-after-type": (lambda o: F.WarmupLR(o, 3, after=42), TypeError, "after must be an LR scheduler"),
    "warmup-after-other-opt": (
        lambda o: F.WarmupLR(o, 3, after=F.StepLR(make_opt(), 2)),
        ValueError,
        "same optimizer",
    ),
    "warmup-after-last_epoch": (
        lambda o: F.WarmupLR(resumed(o), 3, after=F.StepLR(o, 2), last_epoch=4),
        ValueError,
        "load_state_dict",
    ),
    "warmup-resume-no-initial_lr": (lambda o: F.WarmupLR(o, 3, last_epoch=4), KeyError, "initial_lr"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_arguments_raise_clear_errors(case):
    build, exc, match = INVALID[case]
    o = make_opt()
    before = [dict(g) for g in o.param_groups]
    with pytest.raises(exc, match=match):
        build(o)
    if case != "warmup-after-last_epoch":
        assert [dict(g) for g in o.param_groups] == before  # validated before touching the optimizer


def test_warmup_lr_step_rejects_a_metric_without_plateau():
    o = make_opt()
    s = F.WarmupLR(o, 2, after=F.StepLR(o, 2))
    with pytest.raises(TypeError, match="only when `after` is ReduceLROnPlateau"):
        s.step(0.5)
    o = make_opt()
    s = F.WarmupLR(o, 2)
    with pytest.raises(ValueError, match="saved with an `after` scheduler but this WarmupLR has none"):
        s.load_state_dict({**s.state_dict(), "after": {"last_epoch": 0}})


# ---------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------
def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    image = pytest.importorskip("matplotlib.image").imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    o = make_opt()
    live = F.WarmupLR(o, 3, after=F.CosineAnnealingLR(o, 10))
    path = F.plot(
        [
            functools.partial(F.WarmupCosineLR, warmup_steps=5, total_steps=40, cycles=2),
            lambda opt: F.OneCycleLR(opt, 1.0, total_steps=40),
            live,
        ],
        40,
        tmp_path / "schedules.png",
        title="schedules",
    )
    _assert_png(path)
    path2 = F.plot({"wsd": lambda opt: F.WarmupStableDecayLR(opt, 2, 10, 20, decay="sqrt")}, 35, tmp_path / "one.png", log_y=False)
    _assert_png(path2)


def test_plot_leaves_a_live_scheduler_as_it_was(tmp_path):
    pytest.importorskip("matplotlib")

    def build(o):
        return F.WarmupLR(o, 2, after=F.CyclicLR(o, 0.01, 0.1, 3))

    o1, o2 = make_opt(), make_opt(tensor=True)
    s1, s2 = build(o1), build(o2)
    lr_objects = [g["lr"] for g in o2.param_groups]
    drive(o1, s1, 4)
    drive(o2, s2, 4)
    lrs_before = [float(g["lr"]) for g in o2.param_groups]
    momentum_before = [g["momentum"] for g in o2.param_groups]
    F.plot(s2, 30, tmp_path / "live.png")
    assert all(g["lr"] is t for g, t in zip(o2.param_groups, lr_objects))
    assert s2.last_epoch == 4 and s2.after.last_epoch == 2
    assert [float(g["lr"]) for g in o2.param_groups] == lrs_before
    assert [g["momentum"] for g in o2.param_groups] == momentum_before
    ref, got = drive(o1, s1, 10), drive(o2, s2, 10)
    assert flat([g for g, _, _ in got]) == pytest.approx(flat([g for g, _, _ in ref]), rel=1e-12)


def test_plot_rejects_what_it_cannot_draw(tmp_path):
    pytest.importorskip("matplotlib")
    o = make_opt()
    with pytest.raises(TypeError, match="metrics"):
        F.plot(F.ReduceLROnPlateau(o), 10, tmp_path / "x.png")
    with pytest.raises(TypeError, match="metrics"):
        F.plot(F.WarmupLR(o, 2, after=F.ReduceLROnPlateau(o)), 10, tmp_path / "x.png")
    with pytest.raises(TypeError, match="expected a scheduler"):
        F.plot(42, 10, tmp_path / "x.png")
    with pytest.raises(TypeError, match="factory must return a scheduler"):
        F.plot(lambda opt: None, 10, tmp_path / "x.png")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        F.plot(lambda opt: F.StepLR(opt, 2), 0, tmp_path / "x.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        F.plot([], 10, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"fusedoptim\[plot\]"):
        F.plot(lambda opt: F.StepLR(opt, 2), 10, tmp_path / "x.png")
    assert F.main(["StepLR(step_size=2)", "--steps", "5", "--out", str(tmp_path / "x.png")]) == 1
    assert not (tmp_path / "x.png").exists()


def test_cli_writes_schedule_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "schedule.png"
    proc = subprocess.run(
        [sys.executable, "-m", "fusedoptim.lr_scheduler", "WarmupCosineLR(warmup_steps=50, total_steps=1000)",
         "--steps", "1000", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "found in sys.modules" not in proc.stderr, proc.stderr  # no runpy RuntimeWarning
    assert f"wrote {out}" in proc.stdout
    _assert_png(out)


def test_cli_main_nested_and_multiple_schedules(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "s.png"
    rc = F.main([
        "WarmupLR(warmup_steps=5, after=StepLR(step_size=3, gamma=0.5), mode='exponential', start_factor=1e-2)",
        "SequentialLR(schedulers=[ConstantLR(factor=0.5, total_iters=3), ExponentialLR(gamma=0.9)], milestones=[3])",
        "ChainedScheduler(schedulers=[ConstantLR(factor=0.5), ExponentialLR(gamma=0.95)])",
        "WarmupStableDecayLR(warmup_steps=3, stable_steps=5, decay_steps=10, min_lr=0.0, decay='cosine')",
        "--steps", "20", "--out", str(out), "--lr", "0.5", "--log",
    ])
    assert rc == 0, capsys.readouterr().err
    _assert_png(out)


@pytest.mark.parametrize(
    "expr,message",
    [
        ("__import__('os').system('echo pwned')", "unknown scheduler"),
        ("os.system('echo pwned')", "unknown scheduler"),
        ("StepLR(step_size=__import__('os').getpid())", "unknown scheduler"),
        ("StepLR(step_size=open('x'))", "unknown scheduler"),
        ("StepLR(step_size=1+2)", "must be a literal"),
        ("StepLR(step_size=x.y)", "must be a literal"),
        ("StepLR(3, 0.5, -1, 7)", r"too many positional arguments \(the optimizer is supplied\)"),
        ("StepLR(3, step_size=3)", "multiple values for argument 'step_size'"),
        ("StepLR(*[3])", r"\*args are not supported"),
        ("StepLR(**{'step_size': 3})", r"\*\*kwargs are not supported"),
        ("StepLR(optimizer=1, step_size=2)", "the optimizer is supplied"),
        ("StepLR", "expected a scheduler call"),
        ("StepLR(step_size=", "not a valid expression"),
        ("[StepLR(step_size=2)]", "expected a scheduler call"),
    ],
)
def test_cli_rejects_anything_but_literal_scheduler_calls(expr, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        F.main([expr, "--steps", "5", "--out", str(tmp_path / "x.png")])
    assert info.value.code == 2
    assert "pwned" not in capsys.readouterr().out
    with pytest.raises(ValueError, match=message):
        F._parse_schedule(expr)


def test_cli_reports_invalid_scheduler_arguments(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rc = F.main(["WarmupCosineLR(warmup_steps=500, total_steps=100)", "--steps", "5", "--out", str(tmp_path / "x.png")])
    assert rc == 1
    assert "warmup_steps (500) must be smaller than total_steps (100)" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_accepts_positional_arguments_as_python_does():
    """The README's Python form works on the command line: arguments after
    the optimizer by position, mixed with keywords, nested; ChainedScheduler
    (optimizer after `schedulers`) too."""
    o = make_opt()
    got = F._parse_schedule("WarmupStableDecayLR(5, 10, 5, decay='cosine')")(o)
    ref_opt = make_opt()
    ref = F.WarmupStableDecayLR(ref_opt, 5, 10, 5, decay="cosine")
    assert isinstance(got, F.WarmupStableDecayLR)
    for _ in range(25):
        assert o.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"]
        o.step()
        ref_opt.step()
        got.step()
        ref.step()
    s = F._parse_schedule("WarmupLR(3, StepLR(2, 0.5))")(make_opt())
    assert isinstance(s.after, F.StepLR) and s.after.step_size == 2 and s.after.gamma == 0.5
    c = F._parse_schedule("ChainedScheduler([ConstantLR(0.5), ExponentialLR(0.9)])")(make_opt())
    assert [type(x).__name__ for x in c._schedulers] == ["ConstantLR", "ExponentialLR"]


def test_cli_help_lists_every_scheduler_with_its_parameters(capsys):
    with pytest.raises(SystemExit) as info:
        F.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "WarmupStableDecayLR(warmup_steps, stable_steps, decay_steps, min_lr=0.0, decay='linear'" in out
    assert "StepLR(step_size, gamma=0.1" in out
    from fusedoptim._schedule_cli import _cli_schedulers
    for name in _cli_schedulers():
        assert f"\n  {name}(" in out, name
