"""The CUDA backend: finding or building the extension, and one fused step per
parameter group for CUDA params.

Backends, tried once per process on the first CUDA step:
  prebuilt    `fusedoptim._cuda_ops`, built by `FUSEDOPTIM_CUDA=1 pip install
              --no-build-isolation .` against a CUDA build of torch
  JIT-cached  built on first use with torch.utils.cpp_extension.load into
              $FUSEDOPTIM_CUDA_CACHE (default ~/.cache/fusedoptim/cuda/<key>),
              from the sources shipped in the package; needs nvcc.
              FUSEDOPTIM_CUDA_JIT=0 disables it.
  unavailable CUDA params take torch's fused kernels (one warning per process).

The extension registers `torch.ops.fusedoptim.fused_step_` (csrc/cuda/binding.cpp):
one multi-tensor launch sequence per (group, dtype), with the step counters, a
tensor lr, grad_scale and found_inf read on the device, so a step never
synchronizes with the host and can be captured in a CUDA graph.

The host-side decisions (which params are served, how they are grouped, the
kind/hparams/flags packing) are plain functions tested on CPU
(tests/test_cuda_host.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import struct
import sys
import warnings
from pathlib import Path

import torch

from . import _C
from ._toolkit import cuda_home, find_nvcc  # noqa: F401  (fusedoptim._cuda.cuda_home: tests, show_config)
from ._validate import is_dense
from ._version import __version__

# Kinds: the optimizers' declarations (csrc/fusedoptim/declarations.h), read
# from the compiled module; the CUDA kernels use the same numbers.
KIND_SGD, KIND_ADAM = _C.KIND_SGD, _C.KIND_ADAM
# served by the CUDA functors (the declarations' `cuda` column; NAdam:
# per-param mu_product, LAMB: per-tensor norms between two passes, not yet)
SERVED_KINDS = frozenset(d["kind"] for d in _C.OPTIMIZERS.values() if d["cuda"])
# kinds whose torch class has fused=True on CUDA (the fallback when unavailable)
TORCH_FUSED_CUDA = frozenset({KIND_SGD, KIND_ADAM})
# Flags (declarations.h)
WD_NONE, WD_COUPLED, WD_DECOUPLED = _C.WD_NONE, _C.WD_COUPLED, _C.WD_DECOUPLED
MOM_NONE, MOM_FIRST, MOM_UPDATE = _C.MOM_NONE, _C.MOM_FIRST, _C.MOM_UPDATE

CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_OP_NAME = "fused_step_"
_DEVICE_TYPE = "cuda"  # the device the backend serves (tests point it at "cpu" to run the host logic)

_state: dict = {"tried": False, "ok": False, "how": None, "why": None, "path": None, "warned": False}


# ---------------------------------------------------------------- discovery --

def sources_dir() -> Path | None:
    """Directory holding cuda/ and fusedoptim/ sources: the installed package's
    _csrc (setup.py copies them there), else the source checkout's csrc/."""
    here = Path(__file__).resolve().parent
    for cand in (here / "_csrc", here.parent.parent / "csrc"):
        if (cand / "cuda" / "fused_kernels.cu").is_file() and (cand / "fusedoptim" / "optim_math_spec.h").is_file():
            return cand
    return None


def _source_files(src: Path) -> list[Path]:
    files = []
    for sub in ("cuda", "fusedoptim"):
        files += sorted(p for p in (src / sub).iterdir() if p.suffix in (".h", ".cuh", ".cu", ".cpp"))
    return files


def cache_key(src: Path, extra: str = "") -> str:
    """Hash of everything that makes a JIT build differ: sources, versions, flags."""
    h = hashlib.sha256()
    for f in _source_files(src):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(f"{__version__}|{torch.__version__}|{torch.version.cuda}|{sys.version_info[:2]}|{extra}".encode())
    return h.hexdigest()[:16]


def cache_dir(key: str) -> Path:
    root = os.environ.get("FUSEDOPTIM_CUDA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fusedoptim", "cuda"
    )
    return Path(root) / key


def _prebuilt_path() -> str | None:
    try:
        spec = importlib.util.find_spec("fusedoptim._cuda_ops")
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin else None


def _registered() -> bool:
    try:
        return hasattr(torch.ops.fusedoptim, _OP_NAME)
    except (AttributeError, RuntimeError):
        return False


@contextlib.contextmanager
def build_lock(path: Path):
    """An exclusive lock a killed holder cannot leave stuck: fcntl.flock is
    released by the kernel when its process dies. (Where fcntl is missing the
    build runs unlocked.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def clear_stale_torch_lock(build_dir: Path) -> bool:
    """torch's cpp_extension.load guards a build with a `lock` file in the build
    directory; a build killed midway leaves it and every later load waits on it
    forever (pytorch/pytorch#189245). Every fusedoptim build into `build_dir`
    holds build_lock first, so while we hold it a `lock` file there has no live
    owner: remove it. Returns True if one was removed."""
    stale = build_dir / "lock"
    if stale.exists():
        stale.unlink()
        return True
    return False


def jit_flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3"]  # the C++ standard is torch's choice (C++20 for torch >= 2.14)
    cuda = ["-O3", "--fmad=false"]
    return cflags, cuda


def _jit_build(src: Path) -> str:
    home = cuda_home()
    os.environ["CUDA_HOME"] = home
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = home  # computed at its import, possibly from a wrapper's location
    cflags, cuda_flags = jit_flags()
    key = cache_key(src, " ".join(cuda_flags) + "|" + os.environ.get("TORCH_CUDA_ARCH_LIST", ""))
    build_dir = cache_dir(key)
    build_dir.mkdir(parents=True, exist_ok=True)
    with build_lock(build_dir.parent / f"{key}.lock"):
        clear_stale_torch_lock(build_dir)
        cpp_extension.load(
            name=f"fusedoptim_cuda_{key}",
            sources=[str(src / "cuda" / "binding.cpp"), str(src / "cuda" / "fused_kernels.cu")],
            extra_include_paths=[str(src), str(src / "cuda")],
            extra_cflags=cflags,
            extra_cuda_cflags=cuda_flags,
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=os.environ.get("FUSEDOPTIM_CUDA_VERBOSE") == "1",
        )
    return str(build_dir)


def load() -> bool:
    """Make `torch.ops.fusedoptim.fused_step_` available (once per process).
    Never raises: on failure `status()` says why."""
    if _state["tried"]:
        return _state["ok"]
    _state["tried"] = True
    if torch.version.cuda is None:
        _state["why"] = "this torch build has no CUDA"
        return False
    path = _prebuilt_path()
    if path is not None:
        try:
            torch.ops.load_library(path)
            if _registered():
                _state.update(ok=True, how="prebuilt", path=path)
                return True
            _state["why"] = f"prebuilt {path} registered no fusedoptim::{_OP_NAME}"
        except Exception as e:  # noqa: BLE001 - report, then try the JIT build
            _state["why"] = f"prebuilt {path} failed to load: {e}"
    if os.environ.get("FUSEDOPTIM_CUDA_JIT", "1") == "0":
        _state["why"] = (_state["why"] + "; " if _state["why"] else "") + "JIT build disabled (FUSEDOPTIM_CUDA_JIT=0)"
        return False
    src = sources_dir()
    if src is None:
        _state["why"] = "no prebuilt extension and no CUDA sources in the package to build one"
        return False
    if find_nvcc() is None:
        _state["why"] = "no prebuilt extension, and no CUDA toolkit (CUDA_HOME, nvcc on PATH, /usr/local/cuda) to build one"
        return False
    try:
        d = _jit_build(src)
    except Exception as e:  # noqa: BLE001
        _state["why"] = f"JIT build failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
        return False
    if not _registered():
        _state["why"] = f"JIT build in {d} registered no fusedoptim::{_OP_NAME}"
        return False
    _state.update(ok=True, how="JIT-cached", path=d, why=None)
    return True


def status() -> str:
    """One line for show_config; does not build anything."""
    if _state["tried"]:
        if _state["ok"]:
            return f"fusedoptim fused CUDA kernels ({_state['how']}: {_state['path']})"
        return f"unavailable ({_state['why']}); CUDA params use torch's fused kernels"
    if torch.version.cuda is None:
        return "unavailable (this torch build has no CUDA)"
    path = _prebuilt_path()
    if path is not None:
        return f"fusedoptim fused CUDA kernels (prebuilt: {path}; loaded on first CUDA step)"
    if os.environ.get("FUSEDOPTIM_CUDA_JIT", "1") == "0":
        return "unavailable (no prebuilt extension; FUSEDOPTIM_CUDA_JIT=0); CUDA params use torch's fused kernels"
    src = sources_dir()
    if src is None:
        return "unavailable (no prebuilt extension, no sources to build one); CUDA params use torch's fused kernels"
    if find_nvcc() is None:
        return "unavailable (no prebuilt extension, no nvcc to build one); CUDA params use torch's fused kernels"
    d = cache_dir(cache_key(src, " ".join(jit_flags()[1]) + "|" + os.environ.get("TORCH_CUDA_ARCH_LIST", "")))
    built = d.is_dir() and any(d.glob("*.so"))
    return f"fusedoptim fused CUDA kernels (JIT-cached in {d}: {'built' if built else 'built on first CUDA step'})"


# ---------------------------------------------------------- host-side logic --

def cuda_kind(opt) -> int | None:
    """The CUDA kind serving this optimizer (its CPU kind), or None."""
    kind = getattr(opt, "_fo_kind", None)
    return kind if kind in SERVED_KINDS else None


def why_not_served(p: torch.Tensor, device_type: str = "cuda") -> str | None:
    """None if the CUDA kernels update p (with its grad) in place, else the reason."""
    g = p.grad
    if type(p) not in _TENSOR_TYPES:
        return f"tensor subclass {type(p).__name__}"
    if p.device.type != device_type:
        return f"device {p.device.type}"
    if p.dtype not in CUDA_DTYPES:
        return f"dtype {p.dtype}"
    if p.layout != torch.strided or not is_dense(p):
        return "param not dense"
    if g is None:
        return "no grad"
    if g.is_sparse or g.layout != torch.strided:
        return "sparse grad"
    if g.dtype != p.dtype or g.device != p.device or g.shape != p.shape:
        return "grad does not match its param"
    if p.numel() > 1 and g.stride() != p.stride():
        return "grad strides differ from the param's"
    return None


def split_params(params, device_type: str = "cuda"):
    """-> (buckets, rest): buckets maps (device, dtype) to the served params in
    their group order; rest are the params torch must update."""
    buckets: dict = {}
    rest = []
    for p in params:
        if why_not_served(p, device_type) is None:
            buckets.setdefault((p.device, p.dtype), []).append(p)
        else:
            rest.append(p)
    return buckets, rest


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def pack_hparams(hp: dict, *, l1: float = 0.0, grad_mul: float = 1.0, first: bool = False):
    """The optimizer's hyper-parameters (its `_fo_hparams(group)` dict, as the
    CPU plan gets them) -> (hparams, flags) for fusedoptim::fused_step_, in the
    order of csrc/cuda/binding.cpp. grad_mul: the clip coefficient of
    max_grad_norm, rounded to float as the CPU kernels do."""
    g = lambda k: float(hp.get(k, 0.0) or 0.0)  # noqa: E731
    i = lambda k: int(hp.get(k, 0) or 0)  # noqa: E731
    mom = g("momentum")
    mode = MOM_NONE if mom == 0.0 else (MOM_FIRST if first else MOM_UPDATE)
    h = [g("lr"), g("beta1"), g("beta2"), g("eps"), g("weight_decay"), mom, g("dampening"), g("alpha"),
         g("lr_decay"), g("momentum_decay"), float(l1 or 0.0), _f32(float(grad_mul))]
    f = [i("wd_mode"), int(bool(hp.get("amsgrad"))), int(bool(hp.get("nesterov")) and mom != 0.0),
         int(bool(hp.get("maximize"))), mode, int(bool(hp.get("centered"))), int(bool(hp.get("bias_correction")))]
    return h, f


def device_step(state: dict, p: torch.Tensor) -> torch.Tensor:
    """state['step'] as a 0-dim float32 tensor on p's device (torch's fused
    CUDA layout); created at 0, converted (without a host sync for a CPU or
    on-device value) otherwise."""
    s = state.get("step")
    if s is None:
        s = torch.zeros((), dtype=torch.float32, device=p.device)
    elif not torch.is_tensor(s):
        s = torch.tensor(float(s), dtype=torch.float32, device=p.device)
    elif s.device != p.device or s.dtype != torch.float32 or s.dim() != 0:
        s = s.detach().reshape(()).to(device=p.device, dtype=torch.float32, copy=True)
    state["step"] = s
    return s


def _never_stepped(s: dict) -> bool:
    """state['step'] is 0 (read only where a state tensor's dtype differs from
    its param's: reading a device step synchronizes)."""
    step = s.get("step")
    return torch.is_tensor(step) and float(step) == 0


def state_lists(opt, group: dict, params):
    """Per-param state, created lazily as the optimizer's torch class does (its
    keys in `_fo_order(group)` order, fill `_fo_fill`; SGD's momentum buffer
    is written by the kernel's first step), in the param's dtype and strides.
    -> (state lists in `_fo_slots(group)` order, step counters or [])."""
    from ._base import match_layout  # (the CPU plan's: one lazy-state builder)

    st = opt.state
    order = opt._fo_order(group)
    slots = [k for k in opt._fo_slots(group) if k is not None]
    lists = [[] for _ in slots]
    steps = []
    for p in params:
        s = st[p]
        for key in order:
            if key == "step":
                steps.append(device_step(s, p))
            elif key not in s or (s[key].dtype != p.dtype and not opt._fo_lazy(key) and _never_stepped(s)):
                # (never stepped, in another dtype: filled anew, as on the CPU)
                s[key] = opt._fo_new_state(group, p, key, p.dtype)
            else:
                s[key] = match_layout(p, s[key])
        for j, key in enumerate(slots):
            lists[j].append(s[key])
    return lists, steps


def sgd_first_split(opt, params):
    """SGD's first step writes buffer := grad (momentum_mode FIRST): params
    whose buffer exists and those whose buffer is created now go separately."""
    new = [p for p in params if opt.state[p].get("momentum_buffer") is None]
    old = [p for p in params if opt.state[p].get("momentum_buffer") is not None]
    return [x for x in (old, new) if x]


def _amp_tensor(opt, name: str, device):
    t = getattr(opt, name, None)
    if t is None:
        return None
    if t.device != device:
        t = t.to(device, non_blocking=True)
    return t


def _warn_unavailable() -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"fusedoptim: CUDA kernels unavailable ({_state['why']}); CUDA params use torch's fused kernels. "
            "fusedoptim.show_config() shows the CUDA backend.",
            RuntimeWarning,
            stacklevel=4,
        )


_INFO: dict = {}


def _op():
    return getattr(torch.ops.fusedoptim, _OP_NAME)


def table_info(kind: int, h, f) -> tuple:
    """(nlists, uses_step, max tensors per launch, chunk) of the extension for
    this kind and options (cached)."""
    key = (kind, tuple(f), h[5] != 0.0, h[5] > 0.0)
    info = _INFO.get(key)
    if info is None:
        info = _INFO[key] = tuple(torch.ops.fusedoptim.cuda_table_info(kind, h, f))
    return info


class _Part:
    """One launch sequence: params of one (device, dtype) (and, for SGD, one
    momentum mode) with their state, cached between steps."""
    __slots__ = ("params", "contig", "state", "steps", "first", "nlists", "device", "refs")

    def __init__(self, params, state, steps, first, nlists, device, refs):
        self.params = params
        self.contig = [p.is_contiguous() for p in params]
        self.state = state          # flat list: state list 0, then 1, ...
        self.steps = steps
        self.first = first
        self.nlists = nlists
        self.device = device
        self.refs = refs            # (param, state dict, key, tensor): still the optimizer's state?


class _Plan:
    """What step_cuda decided for a group, reused while the group's params
    (with grads), the optimizer's state object and the options that shape the
    state stay the same: a W3-sized group then costs a list of grads and one
    op call per (device, dtype) instead of per-param Python checks."""
    __slots__ = ("key", "parts", "rest", "group")

    def __init__(self, key, parts, rest, group):
        self.key, self.parts, self.rest, self.group = key, parts, rest, group


def _part_valid(part: _Part, state) -> bool:
    """The cached part still describes the optimizer: every param's state dict
    is still the one in opt.state (identity: `opt.state[p] = {}` or `del
    opt.state[p]` is seen even while someone holds the old dict), every state
    tensor is still the one in it, and every grad is dense with its param's
    layout (shape, dtype and device were checked by the optimizer's phase 1)."""
    last = None
    for p, st, k, t in part.refs:
        if st is not last:
            if state.get(p) is not st:
                return False
            last = st
        if st.get(k) is not t:
            return False
    for p, c in zip(part.params, part.contig):
        g = p.grad
        if g is None or g.layout != torch.strided:
            return False
        if c:
            if not g.is_contiguous():
                return False
        elif p.numel() > 1 and g.stride() != p.stride():
            return False
    return True


def _build(opt, group, kind, params, hp, l1):
    buckets, rest = split_params(params, _DEVICE_TYPE)
    sd = group.get("state_dtype")
    if sd is not None:
        for key in [k for k in buckets if k[1] != sd]:
            rest += buckets.pop(key)
    parts = []
    if not buckets or not load():
        return parts, params  # nothing served (the caller warns if the backend is missing)
    served_first = kind == KIND_SGD and float(group.get("momentum", 0.0)) != 0.0
    n_slots = len([k for k in opt._fo_slots(group) if k is not None])
    has_step = "step" in opt._fo_order(group)
    for (device, _dtype), ps in buckets.items():
        for part in (sgd_first_split(opt, ps) if served_first else [ps]):
            first = served_first and opt.state[part[0]].get("momentum_buffer") is None
            h, f = pack_hparams(hp, l1=l1, first=first)
            nlists, uses_step = table_info(kind, h, f)[:2]
            if nlists != 2 + n_slots or bool(uses_step) != has_step:
                raise RuntimeError(  # a kernel/optimizer mismatch is a bug, not a user error
                    f"fusedoptim: CUDA kernel for {type(opt).__name__} takes {nlists} lists "
                    f"(step counters: {bool(uses_step)}), the optimizer keeps {opt._fo_order(group)}")
            lists, steps = state_lists(opt, group, part)
            flat = []
            for lst in lists:
                flat += lst
            keys = [k for k in opt._fo_order(group)]
            refs = [(p, opt.state[p], k, opt.state[p][k]) for p in part for k in keys]
            parts.append(_Part(part, flat, steps, first, nlists, device, refs))
    return parts, rest


def step_cuda(opt, group: dict, params: list, coef=None):
    """Update the CUDA params of `group` (all with grads) in place with the
    fused kernels. Returns (params left for torch's implementation, the group
    to run them with): when the extension cannot be had, CUDA params go back
    with fused=True where torch has a fused CUDA kernel and the user set
    neither foreach nor fused (one warning per process)."""
    kind = cuda_kind(opt)
    if (kind is None or group.get("differentiable", False)
            or not any(p.device.type == _DEVICE_TYPE for p in params)):
        return params, group
    if group.get("master_weights") or group.get("stochastic_rounding"):
        return params, group  # CPU-kernel options: torch's path says so
    lr = group["lr"]
    lr_t = lr if torch.is_tensor(lr) and lr.device.type != "cpu" else None
    hp = opt._fo_hparams(dict(group, lr=0.0) if lr_t is not None else group)
    l1 = group.get("l1_weight_decay") or 0.0
    h, f = pack_hparams(hp, l1=l1, grad_mul=1.0 if coef is None else coef)
    # what shapes the state and the launches; lr, betas, eps... may change freely
    key = (tuple(map(id, params)), id(opt.state), kind, tuple(f), h[5] != 0.0, h[5] > 0.0,
           group.get("state_dtype"))
    plans = opt.__dict__.setdefault("_fo_cuda_plans", {})
    plan = plans.get(id(group))
    if plan is None or plan.group is not group or plan.key != key or not all(_part_valid(x, opt.state) for x in plan.parts):
        parts, rest = _build(opt, group, kind, params, hp, l1)
        plan = plans[id(group)] = _Plan(key, parts, rest, group)
        if not parts:
            del plans[id(group)]
            if any(why_not_served(p, _DEVICE_TYPE) is None for p in params) and not load():
                _warn_unavailable()
                if kind in TORCH_FUSED_CUDA and group.get("fused") is None and group.get("foreach") is None:
                    return params, dict(group, fused=True, foreach=False)
            return params, group
    op = _op()
    for part in plan.parts:
        device = part.device
        grad_scale = _amp_tensor(opt, "grad_scale", device)
        found_inf = _amp_tensor(opt, "found_inf", device)
        lr_d = lr_t.to(device, non_blocking=True) if lr_t is not None and lr_t.device != device else lr_t
        if part.first:
            f[4] = MOM_FIRST
        elif f[4] == MOM_FIRST:
            f[4] = MOM_UPDATE
        grads = [p.grad for p in part.params]
        op(kind, part.nlists, [*part.params, *grads, *part.state], part.steps, h, f, lr_d, grad_scale, found_inf)
        torch._C._increment_version(part.params)
        if grad_scale is not None:
            torch._C._increment_version(grads)
    if any(x.first for x in plan.parts):
        del plans[id(group)]  # SGD buffers exist now: rebuilt as one UPDATE launch next step
    return plan.rest, group
