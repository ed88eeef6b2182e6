"""Host-side logic of the CUDA backend, tested on CPU (no GPU, no CUDA torch):
the chunk table (csrc/cuda/chunk_plan.h, compiled here with the C compiler),
which params the CUDA kernels serve and how they are grouped, the packing of
hyper-parameters, step-counter placement, the build lock, backend discovery
and the fallback to torch's fused kernels with one warning."""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import fusedoptim
from fusedoptim import _C, _cuda

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"


# ------------------------------------------------------------- chunk table --

@pytest.fixture(scope="module")
def cplan(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not (CSRC / "cuda" / "chunk_plan.h").exists():
        pytest.skip("no C compiler or no csrc/ (installed package without sources)")
    d = tmp_path_factory.mktemp("cplan")
    src = d / "cplan.c"
    src.write_text(textwrap.dedent("""
        #include "chunk_plan.h"
        int cp_next(const int64_t *numel, int32_t n, int32_t start, int32_t max_t, int64_t chunk,
                    int32_t *end, int64_t *blocks) {
            fo_cp_launch l;
            int rc = fo_cp_next(numel, n, start, max_t, chunk, &l);
            if (rc == 0) { *end = l.end; *blocks = l.blocks; }
            return rc;
        }
        int32_t cp_locate(const int32_t *cs, int32_t count, int32_t block) {
            return fo_cp_locate(cs, count, block);
        }
    """))
    so = d / "libcplan.so"
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", "-O2", "-shared", "-fPIC", f"-I{CSRC / 'cuda'}",
                    str(src), "-o", str(so)], check=True)
    lib = ctypes.CDLL(str(so))
    lib.cp_next.argtypes = [ctypes.POINTER(ctypes.c_int64), ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                            ctypes.c_int64, ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64)]
    lib.cp_locate.argtypes = [ctypes.POINTER(ctypes.c_int32), ctypes.c_int32, ctypes.c_int32]
    lib.cp_locate.restype = ctypes.c_int32
    return lib


def plan(lib, numel, max_t, chunk):
    """Python mirror of the launcher's loop (multi_tensor_apply.cuh) over the C planner."""
    arr = (ctypes.c_int64 * len(numel))(*numel)
    launches, start = [], 0
    while start < len(numel):
        end, blocks = ctypes.c_int32(), ctypes.c_int64()
        assert lib.cp_next(arr, len(numel), start, max_t, chunk, ctypes.byref(end), ctypes.byref(blocks)) == 0
        assert end.value > start, "the planner must make progress"
        launches.append((start, end.value, blocks.value))
        start = end.value
    return launches


@pytest.mark.parametrize("seed", range(8))
def test_chunk_plan_covers_every_element_once(cplan, seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 300, (1,), generator=g))
    chunk = int(torch.randint(1, 64, (1,), generator=g))
    max_t = int(torch.randint(1, 40, (1,), generator=g))
    numel = torch.randint(0, 5 * chunk, (n,), generator=g)
    numel[torch.rand(n, generator=g) < 0.2] = 0  # empty tensors keep a slot (their step still counts)
    numel = [int(x) for x in numel]
    launches = plan(cplan, numel, max_t, chunk)
    assert launches[0][0] == 0 and launches[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(launches, launches[1:]))
    assert len(launches) == -(-n // max_t)  # full launches: ceil(n / max_t)
    seen = [[0] * x for x in numel]
    for first, end, blocks in launches:
        assert end - first <= max_t
        cs = [0]
        for i in range(first, end):
            cs.append(cs[-1] + -(-numel[i] // chunk))
        assert cs[-1] == blocks
        arr = (ctypes.c_int32 * len(cs))(*cs)
        for b in range(blocks):
            j = cplan.cp_locate(arr, end - first, b)
            t = first + j
            c = b - cs[j]
            assert 0 <= c and c * chunk < numel[t], (b, j, numel[t])
            for e in range(c * chunk, min((c + 1) * chunk, numel[t])):
                seen[t][e] += 1
    assert all(all(v == 1 for v in s) for s in seen)


def test_chunk_plan_splits_only_on_tensor_count(cplan):
    # 2,000 tensors of 512 elements (W3): one block each, ceil(2000 / cap) launches
    launches = plan(cplan, [512] * 2000, 625, 65536)
    assert [(a, b, c) for a, b, c in launches] == [(0, 625, 625), (625, 1250, 625), (1250, 1875, 625),
                                                   (1875, 2000, 125)]
    # one huge tensor: one launch, ceil(numel / chunk) blocks
    assert plan(cplan, [16_777_216 + 1], 625, 65536) == [(0, 1, 257)]
    # only empty tensors: one launch with no blocks (the step kernel still runs)
    assert plan(cplan, [0, 0, 0], 625, 65536) == [(0, 3, 0)]


def test_chunk_plan_rejects_a_tensor_beyond_the_grid(cplan):
    arr = (ctypes.c_int64 * 1)(2**31 + 5)
    end, blocks = ctypes.c_int32(), ctypes.c_int64()
    assert cplan.cp_next(arr, 1, 0, 10, 1, ctypes.byref(end), ctypes.byref(blocks)) == -1


# ------------------------------------------------------ which params served --

def _p(*shape, dtype=torch.float32, grad=True):
    p = torch.nn.Parameter(torch.randn(*shape, dtype=dtype))
    if grad:
        p.grad = torch.randn_like(p)
    return p


def test_split_params_serves_dense_params_and_groups_by_dtype():
    a, b = _p(3, 4), _p(5, dtype=torch.bfloat16)
    c, d = _p(2, 2, dtype=torch.float16), _p(7, dtype=torch.float64)
    e = _p(4)
    t = torch.nn.Parameter(torch.randn(4, 3).t())  # transposed: dense, served with a same-strided grad
    t.grad = torch.randn(4, 3).t()
    buckets, rest = _cuda.split_params([a, b, c, d, e, t], device_type="cpu")
    assert rest == []
    assert list(buckets) == [(a.device, torch.float32), (b.device, torch.bfloat16),
                             (c.device, torch.float16), (d.device, torch.float64)]
    assert buckets[(a.device, torch.float32)] == [a, e, t]


@pytest.mark.parametrize("case", ["no_grad", "sparse", "strides", "gaps", "int", "complex", "subclass", "device"])
def test_split_params_leaves_the_rest_to_torch(case):
    p = _p(4, 3)
    if case == "no_grad":
        p.grad = None
    elif case == "sparse":
        p.grad = p.grad.to_sparse()
    elif case == "strides":
        p.grad = torch.randn(3, 4).t()  # contiguous param, transposed grad (same shape 4x3)
    elif case == "gaps":
        p = torch.nn.Parameter(torch.randn(4, 6)[:, ::2])
        p.grad = torch.randn_like(p)
    elif case == "int":
        p = torch.zeros(3, dtype=torch.int32)
    elif case == "complex":
        p = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
        p.grad = torch.randn_like(p)
    elif case == "subclass":
        class Sub(torch.Tensor):
            pass
        p = torch.randn(3).as_subclass(Sub)
        p.grad = torch.randn(3)
    buckets, rest = _cuda.split_params([p], device_type="cuda" if case == "device" else "cpu")
    assert buckets == {} and rest == [p]
    assert _cuda.why_not_served(p, "cuda" if case == "device" else "cpu")


# ------------------------------------------------------------ hparam packing --

def test_pack_sgd():
    opt = fusedoptim.SGD([_p(2)], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False,
                         maximize=True, l1_weight_decay=0.001)
    g = opt.param_groups[0]
    h, f = _cuda.pack_hparams(opt._fo_hparams(g), l1=g["l1_weight_decay"], first=True)
    assert h == [0.1, 0.0, 0.0, 0.0, 0.01, 0.9, 0.1, 0.0, 0.0, 0.0, 0.001, 1.0]
    assert f == [_cuda.WD_COUPLED, 0, 0, 1, _cuda.MOM_FIRST, 0, 0]
    assert _cuda.pack_hparams(opt._fo_hparams(g))[1][4] == _cuda.MOM_UPDATE
    opt = fusedoptim.SGD([_p(2)], lr=0.1, nesterov=False)
    h, f = _cuda.pack_hparams(opt._fo_hparams(opt.param_groups[0]), grad_mul=0.1)
    assert f == [_cuda.WD_NONE, 0, 0, 0, _cuda.MOM_NONE, 0, 0]
    assert h[11] == torch.tensor(0.1, dtype=torch.float32).item() != 0.1  # clip coef rounded to float


def test_pack_adam_family():
    def flags(cls, **kw):
        o = cls([_p(2)], **kw)
        return _cuda.pack_hparams(o._fo_hparams(o.param_groups[0]))
    h, f = flags(fusedoptim.Adam, lr=1e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True)
    assert h[:5] == [1e-3, 0.8, 0.95, 1e-6, 0.1] and f[:2] == [_cuda.WD_COUPLED, 1]
    assert flags(fusedoptim.AdamW, weight_decay=0.1)[1][0] == _cuda.WD_DECOUPLED
    assert flags(fusedoptim.Adam, weight_decay=0.1, decoupled_weight_decay=True)[1][0] == _cuda.WD_DECOUPLED
    assert flags(fusedoptim.AdamW, weight_decay=0.0)[1][0] == _cuda.WD_NONE
    h, f = flags(fusedoptim.RMSprop, lr=0.01, alpha=0.9, momentum=0.5, centered=True)
    assert h[5] == 0.5 and h[7] == 0.9 and f[5] == 1
    assert flags(fusedoptim.Adagrad, lr_decay=0.01)[0][8] == 0.01
    assert flags(fusedoptim.Adadelta, rho=0.8)[0][7] == 0.8


def test_cuda_kind_of_each_optimizer():
    p = [_p(2)]
    kinds = [
        (fusedoptim.SGD(p, lr=0.1), _C.KIND_SGD), (fusedoptim.Adam(p), _C.KIND_ADAM),
        (fusedoptim.AdamW(p), _C.KIND_ADAM), (fusedoptim.Adagrad(p), _C.KIND_ADAGRAD),
        (fusedoptim.RMSprop(p), _C.KIND_RMSPROP), (fusedoptim.Adamax(p), _C.KIND_ADAMAX),
        (fusedoptim.RAdam(p), _C.KIND_RADAM), (fusedoptim.Adadelta(p), _C.KIND_ADADELTA),
        (fusedoptim.Lion(p), _C.KIND_LION),
        (fusedoptim.NAdam(p), None), (fusedoptim.LAMB(p), None),  # torch's path on CUDA (for now)
        (torch.optim.Adam(p), None),
    ]
    for opt, kind in kinds:
        assert _cuda.cuda_kind(opt) == kind, type(opt).__name__


# ------------------------------------------------------------- state layout --

@pytest.mark.parametrize("given", [None, 3, torch.tensor(3.0, dtype=torch.float64), torch.tensor([3.0]),
                                   torch.tensor(3.0)])
def test_device_step_is_float32_scalar_on_the_params_device(given):
    p = _p(2)
    state = {} if given is None else {"step": given}
    s = _cuda.device_step(state, p)
    assert state["step"] is s and s.dtype == torch.float32 and s.dim() == 0 and s.device == p.device
    assert float(s) == (0.0 if given is None else 3.0)
    if torch.is_tensor(given) and given.dtype == torch.float32 and given.dim() == 0:
        assert s is given  # already right: no copy


def test_sgd_first_split():
    a, b, c = _p(2), _p(2), _p(2)
    opt = fusedoptim.SGD([a, b, c], lr=0.1, momentum=0.9)
    opt.state[b]["momentum_buffer"] = torch.zeros(2)
    assert _cuda.sgd_first_split(opt, [a, b, c]) == [[b], [a, c]]
    assert _cuda.sgd_first_split(opt, [b]) == [[b]]


@pytest.mark.parametrize("name,kw,keys,nlists", [
    ("AdamW", dict(amsgrad=True), ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"], 3),
    ("Adagrad", dict(initial_accumulator_value=0.5), ["step", "sum"], 1),
    ("RMSprop", dict(centered=True, momentum=0.9), ["step", "square_avg", "momentum_buffer", "grad_avg"], 3),
    ("Adadelta", dict(), ["step", "square_avg", "acc_delta"], 2),
    ("Lion", dict(), ["exp_avg"], 1),
    ("SGD", dict(lr=0.1, momentum=0.9), ["momentum_buffer"], 1),
])
def test_state_lists_create_torch_state(name, kw, keys, nlists):
    a, b = _p(3, dtype=torch.bfloat16), _p(2, 2, dtype=torch.bfloat16)
    opt = getattr(fusedoptim, name)([a, b], **kw)
    group = opt.param_groups[0]
    lists, steps = _cuda.state_lists(opt, group, [a, b])
    assert len(lists) == nlists and len(steps) == (2 if "step" in keys else 0)
    for p in (a, b):
        st = opt.state[p]
        assert list(st) == keys  # torch's key order (state_dict layout)
        for k, v in st.items():
            if k != "step":
                assert v.dtype == torch.bfloat16 and v.shape == p.shape
    slots = [k for k in opt._fo_slots(group) if k is not None]
    assert [lst[1] for lst in lists] == [opt.state[b][k] for k in slots]
    if name == "Adagrad":
        assert torch.equal(opt.state[a]["sum"], torch.full_like(a, 0.5))
    ref = getattr(torch.optim, name, None)
    if ref is not None:  # torch's own state for the same options has the same keys, same order
        r = torch.nn.Parameter(a.detach().clone())
        r.grad = torch.ones_like(r)
        ropt = ref([r], **kw)
        ropt.step()
        assert list(ropt.state[r]) == keys


# --------------------------------------------------------------- build lock --

def test_build_lock_is_released_when_its_holder_is_killed(tmp_path):
    lock = tmp_path / "k.lock"
    code = textwrap.dedent(f"""
        import time
        from fusedoptim import _cuda  # the fusedoptim under test (installed, or PYTHONPATH)
        from pathlib import Path
        with _cuda.build_lock(Path({str(lock)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        import fcntl
        with open(lock, "a+") as fh:  # held: a non-blocking attempt fails
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        t0 = time.monotonic()
        with _cuda.build_lock(lock):  # the kernel released it with the process
            pass
        assert time.monotonic() - t0 < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stale_torch_lock_is_cleared(tmp_path):
    (tmp_path / "lock").write_text("")
    assert _cuda.clear_stale_torch_lock(tmp_path) is True
    assert not (tmp_path / "lock").exists()
    assert _cuda.clear_stale_torch_lock(tmp_path) is False


def test_cache_key_follows_sources_and_flags(tmp_path):
    src = _cuda.sources_dir()
    assert src is not None, "the CUDA sources must ship with the package or the checkout"
    copy = tmp_path / "csrc"
    shutil.copytree(src, copy)
    k = _cuda.cache_key(copy)
    assert k == _cuda.cache_key(copy) and k != _cuda.cache_key(copy, "--other-flag")
    f = copy / "cuda" / "fused_kernels.cu"
    f.write_text(f.read_text() + "\n// changed\n")
    assert _cuda.cache_key(copy) != k


# ------------------------------------------------------ discovery / fallback --

@pytest.fixture
def fresh_state(monkeypatch):
    monkeypatch.setattr(_cuda, "_state", {"tried": False, "ok": False, "how": None, "why": None, "path": None,
                                          "warned": False})
    return _cuda._state


def test_status_and_load_without_cuda_torch(fresh_state, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "this torch build has no CUDA" in _cuda.status()
    assert _cuda.load() is False and fresh_state["why"] == "this torch build has no CUDA"
    assert "CUDA params use torch's fused kernels" in _cuda.status()


@pytest.mark.parametrize("why", ["jit_off", "no_nvcc"])
def test_status_names_why_unavailable(fresh_state, monkeypatch, why):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(_cuda, "_prebuilt_path", lambda: None)
    if why == "jit_off":
        monkeypatch.setenv("FUSEDOPTIM_CUDA_JIT", "0")
        want = "FUSEDOPTIM_CUDA_JIT=0"
    else:
        monkeypatch.delenv("FUSEDOPTIM_CUDA_JIT", raising=False)
        monkeypatch.setattr(_cuda, "find_nvcc", lambda: None)
        want = "nvcc"
    assert want in _cuda.status()
    assert _cuda.load() is False and want in fresh_state["why"]
    assert want in _cuda.status()


def test_status_reports_the_jit_cache(fresh_state, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(_cuda, "_prebuilt_path", lambda: None)
    monkeypatch.setattr(_cuda, "find_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    monkeypatch.setenv("FUSEDOPTIM_CUDA_CACHE", str(tmp_path))
    monkeypatch.delenv("FUSEDOPTIM_CUDA_JIT", raising=False)
    assert "JIT-cached in " + str(tmp_path) in _cuda.status() and "built on first CUDA step" in _cuda.status()


def test_show_config_has_the_cuda_line(capsys):
    fusedoptim.show_config()
    out = capsys.readouterr().out
    line = [ln for ln in out.splitlines() if ln.startswith("backend_cuda")]
    assert len(line) == 1 and _cuda.status().split(" (")[0] in line[0]


def test_unavailable_backend_returns_params_with_fused_and_one_warning(fresh_state, monkeypatch):
    """Host logic of the fallback, on CPU tensors standing in for CUDA ones:
    every param goes back to torch's path, with fused=True when the user chose
    neither foreach nor fused, and one warning per process."""
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(_cuda, "_DEVICE_TYPE", "cpu")
    ps = [_p(5, 3), _p(4)]
    opt = fusedoptim.AdamW(ps, lr=0.01)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(3):
            left, group = _cuda.step_cuda(opt, opt.param_groups[0], ps)
            assert left == ps and group["fused"] is True and group["foreach"] is False
            assert opt.param_groups[0]["fused"] is None  # the optimizer's own group is untouched
    msgs = [str(w.message) for w in rec if "CUDA kernels unavailable" in str(w.message)]
    assert len(msgs) == 1 and "this torch build has no CUDA" in msgs[0]
    assert all(len(s) == 0 for s in opt.state.values())  # nothing created


@pytest.mark.parametrize("name,kw", [("Adam", dict(foreach=True)), ("Adagrad", dict())])
def test_unavailable_backend_keeps_the_group_otherwise(fresh_state, monkeypatch, name, kw):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(_cuda, "_DEVICE_TYPE", "cpu")
    ps = [_p(3)]
    opt = getattr(fusedoptim, name)(ps, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        left, group = _cuda.step_cuda(opt, opt.param_groups[0], ps)
    assert left == ps and group is opt.param_groups[0]  # explicit foreach / no torch fused CUDA kernel


@pytest.mark.parametrize("extra", [dict(differentiable=True), dict(master_weights=True),
                                   dict(stochastic_rounding=True)])
def test_groups_with_cpu_only_options_are_left_to_torch(fresh_state, monkeypatch, extra):
    monkeypatch.setattr(_cuda, "_DEVICE_TYPE", "cpu")
    ps = [_p(3)]
    opt = fusedoptim.SGD(ps, lr=0.1)
    group = dict(opt.param_groups[0], **extra)
    assert _cuda.step_cuda(opt, group, ps) == (ps, group)
    assert fresh_state["tried"] is False


def test_cpu_params_never_reach_the_cuda_backend(fresh_state):
    ps = [_p(3), _p(2, dtype=torch.bfloat16)]
    opt = fusedoptim.Adam(ps)
    assert _cuda.step_cuda(opt, opt.param_groups[0], ps) == (ps, opt.param_groups[0])
    assert fresh_state["tried"] is False  # nothing loaded or built for CPU params


# ---------------------------------------------- the per-step plan, on a fake op --

_NLISTS = {(0, False): 2, (0, True): 3, (1, False): 4, (1, True): 5, (2, False): 3, (3, False): 3,
           (8, False): 3}


@pytest.fixture
def fake_op(fresh_state, monkeypatch):
    """The extension replaced by a recorder that applies SGD / Adam on CPU
    tensors standing in for CUDA ones, so the host path of step_cuda (plans,
    state creation, caching, invalidation) runs end to end without a GPU."""
    calls = []
    monkeypatch.setattr(_cuda, "_DEVICE_TYPE", "cpu")
    monkeypatch.setattr(_cuda, "load", lambda: True)
    monkeypatch.setattr(_cuda, "_INFO", {})

    def info(kind, h, f):
        extra = {0: h[5] != 0.0, 1: bool(f[1]), 3: bool(f[5]) + (h[5] > 0.0)}.get(kind, False)
        n = _NLISTS[(kind, False)] + int(extra) if kind in (0, 1, 3) else _NLISTS[(kind, False)]
        return (n, int(kind in (1, 2, 3)), 600, 65536)

    monkeypatch.setattr(_cuda, "table_info", info)

    def op(kind, nlists, flat, steps, h, f, lr, gs, fi):
        n = len(flat) // nlists
        calls.append(dict(kind=kind, nlists=nlists, n=n, flat=flat, steps=steps, h=list(h), f=list(f)))
        for s in steps:
            s += 1
        ps, gr = flat[:n], flat[n:2 * n]
        with torch.no_grad():
            _apply(kind, nlists, n, flat, ps, gr, h, f)

    def _apply(kind, nlists, n, flat, ps, gr, h, f):
        for i, (p, g) in enumerate(zip(ps, gr)):
            if kind == 0 and nlists == 3:  # SGD with momentum (no wd/dampening in these tests)
                b = flat[2 * n + i]
                if f[4] == _cuda.MOM_FIRST:
                    b.copy_(g)
                else:
                    b.mul_(h[5]).add_(g)
                p.add_(b, alpha=-h[0])
            else:
                p.add_(g, alpha=-h[0])
    monkeypatch.setattr(_cuda, "_op", lambda: op)
    return calls


def test_plan_is_built_once_and_reused(fake_op, monkeypatch):
    ps = [_p(4), _p(3, dtype=torch.float64), _p(5)]
    opt = fusedoptim.Adam(ps, lr=0.1)
    builds = []
    real = _cuda._build
    monkeypatch.setattr(_cuda, "_build", lambda *a: builds.append(1) or real(*a))
    g = opt.param_groups[0]
    for step in range(3):
        g["lr"] = 0.1 / (step + 1)  # a schedule changes hparams, not the plan
        for p in ps:
            p.grad = torch.randn_like(p)
        assert _cuda.step_cuda(opt, g, ps) == ([], g)
    assert len(builds) == 1
    assert [c["n"] for c in fake_op] == [2, 1] * 3  # one call per (device, dtype), group order kept
    assert fake_op[0]["flat"][:2] == [ps[0], ps[2]] and fake_op[1]["flat"][0] is ps[1]
    assert [c["h"][0] for c in fake_op[::2]] == [0.1, 0.05, 0.1 / 3]
    assert all(float(opt.state[p]["step"]) == 3 for p in ps)
    # the grads of each step (not stale ones) reach the op
    assert all(c["flat"][c["n"] + i] is c["flat"][i].grad for c in fake_op[-2:] for i in range(c["n"]))


@pytest.mark.parametrize("change", ["state_tensor", "load_state_dict", "grad_strides", "amsgrad", "params"])
def test_plan_is_rebuilt_when_it_no_longer_fits(fake_op, monkeypatch, change):
    ps = [_p(4, 3), _p(5)]
    opt = fusedoptim.Adam(ps, lr=0.1)
    g = opt.param_groups[0]
    for p in ps:
        p.grad = torch.randn_like(p)
    _cuda.step_cuda(opt, g, ps)
    plan = opt._fo_cuda_plans[id(g)]
    args = ps
    if change == "state_tensor":
        opt.state[ps[1]]["exp_avg"] = torch.zeros(5)
    elif change == "load_state_dict":
        opt.load_state_dict(opt.state_dict())
    elif change == "grad_strides":
        ps[0].grad = torch.randn(3, 4).t()
    elif change == "amsgrad":
        g["amsgrad"] = True
    elif change == "params":
        args = ps[:1]
    left, _ = _cuda.step_cuda(opt, g, args)
    assert opt._fo_cuda_plans[id(g)] is not plan
    last = fake_op[-1]
    if change == "state_tensor":
        assert last["flat"][last["n"] * 2 + 1] is opt.state[ps[1]]["exp_avg"]
    if change == "grad_strides":
        assert left == [ps[0]] and last["n"] == 1  # torch's path takes it now
    if change == "amsgrad":
        assert last["nlists"] == 5 and "max_exp_avg_sq" in opt.state[ps[0]]


def test_sgd_first_step_then_one_update_launch(fake_op):
    ps = [_p(3), _p(2)]
    opt = fusedoptim.SGD(ps, lr=0.1, momentum=0.9)
    g = opt.param_groups[0]
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn_like(p)
        _cuda.step_cuda(opt, g, ps)
    assert [c["f"][4] for c in fake_op] == [_cuda.MOM_FIRST, _cuda.MOM_UPDATE, _cuda.MOM_UPDATE]
    assert all(c["n"] == 2 for c in fake_op)  # one launch per step for the group
    assert all(opt.state[p]["momentum_buffer"].shape == p.shape for p in ps)


def test_sgd_mixed_first_and_update_params_split(fake_op):
    a, b = _p(3), _p(2)
    opt = fusedoptim.SGD([a, b], lr=0.1, momentum=0.9)
    opt.state[b]["momentum_buffer"] = torch.ones(2)
    g = opt.param_groups[0]
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    _cuda.step_cuda(opt, g, [a, b])
    assert [(c["n"], c["f"][4]) for c in fake_op] == [(1, _cuda.MOM_UPDATE), (1, _cuda.MOM_FIRST)]
    assert torch.equal(opt.state[a]["momentum_buffer"], torch.ones(3))            # := grad
    assert torch.equal(opt.state[b]["momentum_buffer"], torch.full((2,), 1.9))    # 0.9*1 + 1
    _cuda.step_cuda(opt, g, [a, b])
    assert (fake_op[-1]["n"], fake_op[-1]["f"][4]) == (2, _cuda.MOM_UPDATE)


def test_setup_py_does_not_import_torch_without_fusedoptim_cuda():
    code = ("import runpy, sys; sys.argv = ['setup.py', '--name']; "
            "runpy.run_path('setup.py', run_name='__main__'); print('TORCH', 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "FUSEDOPTIM_CUDA"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert "TORCH False" in out.stdout
