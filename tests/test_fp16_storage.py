"""float16 storage through the kernels' own conversions (csrc/cpu/convert.h).

The conversions are integer/float code, not the compiler's _Float16: a build
on a compiler without it (GCC <= 11, clang < 15 on x86) must update fp16
params exactly as any other build. scripts/nofloat16.sh builds the extension
with `-U__FLT16_MAX__` and runs this file against that build (CI step
`nofloat16`); FUSEDOPTIM_EXPECT_SO_DIR then names the build the tests must
have imported.

Narrowing is checked against torch's own fp32 -> fp16 cast (round to
nearest even, overflow to inf, NaN to NaN) on values covering every binade of
fp16, its subnormals, the rounding ties and the overflow boundary; widening on
all 65536 fp16 bit patterns.
"""
import os

import pytest
import torch

import fusedoptim
import registry as R


def test_expected_build_is_loaded():
    want = os.environ.get("FUSEDOPTIM_EXPECT_SO_DIR")
    if not want:
        pytest.skip("FUSEDOPTIM_EXPECT_SO_DIR not set (only scripts/nofloat16.sh sets it)")
    assert os.path.realpath(os.path.dirname(fusedoptim._C.__file__)) == os.path.realpath(want)


def _same(a, b, what):
    """bitwise equal, NaN anywhere NaN is (NaN payloads not compared)"""
    na, nb = torch.isnan(a.float()), torch.isnan(b.float())
    assert torch.equal(na, nb), f"{what}: NaN positions differ"
    R.assert_bitwise_equal(a[~na].view(torch.int16), b[~nb].view(torch.int16), what)


def _hard_floats():
    """fp32 values around every fp16 rounding decision"""
    g = torch.Generator().manual_seed(3)
    halves = torch.arange(0, 0x7C00, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    nxt = torch.arange(1, 0x7C01, dtype=torch.int32).to(torch.int16).view(torch.float16).float()
    mid = (halves + nxt) / 2  # exact ties (fp32 holds them), including the tie at 65520
    parts = [halves, mid, mid.nextafter(torch.tensor(0.0)), mid.nextafter(torch.tensor(float("inf"))),
             torch.randn(20000, generator=g) * 10.0 ** torch.randint(-9, 6, (20000,), generator=g).float(),
             torch.tensor([0.0, 1e-30, 2.0 ** -25, 2.0 ** -26, 2.0 ** -24 * 1.5, 65504.0, 65519.99, 65520.0,
                           70000.0, 1e38, float("inf"), float("nan"), 1e-45])]
    x = torch.cat(parts)
    return torch.cat([x, -x])


def test_narrowing_matches_torch_cast():
    """fp32 params, fp16 SGD momentum buffer: the first step stores the grad
    itself (buf = g), so the buffer is the kernel's fp32 -> fp16 rounding of
    arbitrary floats; torch's .half() is the reference."""
    g = _hard_floats()
    p = torch.nn.Parameter(torch.zeros_like(g))
    p.grad = g.clone()
    opt = fusedoptim.SGD([p], lr=0.0, momentum=0.9, state_dtype=torch.float16)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    assert buf.dtype == torch.float16
    _same(buf, g.half(), "momentum_buffer vs g.half()")


def test_widening_every_pattern_and_identity_step():
    """Every fp16 bit pattern as a param, a step that leaves values unchanged
    (lr = 0): widened and narrowed back exactly (NaN stays NaN)."""
    bits = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16)
    p = torch.nn.Parameter(bits.view(torch.float16).clone())
    p.grad = torch.zeros_like(p)
    opt = fusedoptim.SGD([p], lr=0.0, momentum=0.0)
    opt.step()
    _same(p.detach(), bits.view(torch.float16), "param after an identity step")
    # the momentum buffer (fp16 state) holds g widened and narrowed: g = every pattern
    q = torch.nn.Parameter(torch.zeros(65536, dtype=torch.float16))
    q.grad = bits.view(torch.float16).clone()
    o2 = fusedoptim.SGD([q], lr=0.0, momentum=0.9)
    o2.step()
    _same(o2.state[q]["momentum_buffer"], bits.view(torch.float16), "momentum_buffer = g")


@pytest.mark.parametrize("name", [o.name for o in R.OPTIMS])
def test_fp16_step_is_the_rounded_fp32_step(name):
    """fp16 params with fp32 state: one step is the fp32 step of the same
    values, rounded to nearest even (4096 elements: no fp32 tail forms)."""
    info = R.OPTIMS_BY_NAME[name]
    g = torch.Generator().manual_seed(1)
    init = torch.randn(4096, generator=g).half()
    grad = torch.randn(4096, generator=g).half()
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.float())
    ours.grad, ref.grad = grad.clone(), grad.float()
    lr = 1.0 if name == "Adadelta" else 1e-2
    a = info.fo_cls([ours], lr=lr, state_dtype=torch.float32)
    b = info.fo_cls([ref], lr=lr)
    # ADOPT's first step only initialises its second moment (params unchanged),
    # so its params first move in step 2, from values step 1 left exact
    for _ in range(2 if name == "ADOPT" else 1):
        a.step()
        b.step()
    changed = float((ours.detach() != init).float().mean())
    assert changed > 0.1, f"{name}: only {changed:.1%} of the fp16 params changed"
    _same(ours.detach(), ref.detach().half(), f"{name}: fp16 step vs rounded fp32 step")


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fp16_params_update_like_torch_fused(name):
    """fp16 params and state change after each step, bit for bit as torch's
    fused kernel (same ISA); on main built without _Float16 they did not
    change at all."""
    if not R.isa_matches():
        pytest.skip("ISA of fusedoptim and torch differ")
    info = R.OPTIMS_BY_NAME[name]
    g = torch.Generator().manual_seed(1)
    init = torch.randn(10007, generator=g).half()
    grads = [torch.randn(10007, generator=g).half() for _ in range(3)]
    ours, ref = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    a = info.fo_cls([ours], lr=1e-2, weight_decay=0.1)
    b = info.torch_cls([ref], lr=1e-2, weight_decay=0.1, fused=True)
    for gr in grads:
        ours.grad, ref.grad = gr.clone(), gr.clone()
        a.step()
        b.step()
    changed = float((ours.detach() != init).float().mean())
    assert changed > 0.5, f"{name}: only {changed:.1%} of the fp16 params changed"
    R.assert_bitwise_equal(ours.detach().float(), ref.detach().float(), f"{name} fp16 params")
    for key in ("exp_avg", "exp_avg_sq"):
        R.assert_bitwise_equal(a.state[ours][key].float(), b.state[ref][key].float(), f"{name} {key}")


@pytest.mark.parametrize(
    "name, kw, state_dtype",
    [
        ("AdamW", {}, torch.float32),
        ("AdamW", {}, None),  # master_weights alone keeps fp32 state (issue 11 item 4)
        # fp16 state is refused for squared grads, allowed for a momentum buffer
        ("SGD", {"momentum": 0.9}, torch.float16),
    ],
    ids=["AdamW-f32state", "AdamW-default", "SGD-f16state"],
)
def test_fp16_master_weights(name, kw, state_dtype):
    """fp16 params with master weights: the param is the master rounded to
    nearest even after every step; with fp32 state the master follows the
    fp32 trajectory bit for bit."""
    g = torch.Generator().manual_seed(2)
    init = torch.randn(4096, generator=g).half()
    grads = [torch.randn(4096, generator=g).half() for _ in range(3)]
    p = torch.nn.Parameter(init.clone())
    cls = getattr(fusedoptim, name)
    opt = cls([p], lr=1e-2, master_weights=True, state_dtype=state_dtype, **kw)
    r = torch.nn.Parameter(init.float())
    ref = cls([r], lr=1e-2, **kw)
    for gr in grads:
        p.grad, r.grad = gr.clone(), gr.float()
        opt.step()
        ref.step()
        m = opt.state[p]["master_param"]
        _same(p.detach(), m.half(), "param = master rounded")
    assert float((p.detach() != init).float().mean()) > 0.5
    if state_dtype != torch.float16:
        R.assert_bitwise_equal(m, r.detach(), f"master vs fp32 {name}")
