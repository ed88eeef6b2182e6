"""fusedoptim.clip_grad_norm_ / get_total_norm / clip_grads_with_norm_ vs torch 2.13.

Oracles and tolerances:
  * float64 reference: torch's norm of the same values widened to float64
    (torch accumulates a float64 norm in double). fusedoptim accumulates in
    double for every dtype and rounds once, so its result must be within half
    an ulp of the result dtype of that reference (plus 1e-12 relative for the
    two double summation orders), and at least as close to it as torch's own
    result (torch sums a float32 grad in float32 and a bf16/fp16 grad's norm is
    rounded per tensor and again for the total).
  * torch directly: max/min norms (no rounding) and the p=0 count are equal;
    other orders within RTOL of the least precise input dtype, relative:
    fp32 3e-4 (torch's float32 accumulation and powf: measured 1.1e-5 (p=2)
    and 1.0e-4 (p=3.5) off the exact norm on 1,000,003 elements, where ours
    is within half an ulp), fp64
    1e-12, bf16 2^-6 and fp16 2^-8 (torch rounds per tensor and again for the
    total to an 8- / 11-bit mantissa, ours once).
  * The scaled grads are bit-identical (NaN compared as NaN) to torch's
    clip_grads_with_norm_ applied with fusedoptim's total norm: the
    coefficient and the in-place multiply are torch's exactly; against torch's
    whole clip_grad_norm_ they agree within RTOL (the coefficient inherits the
    norm's relative difference) plus one ulp of the grad dtype.
"""
import inspect
import math
import warnings

import pytest
import torch

import fusedoptim
from fusedoptim import _C

tnu = torch.nn.utils
INF = math.inf
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
RTOL = {torch.float32: 3e-4, torch.float64: 1e-12, torch.bfloat16: 2.0 ** -6, torch.float16: 2.0 ** -8}
ORDERS = [2.0, 1.0, INF, -INF, 0.0, 3.5, 0.5, 1.5, 10.0, -1.0, -2.5]
SHAPES = [(), (1,), (7,), (33, 17), (4097,), (3, 5, 7), (0,), (0, 4)]


def _has_empty(shapes):
    return any(math.prod(s) == 0 for s in shapes)


def _make(shapes, dtype, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = []
    dts = dtype if isinstance(dtype, (list, tuple)) else [dtype] * len(shapes)
    for s, dt in zip(shapes, dts):
        p = torch.nn.Parameter(torch.zeros(s, dtype=dt))
        p.grad = (torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dt)
        ps.append(p)
    return ps


def _clone(ps):
    out = []
    for p in ps:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def _bits_equal(a, b):
    """Equal bit for bit, except that any NaN equals any NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    na, nb = torch.isnan(a), torch.isnan(b)
    if not torch.equal(na, nb):
        return False
    ia = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a[~na].view(ia), b[~nb].view(ia))


def _ulp(x, dtype):
    if x == 0 or not math.isfinite(x):
        return 0.0
    fi = torch.finfo(dtype)
    return max(math.ldexp(fi.eps, math.frexp(abs(x))[1] - 1), fi.smallest_normal * fi.eps)


def _ref64(tensors, p):
    return tnu.get_total_norm([t.double() for t in tensors], p).item()


def _check_norm(ours, tensors, p, label):
    """ours: fusedoptim's total norm of `tensors`; checks against torch (foreach
    None and False) and against the float64 reference."""
    tor = tnu.get_total_norm(tensors, p)
    tor_loop = tnu.get_total_norm(tensors, p, foreach=False)
    assert ours.dtype == tor.dtype and ours.shape == tor.shape and ours.device == tor.device, label
    assert not ours.requires_grad
    o, t, tl = ours.item(), tor.item(), tor_loop.item()
    if p in (INF, -INF, 0.0):
        assert _bits_equal(ours, tor) and _bits_equal(ours, tor_loop), f"{label}: {o} vs torch {t}/{tl}"
        return
    ref = _ref64(tensors, p)
    if math.isnan(ref) or math.isinf(ref):
        assert _bits_equal(ours, torch.tensor(ref, dtype=ours.dtype)), f"{label}: {o} vs ref {ref}"
        return
    if math.isinf(torch.tensor(ref, dtype=torch.float64).to(ours.dtype).item()):
        assert o == ref * math.inf, f"{label}: {o} vs ref {ref} (beyond {ours.dtype})"  # the rounded ref is inf
        return
    slack = 1e-12 * abs(ref)
    assert abs(o - ref) <= 0.5 * _ulp(ref, ours.dtype) + slack, f"{label}: ours {o!r} ref {ref!r}"
    assert abs(o - ref) <= abs(t - ref) + slack, f"{label}: ours {o!r} farther than torch {t!r} from {ref!r}"
    assert abs(o - ref) <= abs(tl - ref) + slack, f"{label}: ours {o!r} farther than torch {tl!r} from {ref!r}"
    rtol = max(RTOL[x.dtype] for x in tensors)
    assert abs(o - t) <= rtol * abs(ref) + _ulp(ref, ours.dtype), f"{label}: {o!r} vs torch {t!r}"


# ------------------------------------------------------------------ API shape --


def test_signatures_match_torch():
    for name in ("clip_grad_norm_", "get_total_norm", "clip_grads_with_norm_"):
        ours = inspect.signature(getattr(fusedoptim, name))
        theirs = inspect.signature(getattr(tnu, name))
        assert [(p.name, p.default, p.kind) for p in ours.parameters.values()] == \
               [(p.name, p.default, p.kind) for p in theirs.parameters.values()], name


# -------------------------------------------------------------- norm parity --


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p", ORDERS, ids=str)
def test_total_norm_parity(dtype, p):
    shapes = [s for s in SHAPES if not (math.prod(s) == 0 and (p < 0 or p == INF))]
    ps = _make(shapes, dtype)
    grads = [q.grad for q in ps]
    assert _C.rtable(grads) is not None  # the native path serves this
    for fe in (None, True, False):
        ours = fusedoptim.get_total_norm(grads, p, foreach=fe)
        _check_norm(ours, grads, p, f"{dtype} p={p} foreach={fe}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p", [2.0, 1.0, INF, 3.5], ids=str)
def test_total_norm_large_tensor(dtype, p):
    ps = _make([(1_000_003,), (129,)], dtype)
    grads = [q.grad for q in ps]
    _check_norm(fusedoptim.get_total_norm(grads, p), grads, p, f"1M {dtype} p={p}")


def test_p0_counts_tensors_with_a_nonzero_like_torch():
    ts = [torch.zeros(5), torch.tensor([0.0, 3.0]), torch.tensor([math.nan]), torch.zeros(0),
          torch.ones(70000, dtype=torch.float16)]
    for t in ([ts[0]], ts[:2], ts):
        ours = fusedoptim.get_total_norm(t, 0)
        assert _bits_equal(ours, tnu.get_total_norm(t, 0)), (ours, tnu.get_total_norm(t, 0))
    assert fusedoptim.get_total_norm(ts, 0).item() == 3.0


@pytest.mark.parametrize("dtypes", [
    [torch.float32, torch.float64], [torch.bfloat16, torch.float16], [torch.bfloat16, torch.float32],
    [torch.float16, torch.float64, torch.bfloat16, torch.float32],
], ids=lambda d: "+".join(str(x).split(".")[1] for x in d))
@pytest.mark.parametrize("p", [2.0, 1.0, INF, 0.0, 3.5], ids=str)
def test_mixed_dtypes(dtypes, p):
    shapes = [(31,), (8, 9), (5000,), (3,)][: len(dtypes)]
    ps = _make(shapes, dtypes)
    grads = [q.grad for q in ps]
    _check_norm(fusedoptim.get_total_norm(grads, p), grads, p, f"{dtypes} p={p}")
    tp = _clone(ps)
    total = fusedoptim.clip_grad_norm_(ps, 0.1, p)
    ref_total = tnu.clip_grad_norm_(tp, 0.1, p)
    assert total.dtype == ref_total.dtype
    check = _clone(tp)
    for c, q in zip(check, _make(shapes, dtypes)):
        c.grad = q.grad
    tnu.clip_grads_with_norm_(check, 0.1, total)
    for a, b in zip(ps, check):
        assert _bits_equal(a.grad, b.grad)


def test_fp32_sum_of_squares_beyond_float_range():
    """torch's float32 accumulation overflows (returns inf) where the norm is
    representable; fusedoptim returns the correctly rounded norm (documented
    difference)."""
    big = [torch.full((4,), 1e20), torch.full((3,), -2e20)]
    ours = fusedoptim.get_total_norm(big)
    ref = _ref64(big, 2.0)
    assert math.isfinite(ref) and ours.item() == torch.tensor(ref, dtype=torch.float32).item()
    assert torch.isinf(tnu.get_total_norm(big))  # torch's float32 overflow
    small = [torch.full((4,), 1e-25)]
    assert fusedoptim.get_total_norm(small).item() == torch.tensor(_ref64(small, 2.0), dtype=torch.float32).item() > 0


# ----------------------------------------------------------------- clipping --


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("p", [2.0, 1.0, INF, -INF, 0.0, 3.5, -1.0], ids=str)
@pytest.mark.parametrize("max_norm", [1e-3, 0.7, 1e6], ids=["small", "mid", "large"])
def test_clip_parity(dtype, p, max_norm):
    shapes = [(), (1,), (7,), (33, 17), (4097,), (3, 5, 7)]
    if p >= 0 and p != INF:
        shapes.append((0,))
    ps = _make(shapes, dtype)
    g0 = [q.grad.clone() for q in ps]
    tp = _clone(ps)
    v0 = [q.grad._version for q in ps]
    total = fusedoptim.clip_grad_norm_(ps, max_norm, p)
    ref_total = tnu.clip_grad_norm_(tp, max_norm, p)
    label = f"{dtype} p={p} max_norm={max_norm}"
    _check_norm(total, g0, p, label)
    assert total.dtype == ref_total.dtype and total.shape == ref_total.shape
    # the scale pass is torch's multiply exactly, given our total norm
    check = _clone(tp)
    for c, g in zip(check, g0):
        c.grad = g.clone()
    tnu.clip_grads_with_norm_(check, max_norm, total)
    for k, (a, b, r) in enumerate(zip(ps, check, tp)):
        assert _bits_equal(a.grad, b.grad), f"{label} grad {k}"
        tol = RTOL[dtype] * 2 * r.grad.abs() + torch.finfo(dtype).eps * r.grad.abs() * 2
        assert torch.all((a.grad.double() - r.grad.double()).abs() <= tol.double() + 1e-30), f"{label} grad {k}"
    # clipped or not, every grad's version moved, as torch's mul_ moves it
    assert all(q.grad._version > v for q, v in zip(ps, v0))
    if max_norm == 1e6 and p in (2.0, 1.0, INF):
        assert all(_bits_equal(q.grad, g) for q, g in zip(ps, g0))  # coefficient 1: unchanged


@pytest.mark.parametrize("foreach", [None, True, False])
def test_foreach_flag_gives_identical_results(foreach):
    ps = _make([(100,), (20, 30), (5,)], torch.float32)
    base = _clone(ps)
    total = fusedoptim.clip_grad_norm_(ps, 0.5, foreach=foreach)
    ref = _clone(base)
    ref_total = fusedoptim.clip_grad_norm_(ref, 0.5)
    assert _bits_equal(total, ref_total)
    for a, b in zip(ps, ref):
        assert _bits_equal(a.grad, b.grad)


def test_large_tensor_clip():
    ps = _make([(1_000_003,)], torch.float32)
    tp = _clone(ps)
    g0 = ps[0].grad.clone()
    total = fusedoptim.clip_grad_norm_(ps, 1.0)
    ref_total = tnu.clip_grad_norm_(tp, 1.0)
    _check_norm(total, [g0], 2.0, "1M clip")
    assert abs(total.item() - ref_total.item()) <= RTOL[torch.float32] * ref_total.item()
    expect = g0 * torch.clamp(1.0 / (total + 1e-6), max=1.0)
    assert _bits_equal(ps[0].grad, expect)


# ------------------------------------------------------------ special values --


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("p", [2.0, 1.0, INF, -INF, 0.0, 3.5], ids=str)
def test_nonfinite_grads(dtype, bad, p):
    ps = _make([(50,), (9,), (4, 4)], dtype)
    ps[1].grad[3] = bad
    ps[2].grad[0, 0] = 0.0
    tp = _clone(ps)
    total = fusedoptim.clip_grad_norm_(ps, 1.0, p)
    ref_total = tnu.clip_grad_norm_(tp, 1.0, p)
    assert _bits_equal(total, ref_total), (total, ref_total)
    for a, b in zip(ps, tp):
        assert _bits_equal(a.grad, b.grad)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_error_if_nonfinite(bad):
    ps = _make([(10,), (4,)], torch.float32)
    ps[0].grad[2] = bad
    tp = _clone(ps)
    g0 = [q.grad.clone() for q in ps]
    with pytest.raises(RuntimeError) as ours:
        fusedoptim.clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as theirs:
        tnu.clip_grad_norm_(tp, 1.0, error_if_nonfinite=True)
    assert str(ours.value) == str(theirs.value)
    assert all(_bits_equal(q.grad, g) for q, g in zip(ps, g0))  # nothing scaled
    with pytest.raises(RuntimeError, match="non-finite"):
        fusedoptim.get_total_norm([q.grad for q in ps], 1.0, error_if_nonfinite=True)
    # finite: no error
    ok = _make([(10,)], torch.float32)
    assert math.isfinite(fusedoptim.clip_grad_norm_(ok, 1.0, error_if_nonfinite=True).item())


# ------------------------------------------------------ inputs and errors --


def test_input_forms():
    ps = _make([(6,), (3,), (2, 2)], torch.float32)
    ps[1].grad = None
    tp = _clone(ps)
    assert _bits_equal(fusedoptim.clip_grad_norm_(ps, 0.1), tnu.clip_grad_norm_(tp, 0.1))
    assert ps[1].grad is None
    for a, b in zip(ps, tp):
        assert (a.grad is None and b.grad is None) or _bits_equal(a.grad, b.grad)
    # a single tensor, a generator, a tuple
    one, one_t = _make([(9,)], torch.float64)[0], None
    one_t = _clone([one])[0]
    assert _bits_equal(fusedoptim.clip_grad_norm_(one, 0.2), tnu.clip_grad_norm_(one_t, 0.2))
    assert _bits_equal(one.grad, one_t.grad)
    ps2 = _make([(5,), (6,)], torch.float32)
    tp2 = _clone(ps2)
    assert _bits_equal(fusedoptim.clip_grad_norm_((q for q in ps2), 0.3), tnu.clip_grad_norm_(tuple(tp2), 0.3))
    assert _bits_equal(fusedoptim.get_total_norm(torch.ones(3, 4)), tnu.get_total_norm(torch.ones(3, 4)))


def test_empty_inputs():
    for fn in (fusedoptim.clip_grad_norm_, tnu.clip_grad_norm_):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r = fn((q for q in []), 1.0)
        assert _bits_equal(r, torch.tensor(0.0))
        assert len(w) == 1 and w[0].category is UserWarning and "empty generator" in str(w[0].message)
        assert w[0].filename == __file__  # points at the caller, as torch's does
        assert _bits_equal(fn([], 1.0), torch.tensor(0.0))
        no_grad = [torch.nn.Parameter(torch.ones(3))]
        assert _bits_equal(fn(no_grad, 1.0), torch.tensor(0.0))
    assert _bits_equal(fusedoptim.get_total_norm([]), tnu.get_total_norm([]))
    torch.set_default_dtype(torch.float64)
    assert fusedoptim.get_total_norm([]).dtype == tnu.get_total_norm([]).dtype == torch.float64
    assert fusedoptim.clip_grads_with_norm_([], 1.0, torch.tensor(1.0)) is None


def _same_error(call_ours, call_theirs):
    with pytest.raises(Exception) as e1:
        call_ours()
    with pytest.raises(Exception) as e2:
        call_theirs()
    assert type(e1.value) is type(e2.value) and str(e1.value) == str(e2.value), (e1.value, e2.value)
    return e1.value


@pytest.mark.parametrize("p", [INF, -INF, -1.0, -0.5], ids=str)
@pytest.mark.parametrize("foreach", [None, False])
def test_empty_tensor_without_identity_raises_like_torch(p, foreach):
    ps = _make([(0,), (3,)], torch.float32)
    tp = _clone(ps)
    g0 = [q.grad.clone() for q in ps]
    _same_error(lambda: fusedoptim.clip_grad_norm_(ps, 1.0, p, foreach=foreach),
                lambda: tnu.clip_grad_norm_(tp, 1.0, p, foreach=foreach))
    assert all(_bits_equal(q.grad, g) for q, g in zip(ps, g0))


def test_bad_arguments_raise_like_torch():
    def mk():
        return _make([(4,)], torch.float32)
    for kw in ({"norm_type": "abc"}, {"norm_type": None}, {"max_norm": "x"}, {"max_norm": None}):
        args = dict({"max_norm": 1.0}, **kw)
        _same_error(lambda: fusedoptim.clip_grad_norm_(mk(), **args), lambda: tnu.clip_grad_norm_(mk(), **args))
    _same_error(lambda: fusedoptim.get_total_norm([torch.ones(3), None]),
                lambda: tnu.get_total_norm([torch.ones(3), None]))
    _same_error(lambda: fusedoptim.get_total_norm([torch.ones(3, dtype=torch.int64)]),
                lambda: tnu.get_total_norm([torch.ones(3, dtype=torch.int64)]))
    _same_error(lambda: fusedoptim.clip_grad_norm_([None], 1.0), lambda: tnu.clip_grad_norm_([None], 1.0))
    _same_error(lambda: fusedoptim.clip_grads_with_norm_(mk(), 1.0, 2.0),
                lambda: tnu.clip_grads_with_norm_(mk(), 1.0, 2.0))
    # a bad max_norm is reported after the norm, before any grad changes
    ps = mk()
    g0 = ps[0].grad.clone()
    with pytest.raises(ValueError):
        fusedoptim.clip_grad_norm_(ps, "x")
    assert _bits_equal(ps[0].grad, g0)


def test_string_norm_type_and_nan_order_like_torch():
    ts = [torch.randn(10), torch.randn(3)]
    assert _bits_equal(fusedoptim.get_total_norm(ts, "inf"), tnu.get_total_norm(ts, "inf"))
    assert _bits_equal(fusedoptim.get_total_norm(ts, math.nan), tnu.get_total_norm(ts, math.nan))


@pytest.mark.parametrize("tdtype", DTYPES, ids=str)
@pytest.mark.parametrize("gdtype", DTYPES, ids=str)
@pytest.mark.parametrize("total", [0.3, 7.77, 1e-9, math.inf, math.nan])
def test_clip_grads_with_norm_bit_exact(tdtype, gdtype, total):
    ps = _make([(37,), (5, 5)], gdtype)
    tp = _clone(ps)
    t = torch.tensor(total, dtype=tdtype)
    fusedoptim.clip_grads_with_norm_(ps, 1.5, t)
    tnu.clip_grads_with_norm_(tp, 1.5, t)
    for a, b in zip(ps, tp):
        assert _bits_equal(a.grad, b.grad), (a.grad[:4], b.grad[:4])


def test_clip_grads_with_norm_shaped_total_like_torch():
    ps = _make([(3,), (3,)], torch.float32)
    tp = _clone(ps)
    g0 = [q.grad.clone() for q in ps]
    t = torch.tensor([4.0])
    err = _same_error(lambda: fusedoptim.clip_grads_with_norm_(ps, 1.0, t),
                      lambda: tnu.clip_grads_with_norm_(tp, 1.0, t))
    assert "0 dim" in str(err)
    for a, b, g in zip(ps, tp, g0):
        assert _bits_equal(a.grad, b.grad) and _bits_equal(a.grad, g)


# -------------------------------------------------------- layouts, fallbacks --


def test_transposed_grad_is_served_natively():
    p = torch.nn.Parameter(torch.zeros(40, 30))
    p.grad = torch.randn(30, 40).t()
    assert not p.grad.is_contiguous() and _C.rtable([p.grad]) is not None
    q = _clone([p])[0]
    q.grad = p.grad.clone().t().contiguous().t()
    total = fusedoptim.clip_grad_norm_([p], 0.5)
    _check_norm(total, [q.grad], 2.0, "transposed")
    expect = q.grad * torch.clamp(0.5 / (total + 1e-6), max=1.0)
    assert _bits_equal(p.grad, expect) and p.grad.stride() == (1, 40)


def test_negative_view_grad():
    """A negative-bit view (torch._neg_view) is served: |x| and a linear scale
    do not depend on the sign bit kept aside. (torch's foreach path raises on
    it, its for-loop path works: ours matches the for-loop path.)"""
    def build():
        p = torch.nn.Parameter(torch.zeros(50))
        p.grad = torch._neg_view(torch.randn(50, generator=torch.Generator().manual_seed(2)))
        return [p]
    ours, theirs = build(), build()
    assert ours[0].grad.is_neg() and _C.rtable([ours[0].grad]) is not None
    for p in (2.0, 1.0, INF, 3.5):
        _check_norm(fusedoptim.get_total_norm([ours[0].grad], p), [theirs[0].grad.resolve_neg()], p, "neg")
    total = fusedoptim.clip_grad_norm_(ours, 0.1)
    tnu.clip_grads_with_norm_(theirs, 0.1, total, foreach=False)
    assert _bits_equal(ours[0].grad.resolve_neg(), theirs[0].grad.resolve_neg())


@pytest.mark.parametrize("kind", ["sliced", "expanded", "subclass", "complex", "duplicate", "overlap"])
def test_cases_served_by_torch_match_torch(kind):
    def build():
        ps = _make([(8, 6), (5,)], torch.float32)
        if kind == "sliced":
            ps[0].grad = torch.randn(8, 12, generator=torch.Generator().manual_seed(1))[:, ::2]
        elif kind == "expanded":
            ps[0].grad = torch.randn(1, 6, generator=torch.Generator().manual_seed(1)).expand(8, 6)
        elif kind == "subclass":
            class MyT(torch.Tensor):
                pass
            ps[0].grad = ps[0].grad.as_subclass(MyT)
        elif kind == "complex":
            ps[0] = torch.nn.Parameter(torch.zeros(4, dtype=torch.complex64))
            ps[0].grad = torch.randn(4, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
        elif kind == "duplicate":
            ps.append(ps[0])            # the same grad twice: torch scales it twice
        elif kind == "overlap":
            base = torch.randn(20, generator=torch.Generator().manual_seed(1))
            ps = [torch.nn.Parameter(torch.zeros(12)), torch.nn.Parameter(torch.zeros(14))]
            ps[0].grad, ps[1].grad = base[:12], base[6:]
        return ps
    ours, theirs = build(), build()
    try:
        r_theirs = tnu.clip_grad_norm_(theirs, 0.3)
    except RuntimeError as e:
        with pytest.raises(RuntimeError) as e2:
            fusedoptim.clip_grad_norm_(ours, 0.3)
        assert str(e2.value) == str(e)
        return
    r_ours = fusedoptim.clip_grad_norm_(ours, 0.3)
    r_ours, r_theirs = r_ours.as_subclass(torch.Tensor), r_theirs.as_subclass(torch.Tensor)
    assert _bits_equal(r_ours, r_theirs) or abs(r_ours.item() - r_theirs.item()) <= 1e-6 * abs(r_theirs.item())
    for a, b in zip(ours, theirs):
        ga, gb = a.grad.as_subclass(torch.Tensor), b.grad.as_subclass(torch.Tensor)
        assert torch.allclose(ga, gb, rtol=1e-6, atol=0), kind
    if kind in ("duplicate", "overlap"):
        assert _C.rtable([q.grad for q in ours]).overlaps()


def test_rtable_rejects_what_it_cannot_serve():
    assert _C.rtable([torch.randn(4, 4)[:, :2]]) is None
    assert _C.rtable([torch.ones(3).expand(2, 3)]) is None
    assert _C.rtable([torch.ones(3, dtype=torch.int32)]) is None
    assert _C.rtable([torch.ones(2, 2).to_sparse()]) is None
    t = _C.rtable([torch.randn(5, 7).t(), torch.ones(1, 3, 1)])
    assert t is not None and not t.overlaps()


# ------------------------------------------- threads and instruction sets --


def _run_all(grain, threads, isa=None):
    old_grain, old_threads, old_isa = _C.get_grain(), torch.get_num_threads(), _C.get_isa()
    _C.set_grain(grain)
    torch.set_num_threads(threads)
    if isa:
        _C.set_isa(isa)
    try:
        out = []
        for dtype in DTYPES:
            ps = _make([(70001,), (513,), (3,), (20000,), (4096,)], dtype, seed=3)
            grads = [q.grad for q in ps]
            tab = _C.rtable(grads)
            for p in ORDERS:
                if p != 0.0:
                    out.append(torch.tensor(tab.norms(p)[1], dtype=torch.float64))
                out.append(torch.tensor(tab.norm(p), dtype=torch.float64))
            out.append(fusedoptim.clip_grad_norm_(ps, 0.01, 2.0))
            out += [q.grad for q in ps]
        return out
    finally:
        _C.set_grain(old_grain)
        torch.set_num_threads(old_threads)
        _C.set_isa(old_isa)


def test_results_independent_of_thread_count_and_grain():
    assert _C.has_parallel_for()  # else this would only compare inline runs
    ref = _run_all(grain=1 << 30, threads=1)          # one range, inline
    for grain, threads in ((16, 2), (16, 1), (4096 * 3, 2)):
        got = _run_all(grain, threads)
        assert len(got) == len(ref)
        for k, (a, b) in enumerate(zip(ref, got)):
            assert _bits_equal(a, b), (grain, threads, k)


def test_results_independent_of_instruction_set():
    isas = [i for i in _C.compiled_isas() if _C.cpu_supports(i)]
    ref = _run_all(grain=16, threads=2, isa="baseline")
    for isa in isas:
        got = _run_all(grain=16, threads=2, isa=isa)
        for k, (a, b) in enumerate(zip(ref, got)):
            assert _bits_equal(a, b), (isa, k)


def test_fp16_conversions_exhaustive():
    """Every fp16 bit pattern: the norm kernel widens it exactly, and the scale
    kernel narrows x * c with round-to-nearest-even as torch does, on each ISA."""
    allh = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16)
    finite = allh[torch.isfinite(allh)]
    for isa in [i for i in _C.compiled_isas() if _C.cpu_supports(i)]:
        old = _C.get_isa()
        _C.set_isa(isa)
        try:
            tab = _C.rtable([finite])
            assert tab.norm(1.0) == finite.double().abs().sum().item()
            assert tab.norm(INF) == finite.double().abs().max().item()
            for c in (0.3, 1.7, 1e-3, 1234.5, 3e-8):
                for src in (allh, torch.tensor([6.1e-5, 6.0e-5, 65504.0, 65519.0, 65520.0],
                                               dtype=torch.float16)):
                    x = src.clone()
                    _C.rtable([x]).scale(c)
                    assert _bits_equal(x, src * torch.tensor(c, dtype=torch.float32)), (isa, c)
            bf = allh.view(torch.bfloat16)
            for c in (0.3, 1.7, 3e-30):
                x = bf.clone()
                _C.rtable([x]).scale(c)
                assert _bits_equal(x, bf * torch.tensor(c, dtype=torch.float32)), (isa, c)
        finally:
            _C.set_isa(old)
