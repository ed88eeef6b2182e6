"""The machinery shared by every fused optimizer: per-group native plans,
validation before any change, torch's own path for what the kernels do not
serve, version-counter bumps, and the options fusedoptim adds to every
optimizer (L1 decay, state dtype, master weights, stochastic rounding,
in-step clipping, AMP). The optimizer classes only declare their state and
how their hyper-parameters reach the kernel."""
from __future__ import annotations

import inspect
import math
import re
from typing import NamedTuple

import torch
from torch.optim.optimizer import _use_grad_for_differentiable

from . import _C, _cuda
from ._validate import check_grad, check_param_dtype, check_state_dict, is_dense

_NATIVE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOW = (torch.bfloat16, torch.float16)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_WD_NONE, _WD_COUPLED, _WD_DECOUPLED = _C.WD_NONE, _C.WD_COUPLED, _C.WD_DECOUPLED


class StateKey(NamedTuple):
    """One per-param state entry of an optimizer's declaration."""
    name: str
    slot: int | None   # the kernel's state slot (0..2), None for a scalar
    cond: str | None   # present only while the group's option `cond` is true
    fill: str | None   # initial value: a group option's name or a number
    lazy: bool         # written from the grad by the first step (not filled)


class Declaration(NamedTuple):
    """An optimizer's declaration as the compiled module holds it
    (csrc/fusedoptim/declarations.h), parsed."""
    kind: int
    name: str
    keys: tuple
    hparams: tuple      # (kernel field, group option) pairs; "betas" -> beta1, beta2
    cuda: bool


_KEY = re.compile(r"^(\w+)(?:@(\d))?(?:\?(\w+))?(?:=([\w.]+))?(~)?$")


def declaration(name: str) -> Declaration:
    """The parsed declaration of the optimizer `name` (its C name: "adam")."""
    d = _C.OPTIMIZERS[name]
    keys = []
    for tok in d["keys"].split():
        m = _KEY.match(tok)
        if m is None:  # pragma: no cover - a malformed declaration is a build bug
            raise RuntimeError(f"fusedoptim: bad state key {tok!r} in the declaration of {name}")
        k, slot, cond, fill, lazy = m.groups()
        keys.append(StateKey(k, None if slot is None else int(slot), cond, fill, bool(lazy)))
    hps = tuple(tuple(t.split("=", 1)) if "=" in t else (t, t) for t in d["hparams"].split())
    return Declaration(d["kind"], name, tuple(keys), hps, d["cuda"])


def _on(group, key: StateKey) -> bool:
    return key.cond is None or bool(group.get(key.cond))

#: Options fusedoptim adds to every optimizer (keyword-only; stored in each
#: param group like torch's own options, so they can differ per group).
EXTRA_DEFAULTS = dict(
    l1_weight_decay=0.0,
    state_dtype=None,
    master_weights=False,
    stochastic_rounding=False,
    max_grad_norm=None,
)
_STATE_DTYPES = (None, torch.float32, torch.bfloat16, torch.float16, torch.float64)
#: State that accumulates squared grads (or squared updates): in float16 it
#: underflows to 0 below |g| ~ 2.4e-4 and overflows to inf above |g| = 256, so
#: state_dtype=torch.float16 is rejected for optimizers that keep one.
_SQUARED_STATE = frozenset({"exp_avg_sq", "max_exp_avg_sq", "sum", "square_avg", "acc_delta"})


def native_param(p: torch.Tensor) -> bool:
    """Params the CPU kernels update in place; everything else takes torch's path."""
    return (
        type(p) in _TENSOR_TYPES
        and p.device.type == "cpu"
        and p.dtype in _NATIVE_DTYPES
        and p.layout == torch.strided
        and is_dense(p)
    )


def match_layout(p: torch.Tensor, t: torch.Tensor, dtype=None) -> torch.Tensor:
    """State tensor with exactly p's device and strides and the given dtype
    (default p's): a copy only if it differs, e.g. a contiguous checkpoint
    tensor for a transposed param."""
    dtype = p.dtype if dtype is None else dtype
    if t.dtype == dtype and t.device == p.device and (p.numel() <= 1 or t.stride() == p.stride()):
        return t
    return torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format).copy_(t)


def check_extras(name: str, group) -> None:
    """Validate fusedoptim's own options of one group (torch's own were
    validated by torch's constructor)."""
    l1 = group.get("l1_weight_decay", 0.0)
    if not isinstance(l1, (int, float)) or not 0.0 <= l1 < math.inf:
        raise ValueError(f"Invalid l1_weight_decay value: {l1}")
    sd = group.get("state_dtype")
    if sd not in _STATE_DTYPES:
        raise ValueError(
            f"Invalid state_dtype value: {sd!r}; expected None, torch.float32, torch.bfloat16, "
            f"torch.float16 or torch.float64"
        )
    mgn = group.get("max_grad_norm")
    if mgn is not None and (not isinstance(mgn, (int, float)) or not 0.0 < mgn < math.inf):
        raise ValueError(f"Invalid max_grad_norm value: {mgn} (expected None or a positive number)")
    for opt in ("master_weights", "stochastic_rounding"):
        if not isinstance(group.get(opt, False), bool):
            raise ValueError(f"Invalid {opt} value: {group.get(opt)!r} (expected True or False)")
    if group.get("master_weights") and group.get("stochastic_rounding"):
        raise ValueError(
            f"{name}: master_weights=True and stochastic_rounding=True cannot be combined: with "
            f"fp32 master weights the param is their round-to-nearest image"
        )
    for p in group["params"]:
        dt = p.dtype
        if group.get("stochastic_rounding") and dt != torch.bfloat16:
            raise ValueError(
                f"{name}: stochastic_rounding=True needs bfloat16 params, got a param of dtype {dt} "
                f"(shape {tuple(p.shape)})"
            )
        if group.get("master_weights") and dt not in _LOW:
            raise ValueError(
                f"{name}: master_weights=True needs bfloat16 or float16 params, got a param of dtype "
                f"{dt} (shape {tuple(p.shape)}); float32/float64 params are their own master copy"
            )
        if sd is not None and p.is_floating_point():
            if (dt == torch.float64) != (sd == torch.float64):
                raise ValueError(
                    f"{name}: state_dtype={sd} cannot be used with a param of dtype {dt} "
                    f"(float64 params keep float64 state; others keep float32, bfloat16 or float16 state)"
                )


class FusedOptimizerMixin:
    """Mixed in before a torch.optim class: keeps its constructor, validation,
    defaults, state_dict and hooks; replaces `step` with the fused kernels.

    Each optimizer names its declaration (`_fo_decl = declaration("adam")`,
    csrc/fusedoptim/declarations.h), from which everything below is read:
      _fo_kind                  its kernel (_C.KIND_*)
      _fo_slots(group)          the state arrays the kernel reads, (s0, s1, s2)
                                state keys or None
      _fo_order(group)          every state key in torch's creation order
      _fo_fill(group, key)      initial value of a state entry (default 0)
      _fo_hparams(group)        keyword arguments of Plan.set_hparams
    """

    _fo_decl: Declaration = None
    _fo_kind: int = -1
    _fo_sparse_ok = False  # SGD, Adagrad serve sparse grads through torch's path
    _fo_torch_decoupled = True  # torch's class has decoupled_weight_decay itself
    _step_supports_amp_scaling = True  # GradScaler hands grad_scale/found_inf to step

    def __init__(self, params, *args, **kwargs):
        extras = {k: kwargs.pop(k) for k in list(kwargs) if k in self._fo_extra_defaults()}
        super().__init__(params, *args, **kwargs)
        defaults = dict(self._fo_extra_defaults())
        defaults.update(extras)
        name = type(self).__name__
        check_extras(name, dict(defaults, params=[]))
        self.defaults.update(defaults)
        for group in self.param_groups:
            for k, v in defaults.items():
                group.setdefault(k, v)
            check_extras(name, group)
            self._fo_check_state_dtype(group)
        self._step_supports_amp_scaling = True

    @classmethod
    def _fo_extra_defaults(cls):
        d = dict(EXTRA_DEFAULTS)
        if not cls._fo_torch_decoupled:
            d["decoupled_weight_decay"] = False
        return d

    def add_param_group(self, param_group) -> None:
        super().add_param_group(param_group)
        if "l1_weight_decay" in self.defaults:  # after __init__ (which checks its groups itself)
            try:
                check_extras(type(self).__name__, self.param_groups[-1])
                self._fo_check_state_dtype(self.param_groups[-1])
            except ValueError:
                self.param_groups.pop()  # as if never added
                raise

    def __setstate__(self, state) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for k, v in self._fo_extra_defaults().items():
                group.setdefault(k, v)
        self.__dict__.pop("_fo_plans", None)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("_fo_decl") is not None:
            cls._fo_kind = cls._fo_decl.kind

    # -- read from the declaration ---------------------------------------------------
    def _fo_slots(self, group):
        out = [None, None, None]
        for k in self._fo_decl.keys:
            if k.slot is not None and _on(group, k):
                out[k.slot] = k.name
        return tuple(out)

    def _fo_order(self, group):
        return tuple(k.name for k in self._fo_decl.keys if _on(group, k))

    def _fo_fill(self, group, key) -> float:
        for k in self._fo_decl.keys:
            if k.name == key and k.fill is not None:
                return float(group[k.fill]) if k.fill in group else float(k.fill)
        return 0.0

    def _fo_new_state(self, group, p, key, dtype):
        """A new state entry `key` (not the step) for p, as torch creates it:
        a float32 scalar, an array filled with its declared value in p's
        layout, or (written by the first step from the grad) left empty."""
        if all(k.name != key or k.slot is None for k in self._fo_decl.keys):
            return torch.tensor(self._fo_fill(group, key), dtype=torch.float32)  # NAdam's mu_product
        if self._fo_lazy(key):
            return torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format)
        return torch.full_like(p, self._fo_fill(group, key), dtype=dtype, memory_format=torch.preserve_format)

    def _fo_lazy(self, key) -> bool:
        return any(k.name == key and k.lazy for k in self._fo_decl.keys)

    def _fo_hparams(self, group) -> dict:
        d = dict(
            wd_mode=self._fo_wd_mode(group), amsgrad=False, nesterov=False,
            maximize=bool(group.get("maximize", False)), lr=float(group["lr"]), beta1=0.0, beta2=0.0,
            eps=0.0, weight_decay=group["weight_decay"], momentum=0.0, dampening=0.0,
        )
        for field, opt in self._fo_decl.hparams:
            if field == "betas":
                b1, b2 = group["betas"]
                d.update(beta1=float(b1), beta2=float(b2))  # (tensor betas: their value)
            else:
                d[field] = group[opt]
        return d

    # -- shared ----------------------------------------------------------------------
    def _fo_check_state_dtype(self, group) -> None:
        """state_dtype=torch.float16 is refused for state that holds squared
        grads (Adam's exp_avg_sq, Adagrad's sum, ...): float16's range
        (6e-8 .. 65504) cannot hold g*g for |g| < 2.4e-4 or > 256."""
        if group.get("state_dtype") != torch.float16:
            return
        sq = sorted(k for k in self._fo_order(group) if k in _SQUARED_STATE)
        if sq:
            raise ValueError(
                f"{type(self).__name__}: state_dtype=torch.float16 cannot hold {', '.join(sq)} (squared "
                f"grads underflow to 0 below |g| ~ 2.4e-4 and overflow above 256); use torch.bfloat16 "
                f"or torch.float32"
            )

    @staticmethod
    def _fo_wd_mode(group) -> int:
        if group["weight_decay"] == 0:
            return _WD_NONE
        return _WD_DECOUPLED if group.get("decoupled_weight_decay") else _WD_COUPLED

    def _fo_key(self, group):
        """Options that change the shape of the plan (the state it points at)."""
        return (
            self._fo_slots(group),
            group.get("state_dtype"),
            bool(group.get("master_weights")),
            bool(group.get("stochastic_rounding")),
        )

    def _fo_state_keys(self, group):
        """(required, optional) per-param state keys, for load_state_dict checks:
        a key written by the first step, or whose option is off, is optional."""
        keys = self._fo_decl.keys
        req = tuple(k.name for k in keys if _on(group, k) and not k.lazy)
        opt = tuple(k.name for k in keys if k.lazy or not _on(group, k))
        return req, opt + ("master_param",)

    def _fo_native_group(self, group) -> bool:
        return not group.get("differentiable", False) and not group.get("capturable", False)

    def _fo_check_group(self, group) -> None:
        """Every check a group's grads must pass, changing nothing (phase 1)."""
        check_extras(type(self).__name__, group)
        self._fo_check_state_dtype(group)
        self._fo_check_params([p for p in group["params"] if p.grad is not None])

    def _fo_check_params(self, with_grad) -> None:
        name = type(self).__name__
        for p in with_grad:  # (one group may mix devices: each device's params take their own path)
            check_param_dtype(name, p)
            if not (self._fo_sparse_ok and p.grad.is_sparse):
                check_grad(name, p, p.grad)

    def _fo_state_dtype(self, group, p, state, slots):
        """The dtype of p's state arrays: the group's state_dtype if set, else
        what the state already has (a checkpoint's fp32 state stays fp32),
        else float32 under master_weights (fp32 moments with fp32 masters,
        as apex, DeepSpeed and Megatron keep them), else p's dtype."""
        sd = group.get("state_dtype")
        if sd is not None:
            return sd
        master = group.get("master_weights") and p.dtype in _LOW
        if master:
            st = state.get("step")
            if st is None or (torch.is_tensor(st) and float(st) == 0):
                return torch.float32  # never stepped (torch's Adagrad fills `sum` in __init__)
        for k in slots:
            t = state.get(k) if k else None
            if torch.is_tensor(t) and t.is_floating_point():
                if (t.dtype == torch.float64) == (p.dtype == torch.float64):
                    return t.dtype
                break
        return torch.float32 if master else p.dtype

    def _fo_init_state(self, group, p):
        """Create p's state lazily (in torch's key order) and bring it to the
        kernel's layout. -> (s0, s1, s2, step, first, ref, master, aux)."""
        order = self._fo_order(group)
        if not order and not group.get("master_weights"):
            return None, None, None, None, False, (), None, None  # torch keeps no state here
        state = self.state[p]
        slots = self._fo_slots(group)
        scalars = [k.name for k in self._fo_decl.keys if k.slot is None and k.name != "step"]
        sdt = self._fo_state_dtype(group, p, state, slots)
        first = False
        if len(state) == 0 and group.get("fused") and p.dtype != torch.float64:
            from torch.optim.optimizer import _device_dtype_check_for_fused
            _device_dtype_check_for_fused(p)
        for key in order:
            if key in state:
                continue
            if key == "step":
                state["step"] = init_step(group, p)
            else:
                first = first or self._fo_lazy(key)  # torch: the first buffer is the grad itself
                state[key] = self._fo_new_state(group, p, key, sdt)
        refs = []
        arrays = []
        fresh = "step" in state and torch.is_tensor(state["step"]) and float(state["step"]) == 0
        for key in slots:
            if key is None:
                arrays.append(None)
                continue
            t = state[key]
            if not torch.is_tensor(t) or t.shape != p.shape:
                raise ValueError(
                    f"{type(self).__name__}: state[{key!r}] of a param of shape {tuple(p.shape)} is "
                    f"{'a tensor of shape ' + str(tuple(t.shape)) if torch.is_tensor(t) else type(t).__name__}; "
                    f"expected a tensor of the param's shape"
                )
            if fresh and t.dtype != sdt and not self._fo_lazy(key):
                # never stepped (torch's Adagrad fills its state in __init__, in
                # the param's dtype): fill anew in the state dtype, not a cast
                t = self._fo_new_state(group, p, key, sdt)
            t = state[key] = match_layout(p, t, sdt)
            arrays.append(t)
            refs.append((key, t))
        step = aux = master = None
        if "step" in state:
            step = native_step(state, "step")
            refs.append(("step", step))
        for key in scalars:  # the kernel's per-param scalar (at most one)
            if key in state:
                aux = native_step(state, key)
                refs.append((key, aux))
        if group.get("master_weights"):
            master = state.get("master_param")
            if master is None:
                master = p.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)
            elif not torch.is_tensor(master) or master.shape != p.shape:
                raise ValueError(
                    f"{type(self).__name__}: state['master_param'] of a param of shape {tuple(p.shape)} "
                    f"does not have the param's shape"
                )
            state["master_param"] = master = match_layout(p, master, torch.float32)
            seen = self.__dict__.get("_fo_pver", {}).get(id(p))
            if seen is None or seen[0] is not p or seen[1] != p._version or seen[2] != p.data_ptr():
                # the param changed since our last step (or we never stepped
                # it: a loaded checkpoint): the master follows it
                reseed_master(p, master)
            refs.append(("master_param", master))
        return arrays[0], arrays[1], arrays[2], step, first, (state, *refs), master, aux

    def _fo_build(self, group, key):
        """A new plan for `group`, creating lazy state (phase 2: checked already)."""
        params_all = tuple(group["params"])
        plan = _C.Plan(self._fo_kind, params_all, key, self.state)
        plan.group = group
        sr = bool(group.get("stochastic_rounding"))
        for j, p in enumerate(params_all):
            g = p.grad
            if g is None:
                plan.mark(j, -2)
            elif not native_param(p) or g.is_sparse:
                plan.mark(j, -1)
            else:
                s0, s1, s2, step, first, ref, master, aux = self._fo_init_state(group, p)
                plan.add(j, p, s0, s1, s2, step, first, ref, master, aux, sr)
        plan.finalize()
        return plan

    def _fo_refresh(self, plan, group):
        """Per-step refresh of a valid plan: master weights re-seeded where the
        user changed the param since the last step, grads copied into the
        param's layout where their strides differ, hyper-parameters read from
        the group."""
        if group.get("master_weights"):  # each param's _version as our last step left it
            seen = self.__dict__.get("_fo_pver", {})
            state = self.state
            for p in plan.params:
                rec = seen.get(id(p))
                if rec is not None and p._version != rec[1]:
                    reseed_master(p, state[p]["master_param"])
        for i in plan.relayout:
            p = plan.params[i]
            buf = plan.scratch[i]
            if buf is None:
                buf = plan.scratch[i] = torch.empty_like(p, memory_format=torch.preserve_format)
            buf.copy_(p.grad)
            plan.set_grad(i, buf)
        hp = self._fo_hparams(group)
        l1 = group.get("l1_weight_decay") or 0.0
        mgn = group.get("max_grad_norm") or 0.0
        plan.set_hparams(l1=l1, max_grad_norm=mgn, **hp)
        if group.get("stochastic_rounding"):
            seed = self.__dict__.get("_fo_seed")
            if seed is None:
                seed = self._fo_seed = torch.empty((), dtype=torch.int64)
            seed.random_()  # torch's generator: reproducible under torch.manual_seed
            plan.set_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)

    def _fo_amp(self):
        """GradScaler's (grad_scale, found_inf) as CPU float32 scalars, or None
        (a copy to the host when they live on a device)."""
        return _Amp(self).host()

    @_use_grad_for_differentiable
    def step(self, closure=None):
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): A closure that reevaluates the model
                and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        plans = self.__dict__.get("_fo_plans")
        if plans is None:
            plans = self._fo_plans = {}
        groups = self.param_groups
        state = self.state
        todo = []
        # 1. check every group; nothing is created or changed until all pass
        for group in groups:
            if not self._fo_native_group(group):
                self._fo_check_group(group)
                todo.append([group, None, [p for p in group["params"] if p.grad is not None]])
                continue
            key = self._fo_key(group)
            plan = plans.get(id(group))
            if (
                plan is not None
                and plan.group is group
                and plan.key == key
                and plan.load_grads(group["params"], state)
            ):
                if plan.fallback:  # torch's path checks late: check its params now
                    self._fo_check_params(plan.fallback)
                todo.append([group, plan, plan.fallback])
            else:
                self._fo_check_group(group)
                todo.append([group, key, None])
        amp = _Amp(self)
        if amp.active and any(_reads_amp_on_host(item) for item in todo) and amp.skip():
            return loss  # AMP: inf/NaN grads, the step is skipped (GradScaler backs off)
        # (a step whose params all take the CUDA kernels leaves found_inf and
        # grad_scale on the device: the kernels read them there, no host sync)
        # 2. build what must be built (lazy state), then run every group
        for item in todo:
            group, plan, fallback = item
            if fallback is None:  # plan holds the key of a plan to build (a tuple)
                plan = self._fo_build(group, plan)
                if not plan.load_grads(group["params"], state):  # pragma: no cover
                    raise RuntimeError("fusedoptim: a freshly built plan does not match its group")
                plans[id(group)] = plan
                item[1], item[2] = plan, plan.fallback
        if len(plans) > len(groups):
            live = {id(g) for g in groups}
            for k in [k for k in plans if k not in live]:
                del plans[k]
        for group, plan, fallback in todo:
            coef = None
            if fallback and group.get("max_grad_norm"):
                coef = self._fo_clip_coef(group, amp)
            if plan is not None and plan.n:  # (a group of CUDA params only reads no host scalars here)
                self._fo_refresh(plan, group)
                if coef is not None:  # mixed group: the norm spans torch's params too
                    plan.set_clip_coef(coef)
                grad_scale = amp.host()[0]
                plan.set_amp(grad_scale, None)
                try:
                    plan.run()
                finally:
                    torch._C._increment_version(plan.params)
                if grad_scale is not None:
                    # grads of other strides were unscaled in their scratch
                    # copy: store them back unscaled, as the others (torch's
                    # fused kernels unscale p.grad in place)
                    for i in plan.relayout:
                        plan.params[i].grad.copy_(plan.scratch[i])
                if group.get("master_weights"):
                    seen = self.__dict__.setdefault("_fo_pver", {})
                    for p in plan.params:
                        seen[id(p)] = (p, p._version, p.data_ptr())
            elif plan is not None:
                plan.release_grads()
            if fallback:
                self._fo_other_devices(group, fallback, amp, coef)
        return loss

    def _fo_other_devices(self, group, params, amp=None, coef=None):
        """The params a group's CPU plan does not serve (it serves native CPU
        params, `native_param`), each to its backend: CUDA params to the CUDA
        kernels' plan (fusedoptim._cuda.step_cuda, which returns what it does
        not serve: no extension, another device, a tensor subclass...; it reads
        GradScaler's scalars on the device), the rest to torch's own
        implementation (_fo_torch_path), which needs them on the host."""
        params, group = _cuda.step_cuda(self, group, params, coef)
        if not params:
            return
        grad_scale = None
        if amp is not None and amp.active:
            if amp.skip():
                return
            grad_scale = amp.host()[0]
        self._fo_torch_path(group, params, grad_scale, coef)

    def _fo_clip_coef(self, group, amp) -> float:
        """Clip coefficient of the group's whole grad norm (params the kernels
        serve and torch's alike), as torch's clip_grad_norm_ computes it."""
        grads = [p.grad for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, 2.0)
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        grad_scale = amp.host()[0] if amp is not None else None
        if grad_scale is not None:
            norm /= float(grad_scale)
        coef = group["max_grad_norm"] / (norm + 1e-6)
        return coef if (coef < 1.0 or coef != coef) else 1.0

    def _fo_torch_path(self, group, params, grad_scale=None, coef=None):
        """torch's implementation for params no fusedoptim kernel serves, with
        fusedoptim's options applied around it. torch 2.13's fused (and
        foreach) CPU kernels mis-update non-contiguous params and grads whose
        strides differ from the param's, so those CPU params take its
        for-loop path whatever the group's flags say."""
        name = type(self).__name__
        for opt in ("master_weights", "stochastic_rounding"):
            if group.get(opt):
                raise NotImplementedError(
                    f"{name}: {opt}=True is implemented by the CPU kernels only; a param of type "
                    f"{type(params[0]).__name__} on {params[0].device} ({params[0].dtype}) takes torch's "
                    f"implementation, which has no such option"
                )
        if group.get("state_dtype") not in (None,) and any(
            group["state_dtype"] != p.dtype for p in params
        ):
            raise NotImplementedError(
                f"{name}: state_dtype={group['state_dtype']} is implemented by the CPU kernels only; "
                f"params on {params[0].device} / of type {type(params[0]).__name__} take torch's "
                f"implementation, which keeps state in the param's dtype"
            )
        if grad_scale is not None:
            for p in params:
                p.grad.div_(grad_scale.to(p.grad.device))
        saved = []
        if coef is not None and coef != 1.0:
            for p in params:
                saved.append((p, p.grad))
                p.grad = p.grad * coef
        sub = dict(group)
        wd = group["weight_decay"]
        if wd != 0 and group.get("decoupled_weight_decay") and not self._fo_torch_decoupled:
            lr = float(group["lr"])
            torch._foreach_mul_(params, 1.0 - lr * wd)
            sub["weight_decay"] = 0.0
        try:
            odd = [
                p for p in params
                if p.device.type == "cpu"
                and not p.grad.is_sparse
                and not (p.is_contiguous() and p.grad.is_contiguous())
            ]
            if odd:
                rest = [p for p in params if all(p is not q for q in odd)]
                self._fo_torch_step(dict(sub, foreach=False, fused=False), odd)
                if rest:
                    self._fo_torch_step(sub, rest)
            else:
                self._fo_torch_step(sub, params)
        finally:
            for p, g in saved:
                p.grad = g
        l1 = group.get("l1_weight_decay") or 0.0
        if l1:
            thr = float(group["lr"]) * l1
            for p in params:
                p.copy_(torch.sign(p) * torch.clamp(p.abs() - thr, min=0.0))

    def _fo_torch_step(self, group, params):
        """torch's own step over `params` only: the base class's step, run
        on a one-group view of this optimizer (same state dict)."""
        base = self._fo_torch_base()
        fn = inspect.unwrap(base.step)
        saved_groups = self.param_groups
        saved_amp = {k: self.__dict__.pop(k) for k in ("grad_scale", "found_inf") if k in self.__dict__}
        self.param_groups = [dict(group, params=list(params))]
        try:
            fn(self)
        finally:
            self.param_groups = saved_groups
            self.__dict__.update(saved_amp)

    @classmethod
    def _fo_torch_base(cls):
        for base in cls.__mro__[1:]:
            if issubclass(base, torch.optim.Optimizer) and not issubclass(base, FusedOptimizerMixin):
                return base
        raise TypeError(f"{cls.__name__} has no torch optimizer base")  # pragma: no cover

    def load_state_dict(self, state_dict) -> None:
        """Load optimizer state. Everything is validated first (group count and
        sizes, every per-param state tensor's shape and dtype, required keys,
        scalar `step`): on error the optimizer is unchanged. Load pre-hooks
        run first, as in torch, so a hook may adapt the checkpoint. Unlike
        torch (its issue 43706), floating-point state keeps the dtype it was
        saved with (fp32 state of a bf16 param stays fp32); torch checkpoints,
        whose state has the param's dtype, load as in torch."""
        state_dict = dict(state_dict) if isinstance(state_dict, dict) else state_dict
        hooks = self._optimizer_load_state_dict_pre_hooks
        for hook in list(hooks.values()):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        check_state_dict(self, state_dict, self._fo_state_keys)
        self._optimizer_load_state_dict_pre_hooks = type(hooks)()  # ran above
        try:
            super().load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks = hooks
        self.__dict__.pop("_fo_plans", None)
        # torch cast every floating state tensor to its param's dtype: give a
        # low-precision param its saved float32 state back
        saved = state_dict["state"]
        scalars = {k.name for k in self._fo_decl.keys if k.slot is None}
        for group, sgroup in zip(self.param_groups, state_dict["param_groups"]):
            for p, pid in zip(group["params"], sgroup["params"]):
                if p.dtype not in _LOW or pid not in saved:
                    continue
                for k, v in saved[pid].items():
                    if torch.is_tensor(v) and v.dtype == torch.float32 and k not in scalars:
                        self.state[p][k] = v.to(device=p.device)


def init_step(group, p):
    """torch's own lazy `step` state (see torch.optim.adam.Adam._init_group)."""
    from torch.optim.optimizer import _get_scalar_dtype

    if group.get("capturable") or group.get("fused"):
        return torch.zeros((), dtype=_get_scalar_dtype(is_fused=group.get("fused")), device=p.device)
    return torch.tensor(0.0, dtype=_get_scalar_dtype())


def native_step(state, key="step"):
    """A scalar counter as a CPU float32/float64 0-d tensor the kernel can update."""
    s = state[key]
    if not torch.is_tensor(s) or s.device.type != "cpu" or s.dtype not in (torch.float32, torch.float64) or s.numel() != 1:
        s = state[key] = torch.tensor(float(s), dtype=torch.float32)
    elif s.dim() != 0 or not s.is_contiguous():
        s = state[key] = s.reshape(()).clone()
    return s


def _reads_amp_on_host(item) -> bool:
    """A step item [group, plan or key, fallback params] runs something that
    reads GradScaler's scalars on the host: the CPU kernels, or torch's path
    for params the CUDA kernels do not take."""
    group, plan, fallback = item
    dev = _cuda._DEVICE_TYPE
    if plan is not None and not isinstance(plan, tuple):
        return plan.n > 0 or any(p.device.type != dev for p in fallback)
    return any(p.grad is not None and p.device.type != dev for p in group["params"])


def reseed_master(p: torch.Tensor, master: torch.Tensor) -> None:
    """The fp32 master follows the user's changes to its low-precision param:
    every element whose value differs from the master's round-to-nearest
    image (`p.data = ...`, `load_state_dict`, `mul_(mask)`, an EMA swap) is
    re-seeded from the param (master = float(p)); elements the user left
    alone keep the master's extra precision. NaNs compare unequal: a NaN
    param re-seeds its element."""
    with torch.no_grad():
        pd = p.detach()
        changed = master.to(pd.dtype) != pd
        if bool(changed.any()):
            torch.where(changed, pd.to(torch.float32), master, out=master)


class _Amp:
    """GradScaler's grad_scale / found_inf for one step, copied to the host
    only when something here reads them there (the CPU kernels, torch's
    path); the CUDA kernels read the device tensors themselves."""

    __slots__ = ("gs", "fi", "active", "_host")

    def __init__(self, opt):
        self.gs = getattr(opt, "grad_scale", None)
        self.fi = getattr(opt, "found_inf", None)
        self.active = self.gs is not None or self.fi is not None
        self._host = None

    def host(self):
        """(grad_scale, found_inf) as contiguous CPU float32 0-d tensors, or None."""
        if self._host is None:
            out = []
            for t in (self.gs, self.fi):
                if t is not None:
                    if not torch.is_tensor(t):
                        t = torch.tensor(float(t), dtype=torch.float32)
                    if t.device.type != "cpu" or t.dtype != torch.float32 or t.numel() != 1:
                        t = t.detach().reshape(()).to("cpu", torch.float32)
                    t = t.reshape(()).contiguous()
                out.append(t)
            self._host = tuple(out)
        return self._host

    def skip(self) -> bool:
        fi = self.host()[1]
        return fi is not None and float(fi) != 0.0
