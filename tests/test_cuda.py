"""The CUDA backend on a GPU: every optimizer x dtype against torch's CUDA
implementation and against fusedoptim's CPU kernels, in-kernel grad_scale /
found_inf, device-resident lr, many-launch groups, and CUDA-graph capture.

Skips without a GPU. With a GPU but no usable extension (no prebuilt one and
no nvcc) it skips too, naming why, unless FUSEDOPTIM_REQUIRE_CUDA=1 (GPU CI),
which makes that a failure.
"""
from __future__ import annotations

import os

import pytest
import torch

import fusedoptim
from fusedoptim import _C
from fusedoptim import _cuda

if not torch.cuda.is_available():
    pytest.skip("no GPU", allow_module_level=True)
if not _cuda.load():
    if os.environ.get("FUSEDOPTIM_REQUIRE_CUDA") == "1":
        raise RuntimeError(f"fusedoptim CUDA backend required but {_cuda.status()}")
    pytest.skip(f"fusedoptim CUDA backend: {_cuda.status()}", allow_module_level=True)

DEV = torch.device("cuda")
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# shapes: scalar-ish, odd, one warp-unaligned, > one 65536-element chunk, empty
SHAPES = [(1,), (7,), (33, 17), (513,), (70_001,), (0,), (64, 48)]

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, nesterov=False, maximize=True)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.95), maximize=True, eps=1e-6)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.05, amsgrad=True, maximize=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=1e-2, alpha=0.9)),
    ("RMSprop", dict(lr=1e-2, centered=True, momentum=0.8, weight_decay=0.01, maximize=True)),
    ("Adamax", dict(lr=1e-2, weight_decay=0.01)),
    ("RAdam", dict(lr=1e-2, weight_decay=0.01)),  # 5 steps: unrectified; the capture test runs longer
    ("RAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adadelta", dict(lr=1.0, rho=0.8, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, l1_weight_decay=1e-3)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1, max_grad_norm=0.5)),
]
# torch has a fused CUDA kernel for these; the rest compare with its foreach path
TORCH_FUSED = ("SGD", "Adam", "AdamW")
# fusedoptim-only options: the reference is fusedoptim's CPU kernels only
FO_ONLY = ("l1_weight_decay", "max_grad_norm")


def tol(dtype):
    return {
        torch.float32: dict(rtol=1e-5, atol=1e-6),
        torch.float64: dict(rtol=1e-12, atol=1e-13),
        torch.float16: dict(rtol=2e-3, atol=2e-3),
        torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    }[dtype]


def make_params(dtype, shapes=SHAPES, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g).to(device=device, dtype=dtype)) for s in shapes]
    # a transposed (dense, non-contiguous) param
    ps.append(torch.nn.Parameter(torch.randn(40, 24, generator=g).to(device=device, dtype=dtype).t()))
    return ps


def grads_for(ps, step, seed=1):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    out = []
    for p in ps:
        x = torch.randn(p.shape, generator=g).to(device=p.device, dtype=p.dtype)
        if not p.is_contiguous():  # grad with the param's strides
            x = torch.empty_like(p, memory_format=torch.preserve_format).copy_(x)
        out.append(x)
    return out


def run(cls, ps, kw, steps=5):
    opt = cls(ps, **kw)
    for s in range(steps):
        for p, g in zip(ps, grads_for(ps, s)):
            p.grad = g
        opt.step()
    return opt


def clone(ps, device=None, dtype=None):
    return [torch.nn.Parameter(p.detach().to(device=device or p.device, dtype=dtype or p.dtype).clone(
        memory_format=torch.preserve_format)) for p in ps]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_torch_cuda(name, kw, dtype):
    if any(k in kw for k in FO_ONLY):
        pytest.skip("a fusedoptim-only option: compared with the CPU kernels")
    ps = make_params(dtype)
    ref = clone(ps)
    opt = run(getattr(fusedoptim, name), ps, kw)
    ropt = run(getattr(torch.optim, name), ref, dict(kw, **({"fused": True} if name in TORCH_FUSED else
                                                             {"foreach": True})))
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, **tol(dtype))
    for p, r in zip(ps, ref):
        st, rs = opt.state[p], ropt.state[r]
        assert set(st) == set(rs)
        for k in rs:
            if k == "step":
                assert float(st[k]) == float(rs[k]) and st[k].device == p.device
            else:
                assert st[k].dtype == rs[k].dtype
                torch.testing.assert_close(st[k], rs[k], **tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name,kw", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_matches_fusedoptim_cpu(name, kw, dtype):
    """Same math header on both devices. float32: bit-identical where the CPU
    kernel uses its vector form (not the last numel % 8 elements of a tensor),
    provided the CPU runs an FMA variant (avx2/avx512) like the GPU does."""
    ps = make_params(dtype)
    cpu = clone(ps, device="cpu")
    run(getattr(fusedoptim, name), ps, kw)
    run(getattr(fusedoptim, name), cpu, kw)
    fma_cpu = fusedoptim._C.get_isa() in ("avx2", "avx512")
    for p, c in zip(ps, cpu):
        got = p.detach().cpu()
        torch.testing.assert_close(got, c, **tol(dtype))
        if dtype == torch.float32 and fma_cpu and got.numel() >= 8:
            n = got.numel() - got.numel() % 8
            # elements in memory order (the kernels run over the flat storage)
            flat_g = got.as_strided((got.numel(),), (1,))
            flat_c = c.detach().as_strided((c.numel(),), (1,))
            assert torch.equal(flat_g[:n], flat_c[:n])


@pytest.mark.parametrize("name,kw", [("Lion", dict(lr=1e-3, weight_decay=0.1)), ("NAdam", dict(lr=1e-2)),
                                     ("LAMB", dict(lr=1e-2, weight_decay=0.01))])
def test_other_optimizers_on_cuda(name, kw):
    """Lion (fused CUDA kernel; torch has none) against the CPU kernels; NAdam
    and LAMB (torch's path on CUDA for now) against the CPU kernels too."""
    ps = make_params(torch.float32)
    cpu = clone(ps, device="cpu")
    run(getattr(fusedoptim, name), ps, kw)
    run(getattr(fusedoptim, name), cpu, kw)
    for p, c in zip(ps, cpu):
        torch.testing.assert_close(p.detach().cpu(), c, rtol=1e-5, atol=1e-6)


def test_many_tensors_take_several_launches():
    """More tensors than one chunk table holds (W3-like): every one updated."""
    ps = make_params(torch.float32, shapes=[(512,)] * 1500)
    ref = clone(ps)
    run(fusedoptim.AdamW, ps, dict(lr=1e-2, weight_decay=0.1), steps=3)
    run(torch.optim.AdamW, ref, dict(lr=1e-2, weight_decay=0.1, fused=True), steps=3)
    info = list(torch.ops.fusedoptim.cuda_table_info(_C.KIND_ADAM, [0.0] * 12, [0] * 7))
    assert info[2] < 1500  # really more than one launch
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, **tol(torch.float32))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"])
def test_grad_scale_and_found_inf_in_kernel(name):
    """GradScaler's contract (_step_supports_amp_scaling): grad_scale and
    found_inf set on the optimizer before step. The kernel unscales (writing
    the grads back unscaled) and skips everything when found_inf != 0."""
    kw = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=1e-2, weight_decay=0.1)
    cls = getattr(fusedoptim, name)
    ps, ref = make_params(torch.float32), None
    ref = clone(ps)
    opt, ropt = cls(ps, **kw), cls(ref, **kw)
    scale = torch.tensor(1024.0, device=DEV)
    for s in range(3):
        gs = grads_for(ps, s)
        for p, r, g in zip(ps, ref, gs):
            p.grad, r.grad = g * 1024.0, g.clone()
        opt.grad_scale, opt.found_inf = scale, torch.zeros((), device=DEV)
        opt.step()
        ropt.step()
        for p, g in zip(ps, gs):  # grads written back unscaled, as torch's fused kernels do
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=0)
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)
    # an overflowed step: nothing changes (params, state, step counters)
    before = [p.detach().clone() for p in ps]
    state = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in ps}
    for p, g in zip(ps, grads_for(ps, 9)):
        p.grad = g
    opt.grad_scale, opt.found_inf = scale, torch.ones((), device=DEV)
    opt.step()
    for p, b in zip(ps, before):
        assert torch.equal(p, b)
        for k, v in opt.state[p].items():
            assert torch.equal(v, state[id(p)][k]), k


@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64], ids=str)
def test_device_lr_tensor(lr_dtype):
    ps = make_params(torch.float32)
    ref = clone(ps)
    opt = run(fusedoptim.AdamW, ps, dict(lr=torch.tensor(3e-3, device=DEV, dtype=lr_dtype)))
    run(fusedoptim.AdamW, ref, dict(lr=3e-3))
    for p, r in zip(ps, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)
    assert opt.param_groups[0]["lr"].device.type == "cuda"


def test_version_counter_is_bumped():
    ps = make_params(torch.float32, shapes=[(10,)])
    opt = fusedoptim.Adam(ps)
    ps[0].grad = torch.ones_like(ps[0])
    v = ps[0]._version
    opt.step()
    assert ps[0]._version > v


@pytest.mark.parametrize("name,kw", [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=torch.tensor(1e-2, device=DEV), weight_decay=0.1)),
    ("Adagrad", dict(lr=0.05)),
    ("RAdam", dict(lr=1e-2)),
])
def test_cuda_graph_capture(name, kw):
    """A captured step replays like eager steps: step counters, lr and the
    inf flag live on the device, so nothing is baked in at capture time."""
    cls = getattr(fusedoptim, name)
    ps = make_params(torch.float32, shapes=[(1000,), (70_001,), (3, 5)])
    eager = clone(ps)
    kw2 = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kw.items()}
    opt, eopt = cls(ps, **kw), cls(eager, **kw2)
    static = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in ps]
    for p, g in zip(ps, static):
        p.grad = g
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: state created, SGD buffers past their first step
        for s in range(2):
            for g, x in zip(static, grads_for(ps, s)):
                g.copy_(x)
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    for s in range(2):
        for p, x in zip(eager, grads_for(eager, s)):
            p.grad = x
        eopt.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for s in range(2, 12):  # RAdam turns rectified at step 6 (beta2 = 0.999) inside the graph
        for g, x in zip(static, grads_for(ps, s)):
            g.copy_(x)
        graph.replay()
        for p, x in zip(eager, grads_for(eager, s)):
            p.grad = x
        eopt.step()
    torch.cuda.synchronize()
    for p, e in zip(ps, eager):
        torch.testing.assert_close(p, e, rtol=0, atol=0)
    if name != "SGD":
        assert all(float(opt.state[p]["step"]) == 12.0 for p in ps)
