"""Property-based parity: hypothesis draws the optimizer, its options, dtype,
shapes, layouts, gradient scales and a few steps, and compares with torch.

  float32  bit-identical to torch's fused CPU kernel when fusedoptim's kernel
           variant matches torch's CPU capability, else a tight tolerance
  float64  within 1e-12 (relative) of torch's for-loop path

Default: a modest, derandomized run (40 examples per test). Set
FUSEDOPTIM_FUZZ=long for thousands of random examples.
"""
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import registry as R  # noqa: E402

LONG = R.env_long_fuzz()
SETTINGS = settings(
    max_examples=3000 if LONG else 40,
    deadline=None,
    derandomize=not LONG,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

LRS = [1e-4, 1e-3, 0.01, 0.1, 1.0]
WDS = [0.0, 1e-4, 0.01, 0.3]


@st.composite
def sgd_options(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]))
    nesterov = momentum > 0 and draw(st.booleans())
    dampening = 0.0 if nesterov else draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return dict(
        lr=draw(st.sampled_from(LRS)), momentum=momentum, dampening=dampening, nesterov=nesterov,
        weight_decay=draw(st.sampled_from(WDS)), maximize=draw(st.booleans()),
    )


@st.composite
def adam_options(draw, adamw=False):
    kw = dict(
        lr=draw(st.sampled_from(LRS)),
        betas=(draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.9, 0.99])),
               draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999]))),
        eps=draw(st.sampled_from([1e-8, 1e-6, 1e-3, 0.0])),
        weight_decay=draw(st.sampled_from(WDS)),
        amsgrad=draw(st.booleans()),
        maximize=draw(st.booleans()),
    )
    if not adamw and draw(st.booleans()):
        kw["decoupled_weight_decay"] = True
    return kw


@st.composite
def optimizer_and_options(draw):
    info = R.OPTIMS_BY_NAME[draw(st.sampled_from(sorted(R.OPTIMS_BY_NAME)))]
    if info.name == "SGD":
        kw = draw(sgd_options())
    elif info.name in ("Adam", "AdamW"):
        kw = draw(adam_options(adamw=info.name == "AdamW"))
    else:  # the family: the registry's option sets
        kw = dict(draw(st.sampled_from(info.configs)).kwargs)
    return info, kw


@st.composite
def shape_cases(draw):
    ndim = draw(st.integers(0, 3))
    dims = tuple(draw(st.lists(st.integers(0, 40), min_size=ndim, max_size=ndim)))
    n = 1
    for d in dims:
        n *= d
    if n > 4000:
        dims = tuple(min(d, 15) for d in dims)
    param_layout, grad_layout = "C", "same"
    if len(dims) == 2:
        param_layout = draw(st.sampled_from(["C", "T"]))
        grad_layout = draw(st.sampled_from(["same", "C", "T"]))
    return R.ShapeCase("h", dims, param_layout=param_layout, grad_layout=grad_layout)


GRAD_SCALES = [1e-30, 1e-6, 1e-2, 1.0, 1e2, 1e6, 1e20]


@st.composite
def grad_plans(draw, steps):
    """A deterministic grad function: per-step scales and a seed."""
    scales = draw(st.lists(st.sampled_from(GRAD_SCALES), min_size=steps, max_size=steps))
    seed = draw(st.integers(0, 2**31 - 1))
    zero_grad_step = draw(st.sampled_from([None, 0, 1]))

    def grad_fn(step, k, shape, dtype):
        g = torch.Generator().manual_seed(seed + 7919 * step + 104729 * k)
        x = torch.randn(shape, generator=g, dtype=dtype) * scales[step]
        if zero_grad_step == step:
            x.zero_()
        return x

    return grad_fn


def _draw_case(data):
    """optimizer, options, shape, step count and grads of one example."""
    info, kw = data.draw(optimizer_and_options(), label="optimizer")
    case = data.draw(shape_cases(), label="shape")
    steps = data.draw(st.integers(1, 4), label="steps")
    grad_fn = data.draw(grad_plans(steps), label="grads")
    label = f"{info.name}{kw} shape={case.shape} P{case.param_layout}/G{case.grad_layout}"
    return info, kw, case, steps, grad_fn, info.group1_override(kw), label


@SETTINGS
@given(data=st.data())
def test_float32_matches_torch_fused(data):
    info, kw, case, steps, grad_fn, override, label = _draw_case(data)
    dtype = torch.float32
    ref = R.run_trajectory(info.torch_cls, dict(kw, **R.oracle_flags(info)), case, dtype, steps=steps,
                           grad_fn=grad_fn, override=override, grads_like_param=info.fused_oracle)[0]
    fo = R.run_trajectory(info.fo_cls, kw, case, dtype, steps=steps, grad_fn=grad_fn, override=override)[0]
    R.compare_trajectories(fo, ref, R.oracle_mode(info), label)


@SETTINGS
@given(data=st.data())
def test_float64_matches_torch_forloop(data):
    info, kw, case, steps, grad_fn, override, label = _draw_case(data)
    dtype = torch.float64
    label += " fp64"
    fo = R.run_trajectory(info.fo_cls, kw, case, dtype, steps=steps, grad_fn=grad_fn, override=override)[0]
    ref = R.run_trajectory(info.torch_cls, dict(kw, foreach=False), case, dtype, steps=steps, grad_fn=grad_fn,
                           override=override)[0]
    R.compare_trajectories(fo, ref, "close", label, rtol=R.FP64_RTOL, atol=R.FP64_ATOL,
                           check_step_dtype=False)


@SETTINGS
@given(
    n=st.integers(1, 80),
    data=st.data(),
)
def test_single_tensor_any_size_float32(n, data):
    """One contiguous tensor of any size 1..80: every vector-body / remainder
    split torch's kernels make, bit-exact (when ISAs match)."""
    info, kw = data.draw(optimizer_and_options(), label="optimizer")
    steps = data.draw(st.integers(1, 4), label="steps")
    grad_fn = data.draw(grad_plans(steps), label="grads")
    outs = []
    for cls, extra in ((info.fo_cls, {}), (info.torch_cls, R.oracle_flags(info))):
        p = torch.nn.Parameter(torch.randn(n, generator=torch.Generator().manual_seed(n)))
        opt = cls([p], **kw, **extra)
        for s in range(steps):
            p.grad = grad_fn(s, 0, p.shape, p.dtype)
            opt.step()
        outs.append((p.detach().clone(), dict(opt.state[p])))
    R.compare_tensor(outs[0][0], outs[1][0], R.oracle_mode(info), f"{info.name}{kw} n={n}")
    R.compare_state(outs[0][1], outs[1][1], R.oracle_mode(info), f"{info.name}{kw} n={n}")
